"""Reference outputs of the vision-language model `mimic align` makes, from transformers.

Usage: .venv-ref/bin/python scripts/reference_made_vlm.py MODEL_DIR EASY_VQA_DATA OUT.safetensors

MODEL_DIR is the HF folder `mimic align` writes (`model/`: Idefics3ForConditionalGeneration
layout). transformers loads it with its own classes (Idefics3ForConditionalGeneration,
AutoTokenizer, Idefics3ImageProcessor) and runs three prompts on easy-VQA test images, the
start token `<|endoftext|>` first, as mimic prompts: p0, two MimIC VQA shots (the first with
its answer); p1, one caption shot, open; p2, three caption shots (two captioned). OUT gets, per
prompt pK, as float32 unless named:
  pK.input_ids         int64 [1, S]   the prompt's ids (the tokenizer's, from the expanded text)
  pK.pixel_values      [n, 3, 64, 64] transformers' preprocessing of the prompt's n images
  pK.image_features    [n, 16, 576]   the connector's output (the image tokens)
  pK.logits_last       [4, vocab]     the logits of the prompt's last four positions
  pK.greedy            int64 [8]      eight greedy tokens after the prompt
and the metadata pK.prompt (unexpanded) and pK.images (paths under EASY_VQA_DATA).
tests/made_vlm.rs compares mimic against it (tolerance 1e-4 relative).
"""
import sys

import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoTokenizer, Idefics3ForConditionalGeneration, Idefics3ImageProcessor

VQA = "Image:<image><end_of_outterance>\nQuestion: {q}<end_of_outterance>\nAnswer:"
CAPTION = "Image:<image><end_of_outterance>\nCaption:"
PROMPTS = [
    (VQA.format(q="what color is the shape?") + " red<end_of_outterance>\n"
     + VQA.format(q="what shape is in the image?"),
     ["test/images/0.png", "test/images/1.png"]),
    (CAPTION, ["test/images/2.png"]),
    (CAPTION + " a red circle<end_of_outterance>\n" + CAPTION + " a blue triangle<end_of_outterance>\n"
     + CAPTION, ["test/images/3.png", "test/images/4.png", "test/images/5.png"]),
]


def main():
    model_dir, data, out = sys.argv[1:4]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    proc = Idefics3ImageProcessor.from_pretrained(model_dir)
    model = Idefics3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    cfg = model.config
    per_image = (cfg.vision_config.image_size // cfg.vision_config.patch_size) ** 2 // cfg.scale_factor ** 2
    run = "<fake_token_around_image><global-img>" + "<image>" * per_image + "<fake_token_around_image>"
    tensors, meta = {}, {"format": "pt"}
    for k, (prompt, paths) in enumerate(PROMPTS):
        text = prompt.replace("<image>", run)
        ids = [tok.convert_tokens_to_ids("<|endoftext|>")] + tok(text, add_special_tokens=False).input_ids
        input_ids = torch.tensor([ids])
        images = [Image.open(f"{data}/{p}") for p in paths]
        processed = proc(images=[images], return_tensors="pt")
        pixel_values = processed["pixel_values"]
        features = {}
        hook = model.model.connector.register_forward_hook(lambda m, i, o: features.setdefault("x", o))
        with torch.no_grad():
            logits = model(input_ids=input_ids, pixel_values=pixel_values,
                           pixel_attention_mask=processed.get("pixel_attention_mask")).logits
            hook.remove()
            generated = model.generate(input_ids=input_ids, pixel_values=pixel_values,
                                       pixel_attention_mask=processed.get("pixel_attention_mask"),
                                       max_new_tokens=8, do_sample=False, eos_token_id=None,
                                       pad_token_id=tok.pad_token_id)
        greedy = generated[0, input_ids.shape[1]:]
        p = f"p{k}."
        tensors[p + "input_ids"] = input_ids.to(torch.int64).contiguous()
        tensors[p + "pixel_values"] = pixel_values.reshape(
            -1, 3, pixel_values.shape[-2], pixel_values.shape[-1]).float().contiguous()
        tensors[p + "image_features"] = features["x"].float().contiguous()
        tensors[p + "logits_last"] = logits[0, -4:].float().contiguous()
        tensors[p + "greedy"] = greedy.to(torch.int64).contiguous()
        meta[p + "prompt"] = prompt
        meta[p + "images"] = ",".join(paths)
        print(f"p{k}: {input_ids.shape[1]} prompt tokens, {len(paths)} images, greedy {tok.decode(greedy)!r}")
    save_file(tensors, out, metadata=meta)


if __name__ == "__main__":
    main()
