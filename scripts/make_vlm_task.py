#!/usr/bin/env python3
"""Write a tiny image task for the vision-language fixtures: tests/fixtures/vlm/shapes/.

Twelve 24x24 PNGs, a filled circle, square or triangle in one of four colours on a grey
background, and shapes.json: one pair per image, "<image>What colour is the shape?" answered
by the colour. It exercises training with image demonstrations on the tiny random models
(tests/vlm_pipeline.rs); the models are random, so it proves plumbing, not accuracy.

Deterministic; regenerate with:
    .venv-ref/bin/python scripts/make_vlm_task.py
"""
import json
import os

from PIL import Image, ImageDraw

SIZE = 24
COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220),
           "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")


def draw(shape, rgb):
    im = Image.new("RGB", (SIZE, SIZE), (128, 128, 128))
    d = ImageDraw.Draw(im)
    box = (4, 4, SIZE - 5, SIZE - 5)
    if shape == "circle":
        d.ellipse(box, fill=rgb)
    elif shape == "square":
        d.rectangle(box, fill=rgb)
    else:
        d.polygon([(SIZE // 2, 3), (3, SIZE - 4), (SIZE - 4, SIZE - 4)], fill=rgb)
    return im


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm", "shapes")
    os.makedirs(root, exist_ok=True)
    pairs = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            name = f"{colour}-{shape}.png"
            draw(shape, rgb).save(os.path.join(root, name), optimize=True)
            pairs.append({"input": "<image>What colour is the shape?", "output": colour,
                          "images": [name]})
    with open(os.path.join(root, "shapes.json"), "w") as f:
        json.dump(pairs, f, indent=1)
        f.write("\n")
    print(f"wrote {len(pairs)} pairs to {os.path.normpath(root)}")


if __name__ == "__main__":
    main()
