#!/usr/bin/env python3
"""Build tiny random vision-language models and their Hugging Face reference outputs.

For every model in MODELS this writes tests/fixtures/vlm/<name>/ with what a user's Hugging Face
folder holds:
  config.json               what save_pretrained writes, plus the classic `rope_theta` /
                            `rope_scaling` keys inside text_config (transformers 5 only writes
                            `rope_parameters`)
  model.safetensors         float32 weights, with the tensor names save_pretrained writes
  tokenizer.json            a small byte-level BPE (trained here on CORPUS) plus the model's
                            special tokens as added special tokens
  preprocessor_config.json  the model's image processor with sizes fitting the 32 px towers
  reference.safetensors     inputs (int64) and reference outputs (float32), see below

  idefics2  Idefics2ForConditionalGeneration: SigLIP-style tower (8x8 patches of 4 px),
            SwiGLU modality projection, perceiver resampler (4 latents), Mistral decoder.
  idefics3  Idefics3ForConditionalGeneration: the same tower, pixel shuffle (scale 2, 16
            tokens an image) and a linear projection, Llama decoder.
  llava     LlavaForConditionalGeneration: SigLIP vision model (64 tokens an image, feature
            layer -1 = last encoder layer before post_layernorm, strategy "full"), GELU
            projector, Qwen2 decoder (q/k/v biases); image tokens pre-expanded.

The reference is one batch of two rows. Row 0 is text, image A, text, image B, text; row 1 is
text, image C, text, shorter and left-padded (attention_mask 0) to row 0's length. For
idefics2/3 image B has 20x28 real pixels zero-padded to 32x32 (pixel_attention_mask marks the
real ones) and row 1's second image slot is all 0.0 (a padding image, dropped by the model);
llava takes three fixed-size images. input_ids are built by hand with each processor's image
token expansion and checked against the tokenizer and the transformers processor. The forward
gets position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0). Keys:
  input_ids, attention_mask, position_ids, pixel_values[, pixel_attention_mask]
  vision.position_ids, vision.patch_attention_mask   [n_real_images, n_patches] (idefics2/3)
  vision.hidden_states.{0..L}   embeddings, then each encoder layer's output (real images)
  vision.last_hidden_state      after post_layernorm (idefics2/3)
  vision.features               the selected hidden state fed to the projector (llava)
  connector.modality_projection, connector.perceiver.layers.{i}   (idefics2)
  connector.pixel_shuffle       (idefics3)
  connector.output              the image features scattered into the embeddings
                                [n_real_images, tokens_per_image, text_hidden]
  decoder.inputs_embeds, decoder.hidden_states.{0..L-1}, logits
  generate.row0                 the new token ids of greedy generate(max_new_tokens=8) on row 0
                                alone (batch of one, no padding)
Outputs at padded positions (attention_mask 0) are whatever transformers computes there; only
real positions are checked against an unpadded run. The metadata key "prompts" holds the two
prompts (a JSON list) as the user writes them, one <image> per image.

idefics2 also gets reference_odd_size.safetensors: ODD_PROMPT alone (batch 1, no padding,
position_ids = arange) with one ODD_SIZE = 30x27 px image, not a multiple of the 4 px patch
(pixel_attention_mask all ones); transformers drops the partial last patch row and column, 7x6 =
42 patches. Keys: input_ids, attention_mask, position_ids, pixel_values [1, 1, 3, 30, 27],
pixel_attention_mask, vision.patch_attention_mask and vision.position_ids [1, 42],
vision.last_hidden_state [1, 42, 32], connector.output [1, 4, 64], logits; "prompts" as above.

Everything is offline and deterministic (fixed seeds, eager attention, float32, CPU).
Regenerate with:
    .venv-ref/bin/python scripts/make_vlm_fixtures.py
"""

import argparse
import contextlib
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import add_classic_rope_keys  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
IMAGE_SIZE = 32
PATCH = 4
SIDE = IMAGE_SIZE // PATCH  # 8x8 = 64 patches
B_REAL = (20, 28)  # image B's real pixels (height, width): 5x7 patches
ODD_SIZE = (30, 27)  # idefics2's odd-size image (height, width): 7x6 whole patches
ODD_PROMPT = "User: What is in<image> here?<end_of_utterance>\nAssistant:"
VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=IMAGE_SIZE,
    patch_size=PATCH,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
)
TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=256,
    tie_word_embeddings=False,
)
PERCEIVER = dict(
    hidden_size=TEXT["hidden_size"],
    rms_norm_eps=1e-6,
    resampler_n_latents=4,
    resampler_depth=2,
    resampler_n_heads=4,
    resampler_head_dim=8,
    num_key_value_heads=2,
    hidden_act="silu",
)
SCALE_FACTOR = 2
MAX_NEW_TOKENS = 8

# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
BPE_SIZE = 320  # byte alphabet (256) + merges, not counting special tokens
CORPUS = [
    "A photo of a cat sitting on a red chair next to the window.",
    "A small dog is running on the green grass in the park.",
    "Two people are walking along the beach at sunset.",
    "What is in the image? There is a cat and a dog in the image.",
    "What color is the car? The car is red.",
    "How many people are in the picture? There are two people in the picture.",
    "Describe the image briefly. A man is riding a bike on the street.",
    "Question: what is the animal doing? Answer: the animal is sleeping.",
    "Question: where is the boat? Answer: the boat is on the water.",
    "The first image shows a house and the second image shows a tree.",
    "Compare the two images and answer the question with a short answer.",
    "User: what do you see in this picture? Assistant: I see a bird on a branch.",
    "A plate of food with rice, beans and a piece of bread on the table.",
    "The train is waiting at the station while the people get on board.",
    "A woman is holding an umbrella in the rain on a busy street.",
    "Is there a person in the image? Yes, there is a person standing near the door.",
    "The sky is blue and the clouds are white over the mountains.",
    "A child is playing with a ball in the garden of the house.",
]

# Model name -> seed offset. llava's offset picks a seed whose greedy continuation is not one
# token repeated (tiny random decoders often fall into such a loop; `greedy` asserts variety).
MODELS = {"idefics2": 0, "idefics3": 100, "llava": 205}
MIN_DISTINCT_GENERATED = 4


def build_tokenizer(leading, trailing, bos=None):
    """Byte-level BPE trained on CORPUS. `leading` special tokens take the first ids (trained
    with the vocabulary), `trailing` ones follow the BPE vocabulary; a `bos` is prepended by the
    post-processor as the models' tokenizers do."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = [AddedToken(t, special=True, normalized=False) for t in leading]
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_SIZE + len(leading),
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=special,
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    assert tok.get_vocab_size() == BPE_SIZE + len(leading), tok.get_vocab_size()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in trailing])
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
TOKENIZERS = {
    # Mistral's <unk> <s> </s> first, then what Idefics2Processor adds.
    "idefics2": dict(leading=["<unk>", "<s>", "</s>"],
                     trailing=["<fake_token_around_image>", "<image>", "<end_of_utterance>"],
                     bos="<s>", eos="</s>", pad="<unk>", unk="<unk>"),
    # Llama 3's BOS/EOS after the vocabulary, a pad, then Idefics3's image tokens.
    "idefics3": dict(leading=[],
                     trailing=["<|begin_of_text|>", "<|end_of_text|>", "<pad>",
                               "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                               "<global-img>", *ROW_COL],
                     bos="<|begin_of_text|>", eos="<|end_of_text|>", pad="<pad>", unk=None),
    # Qwen2's order: <|endoftext|> <|im_start|> <|im_end|>, then <image>; no BOS is added, but
    # the config names <|endoftext|> as bos_token_id, as Qwen2 checkpoints do.
    "llava": dict(leading=[],
                  trailing=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"],
                  bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None,
                  config_bos="<|endoftext|>"),
}

# Prompts as the user writes them (one <image> per image) and how many images each row has.
PROMPTS = {
    "idefics2": ["User: What do<image> and<image> show together?<end_of_utterance>\nAssistant:",
                 "User: Describe<image> briefly.<end_of_utterance>\nAssistant:"],
    "idefics3": ["User: What do<image> and<image> show together?<end_of_utterance>\nAssistant:",
                 "User: Describe<image> briefly.<end_of_utterance>\nAssistant:"],
    "llava": ["<|im_start|>user\nCompare<image> with<image> and answer.<|im_end|>\n<|im_start|>assistant\n",
              "<|im_start|>user\nWhat is<image> here?<|im_end|>\n<|im_start|>assistant\n"],
}


def image_expansion(name):
    """The processor's replacement for one <image> (no splitting)."""
    if name == "idefics2":
        n = PERCEIVER["resampler_n_latents"]
        return "<fake_token_around_image>" + "<image>" * n + "<fake_token_around_image>"
    if name == "idefics3":
        n = SIDE * SIDE // SCALE_FACTOR**2
        return "<fake_token_around_image><global-img>" + "<image>" * n + "<fake_token_around_image>"
    return "<image>" * SIDE * SIDE  # llava, strategy "full", no CLS


def hand_ids(name, tok, prompt):
    """input_ids assembled piece by piece: BOS, each text piece encoded alone, each image's
    expansion as special-token ids. Idefics2's processor also collapses the two fake tokens of
    adjacent images into one and puts a space between a closing fake token and a word glued to
    it; the prompts here have neither case, the code follows the processor anyway."""
    spec = TOKENIZERS[name]
    fake = tok.token_to_id("<fake_token_around_image>")
    ids = [] if spec["bos"] is None else [tok.token_to_id(spec["bos"])]
    pieces = prompt.split("<image>")
    for k, piece in enumerate(pieces):
        if name == "idefics2" and k > 0 and piece and not piece[0].isspace() and piece[0] != "<":
            piece = " " + piece
        ids += encode_text(tok, piece)
        if k + 1 < len(pieces):
            expansion = [tok.token_to_id(t) for t in split_specials(image_expansion(name), tok)]
            if name == "idefics2" and ids and ids[-1] == fake:
                expansion = expansion[1:]
            ids += expansion
    return ids


def split_specials(s, tok):
    """Split a string made only of added tokens into them."""
    out = []
    added = sorted((t.content for t in tok.get_added_tokens_decoder().values()), key=len, reverse=True)
    while s:
        t = next(t for t in added if s.startswith(t))
        out.append(t)
        s = s[len(t):]
    return out


def encode_text(tok, text):
    """Encode text that may hold special tokens (e.g. <end_of_utterance>), without BOS."""
    return tok.encode(text, add_special_tokens=False).ids


def hf_processor(name, tok, image_processor):
    """The transformers processor around the tokenizer, to check the hand-built ids."""
    spec = TOKENIZERS[name]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.to_str()), bos_token=spec["bos"],
        eos_token=spec["eos"], pad_token=spec["pad"], unk_token=spec["unk"], padding_side="left")
    if name == "idefics2":
        return Idefics2Processor(image_processor, fast, image_seq_len=PERCEIVER["resampler_n_latents"])
    if name == "idefics3":
        return Idefics3Processor(image_processor, fast, image_seq_len=SIDE * SIDE // SCALE_FACTOR**2)
    return LlavaProcessor(image_processor, fast, patch_size=PATCH,
                          vision_feature_select_strategy="full", num_additional_image_tokens=0)


def image_processor(name):
    if name == "idefics2":
        return Idefics2ImageProcessorPil(do_image_splitting=False,
                                         size={"shortest_edge": IMAGE_SIZE // 2, "longest_edge": IMAGE_SIZE})
    if name == "idefics3":
        return Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                         max_image_size={"longest_edge": IMAGE_SIZE})
    return SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
def close(a, b, what, atol=1e-5):
    """make_vision_fixtures.close, with atol = 0 meaning bit-identical."""
    err = (a - b).abs().max().item()
    assert err <= atol, f"{what}: max abs diff {err}"
    return err


def round_up(n, k=16):
    """Strictly above the tokenizer's size, as real checkpoints' padded vocabularies are."""
    return (n // k + 1) * k


def make_config(name, tok):
    spec = TOKENIZERS[name]
    names = dict(bos=spec.get("config_bos", spec["bos"]), eos=spec["eos"], pad=spec["pad"])
    ids = {k: tok.token_to_id(v) for k, v in names.items()}
    text = dict(TEXT, vocab_size=round_up(tok.get_vocab_size()), bos_token_id=ids["bos"],
                eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    image_id = tok.token_to_id("<image>")
    if name == "idefics2":
        config = Idefics2Config(
            vision_config=dict(VISION), perceiver_config=dict(PERCEIVER),
            text_config=dict(text, model_type="mistral", sliding_window=None),
            image_token_id=image_id, tie_word_embeddings=False)
    elif name == "idefics3":
        config = Idefics3Config(
            vision_config=dict(VISION), text_config=dict(text, model_type="llama"),
            image_token_id=image_id, scale_factor=SCALE_FACTOR, tie_word_embeddings=False,
            pad_token_id=ids["pad"])
    else:
        config = LlavaConfig(
            vision_config=dict(VISION, model_type="siglip_vision_model", vision_use_head=False),
            text_config=dict(text, model_type="qwen2", use_sliding_window=False, sliding_window=None),
            image_token_index=image_id, projector_hidden_act="gelu", vision_feature_layer=-1,
            vision_feature_select_strategy="full", image_seq_length=SIDE * SIDE,
            tie_word_embeddings=False)
    config._attn_implementation = "eager"
    config.dtype = torch.float32
    return config


CLASSES = {"idefics2": Idefics2ForConditionalGeneration,
           "idefics3": Idefics3ForConditionalGeneration,
           "llava": LlavaForConditionalGeneration}


def parts(model, name):
    """(vision transformer, its embeddings, encoder layers, text model, connector)."""
    m = model.model
    if name == "llava":
        # transformers 5.24's SiglipVisionModel has no inner .vision_model (4.x had one).
        vt = getattr(m.vision_tower, "vision_model", m.vision_tower)
        return vt, vt.embeddings, vt.encoder.layers, m.language_model, m.multi_modal_projector
    vt = m.vision_model
    return vt, vt.embeddings, vt.encoder.layers, m.text_model, m.connector


def randomize(model, seed):
    """Re-initialise with O(1) activations and non-trivial norms and biases (as
    make_vision_fixtures.randomize and make_fixtures.randomize do)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "position_embedding" in name or name.endswith("latents"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g) if "position" in name
                        else torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(2.0 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif p.dim() in (2, 4):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            else:
                raise ValueError(f"unexpected parameter {name}")


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def pixels(seed, n, h=IMAGE_SIZE, w=IMAGE_SIZE):
    """Normalised pixel values in [-1, 1], as mean = std = 0.5 processors give."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


def make_inputs(name, tok, seed):
    rows = [hand_ids(name, tok, p) for p in PROMPTS[name]]
    S = max(len(r) for r in rows)
    assert len(rows[0]) == S and len(rows[1]) < S
    pad = tok.token_to_id(TOKENIZERS[name]["pad"])
    input_ids = torch.full((2, S), pad, dtype=torch.int64)
    attention_mask = torch.zeros(2, S, dtype=torch.int64)
    for b, r in enumerate(rows):
        input_ids[b, S - len(r):] = torch.tensor(r)
        attention_mask[b, S - len(r):] = 1
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    imgs = pixels(seed, 3)  # A, B, C
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    if name == "llava":
        inputs["pixel_values"] = imgs
        return inputs, rows
    h, w = B_REAL
    imgs[1, :, h:, :] = 0.0
    imgs[1, :, :, w:] = 0.0
    pv = torch.zeros(2, 2, 3, IMAGE_SIZE, IMAGE_SIZE)
    pv[0, 0], pv[0, 1], pv[1, 0] = imgs[0], imgs[1], imgs[2]
    pam = torch.zeros(2, 2, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.int64)
    pam[0, 0] = 1
    pam[0, 1, :h, :w] = 1
    pam[1, 0] = 1
    inputs["pixel_values"] = pv
    inputs["pixel_attention_mask"] = pam
    return inputs, rows


def row_inputs(name, inputs, rows, b):
    """Row b alone: unpadded, with only its images, default (arange) positions."""
    n = len(rows[b])
    out = dict(input_ids=inputs["input_ids"][b:b + 1, -n:],
               attention_mask=inputs["attention_mask"][b:b + 1, -n:])
    if name == "llava":
        out["pixel_values"] = inputs["pixel_values"][[0, 1]] if b == 0 else inputs["pixel_values"][2:]
    else:
        k = 2 if b == 0 else 1
        out["pixel_values"] = inputs["pixel_values"][b:b + 1, :k]
        out["pixel_attention_mask"] = inputs["pixel_attention_mask"][b:b + 1, :k]
    return out


def check_ids_against_processor(name, tok, rows):
    """The hand-built ids equal the whole expanded prompt through the tokenizer and the
    transformers processor's output (same padding side and pad id)."""
    spec = TOKENIZERS[name]
    for prompt, ids in zip(PROMPTS[name], rows):
        expanded = prompt.replace("<image>", image_expansion(name))
        assert tok.encode(expanded).ids == ids, (name, prompt)
    proc = hf_processor(name, tok, image_processor(name))
    size_b = (B_REAL[1], B_REAL[0]) if name != "llava" else (IMAGE_SIZE, IMAGE_SIZE)
    pil = [Image.fromarray(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 128, np.uint8)),
           Image.fromarray(np.full((size_b[1], size_b[0], 3), 64, np.uint8)),
           Image.fromarray(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 200, np.uint8))]
    images = [pil[:2], pil[2:]] if name != "llava" else pil
    enc = proc(text=PROMPTS[name], images=images, padding=True, return_tensors="pt")
    S = len(rows[0])
    pad = tok.token_to_id(spec["pad"])
    want = torch.tensor([[pad] * (S - len(r)) + r for r in rows])
    assert torch.equal(enc["input_ids"], want), (name, enc["input_ids"], want)
    assert torch.equal(enc["attention_mask"], (torch.arange(S) >= (S - torch.tensor([len(r) for r in rows]))[:, None]).long())
    if name != "llava":
        # The processor's padding image slot is all zero, pixels and mask alike.
        assert enc["pixel_values"].shape[:2] == (2, 2)
        assert (enc["pixel_values"][1, 1] == 0).all() and (enc["pixel_attention_mask"][1, 1] == 0).all()
    return proc


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hooks(model, name):
    out = {}
    vt, emb, vlayers, text, conn = parts(model, name)
    handles = []

    def fwd(key):
        return lambda _m, _i, o: out.__setitem__(key, (o[0] if isinstance(o, tuple) else o).detach().clone())

    handles.append(emb.register_forward_hook(fwd("vision.hidden_states.0")))
    for i, layer in enumerate(vlayers):
        handles.append(layer.register_forward_hook(fwd(f"vision.hidden_states.{i + 1}")))
    if name != "llava":
        handles.append(vt.register_forward_hook(
            lambda _m, _i, o: out.__setitem__("vision.last_hidden_state", o.last_hidden_state.detach().clone())))
        handles.append(vt.register_forward_pre_hook(
            lambda _m, a, kw: out.__setitem__(
                "vision.patch_attention_mask",
                kw["patch_attention_mask"].reshape(kw["patch_attention_mask"].shape[0], -1).to(torch.int64)),
            with_kwargs=True))
        handles.append(emb.position_embedding.register_forward_pre_hook(
            lambda _m, inp: out.__setitem__("vision.position_ids", inp[0].detach().clone())))
    if name == "idefics2":
        handles.append(conn.modality_projection.register_forward_hook(fwd("connector.modality_projection")))
        for i, layer in enumerate(conn.perceiver_resampler.layers):
            handles.append(layer.register_forward_hook(fwd(f"connector.perceiver.layers.{i}")))
        handles.append(conn.register_forward_hook(fwd("connector.output")))
    elif name == "idefics3":
        handles.append(conn.modality_projection.register_forward_pre_hook(
            lambda _m, inp: out.__setitem__("connector.pixel_shuffle", inp[0].detach().clone())))
        handles.append(conn.register_forward_hook(fwd("connector.output")))
    else:
        handles.append(conn.register_forward_pre_hook(
            lambda _m, inp: out.__setitem__("vision.features", inp[0].detach().clone())))
        handles.append(conn.register_forward_hook(fwd("connector.output")))
    handles.append(text.register_forward_pre_hook(
        lambda _m, a, kw: out.__setitem__("decoder.inputs_embeds", kw["inputs_embeds"].detach().clone()),
        with_kwargs=True))
    for i, layer in enumerate(text.layers):
        handles.append(layer.register_forward_hook(fwd(f"decoder.hidden_states.{i}")))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def reference(model, name, inputs):
    with hooks(model, name) as out:
        res = model(**inputs, output_hidden_states=True)
    out["logits"] = res.logits
    Lt = model.config.text_config.num_hidden_layers
    Lv = model.config.vision_config.num_hidden_layers
    # The decoder hooks agree with transformers' hidden_states: [0] = inputs_embeds, [l + 1] =
    # layer l's output, except the last, which transformers replaces by the final norm's output.
    hs = res.hidden_states
    assert len(hs) == Lt + 1
    close(hs[0], out["decoder.inputs_embeds"], f"{name} hidden_states[0]", atol=1e-7)
    for l in range(Lt - 1):
        close(hs[l + 1], out[f"decoder.hidden_states.{l}"], f"{name} hidden_states[{l + 1}]", atol=1e-7)
    text = parts(model, name)[3]
    close(hs[Lt], text.norm(out[f"decoder.hidden_states.{Lt - 1}"]), f"{name} final norm", atol=1e-6)
    # The vision hooks agree with the tower's own hidden_states.
    img_kw = {"pixel_values": inputs["pixel_values"]}
    if "pixel_attention_mask" in inputs:
        img_kw["pixel_attention_mask"] = inputs["pixel_attention_mask"]
    feats = model.get_image_features(**img_kw, output_hidden_states=True)
    vhs = feats.hidden_states
    assert vhs is not None and len(vhs) == Lv + 1, name
    for k in range(Lv + 1):
        close(vhs[k], out[f"vision.hidden_states.{k}"], f"{name} vision hidden_states[{k}]", atol=1e-7)
    # get_image_features' pooled output (one entry per row) is the connector output.
    pooled = torch.cat(list(feats.pooler_output), dim=0)
    close(pooled.reshape(out["connector.output"].shape), out["connector.output"], f"{name} image features", atol=1e-7)
    return out


@torch.no_grad()
def check(model, name, inputs, rows, out):
    cfg = model.config
    vt, emb, vlayers, text, conn = parts(model, name)
    Lv = cfg.vision_config.num_hidden_layers
    n_img = 3
    n_tok = {"idefics2": PERCEIVER["resampler_n_latents"], "idefics3": SIDE * SIDE // SCALE_FACTOR**2,
             "llava": SIDE * SIDE}[name]
    assert out["connector.output"].shape == (n_img, n_tok, TEXT["hidden_size"]), out["connector.output"].shape
    # Merge: image positions hold the connector output in order, the others the token embeddings.
    ids = inputs["input_ids"]
    image_pos = ids == cfg.image_token_id
    assert image_pos.sum().item() == n_img * n_tok
    emb_in = out["decoder.inputs_embeds"]
    close(emb_in[image_pos], out["connector.output"].reshape(-1, TEXT["hidden_size"]), f"{name} merge", atol=0)
    close(emb_in[~image_pos], text.embed_tokens(ids)[~image_pos], f"{name} text embeddings", atol=0)
    if name == "llava":
        # vision_feature_layer = -1 is the last encoder layer's output, before post_layernorm.
        close(out["vision.features"], out[f"vision.hidden_states.{Lv}"], "llava feature layer -1", atol=0)
        post = vt.post_layernorm(out["vision.features"])
        assert (post - out["vision.features"]).abs().max().item() > 0.1, "post_layernorm had no effect"
    else:
        close(vt.post_layernorm(out[f"vision.hidden_states.{Lv}"]), out["vision.last_hidden_state"],
              f"{name} post_layernorm", atol=1e-6)
        # Images A and C are full; B has 5x7 real patches whose ids spread over the 8x8 grid.
        pam = out["vision.patch_attention_mask"]
        assert pam.shape == (n_img, SIDE * SIDE) and pam[0].all() and pam[2].all()
        grid = pam[1].reshape(SIDE, SIDE)
        rp, cp = B_REAL[0] // PATCH, B_REAL[1] // PATCH
        assert grid[:rp, :cp].all() and grid.sum().item() == rp * cp
        assert torch.equal(out["vision.position_ids"][0], torch.arange(SIDE * SIDE))
        real = out["vision.position_ids"][1].reshape(SIDE, SIDE)[:rp, :cp]
        assert real.max().item() > rp * SIDE and (out["vision.position_ids"][1].reshape(SIDE, SIDE)[rp:] == 0).all()
    if name == "idefics2":
        pr = conn.perceiver_resampler
        close(pr.norm(out[f"connector.perceiver.layers.{PERCEIVER['resampler_depth'] - 1}"]),
              out["connector.output"], "idefics2 perceiver norm", atol=1e-6)
        close(conn.modality_projection(out["vision.last_hidden_state"]), out["connector.modality_projection"],
              "idefics2 modality projection", atol=1e-6)
    if name == "idefics3":
        # Pixel shuffle as VLM-FACTS A4 spells it.
        x = out["vision.last_hidden_state"]
        n, seq, d = x.shape
        h = w = int(seq**0.5)
        s = SCALE_FACTOR
        y = x.view(n, h, w // s, d * s).permute(0, 2, 1, 3).reshape(n, w // s, h // s, d * s * s)
        y = y.permute(0, 2, 1, 3).reshape(n, seq // (s * s), d * s * s)
        close(y, out["connector.pixel_shuffle"], "idefics3 pixel shuffle", atol=0)
        close(conn.modality_projection.proj(y), out["connector.output"], "idefics3 projection", atol=1e-6)
    # Row 1's real positions equal row 1 run alone without padding: the padding/position
    # convention (left padding, position_ids = cumsum - 1) is the one transformers uses.
    n1 = len(rows[1])
    alone = model(**row_inputs(name, inputs, rows, 1)).logits[0]
    err = close(out["logits"][1, -n1:], alone, f"{name} row 1 alone", atol=1e-5)
    alone0 = model(**row_inputs(name, inputs, rows, 0)).logits[0]
    close(out["logits"][0], alone0, f"{name} row 0 alone", atol=1e-5)
    # Non-degenerate, finite outputs.
    for k, v in out.items():
        assert torch.isfinite(v.float()).all(), f"{name} {k} not finite"
        if v.is_floating_point():
            sd = v.std().item()
            assert sd > 0.1, f"{name} {k} degenerate (std {sd:.3g})"
    assert out["logits"].std().item() > 0.3
    return err


@torch.no_grad()
def greedy(model, name, inputs, rows):
    """generate on row 0 alone, checked against a step-by-step greedy without a cache."""
    kw = row_inputs(name, inputs, rows, 0)
    eos = model.config.text_config.eos_token_id
    pad = model.config.text_config.pad_token_id
    gen = model.generate(**kw, max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                         eos_token_id=eos, pad_token_id=pad)
    n = kw["input_ids"].shape[1]
    new = gen[0, n:]
    ids = kw["input_ids"]
    manual = []
    for _ in range(MAX_NEW_TOKENS):
        step = dict(kw, input_ids=ids, attention_mask=torch.ones_like(ids))
        t = model(**step).logits[0, -1].argmax().item()
        manual.append(t)
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
        if t == eos:
            break
    assert new.tolist() == manual, (name, new.tolist(), manual)
    assert len(new) == MAX_NEW_TOKENS and len(set(manual)) >= MIN_DISTINCT_GENERATED, (name, manual)
    return new.clone()


@torch.no_grad()
def odd_size(model, tok, seed, folder):
    """idefics2's reference_odd_size.safetensors (see the module docstring)."""
    name = "idefics2"
    ids = hand_ids(name, tok, ODD_PROMPT)
    assert tok.encode(ODD_PROMPT.replace("<image>", image_expansion(name))).ids == ids
    S, (h, w) = len(ids), ODD_SIZE
    assert h % PATCH and w % PATCH
    inputs = dict(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, S, dtype=torch.int64),
                  position_ids=torch.arange(S)[None], pixel_values=pixels(seed, 1, h, w)[None],
                  pixel_attention_mask=torch.ones(1, 1, h, w, dtype=torch.int64))
    with hooks(model, name) as out:
        logits = model(**inputs).logits
    keys = ["vision.patch_attention_mask", "vision.position_ids", "vision.last_hidden_state", "connector.output"]
    ref = {**inputs, **{k: out[k] for k in keys}, "logits": logits}
    n = (h // PATCH) * (w // PATCH)
    assert n == 42 and ref["vision.patch_attention_mask"].shape == (1, n) and ref["vision.patch_attention_mask"].all()
    assert ref["vision.position_ids"].shape == (1, n) and ref["vision.position_ids"].dtype == torch.int64
    assert ref["vision.last_hidden_state"].shape == (1, n, VISION["hidden_size"])
    assert ref["connector.output"].shape == (1, PERCEIVER["resampler_n_latents"], TEXT["hidden_size"])
    assert logits.shape == (1, S, model.config.text_config.vocab_size)
    # The partial last patch row and column are dropped: the same as the image cropped to whole patches.
    crop = dict(inputs, pixel_values=inputs["pixel_values"][..., :h - h % PATCH, :w - w % PATCH],
                pixel_attention_mask=inputs["pixel_attention_mask"][..., :h - h % PATCH, :w - w % PATCH])
    close(model(**crop).logits, logits, "idefics2 odd size vs cropped", atol=0)
    for k, v in ref.items():
        assert torch.isfinite(v.float()).all(), f"odd size {k} not finite"
        assert not v.is_floating_point() or v.std().item() > 0.1, f"odd size {k} degenerate"
    assert logits.std().item() > 0.3
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(folder, "reference_odd_size.safetensors"),
              metadata={"prompts": json.dumps([ODD_PROMPT])})
    print(f"  reference_odd_size.safetensors: S = {S}, "
          + ", ".join(f"{k} {list(v.shape)}" for k, v in ref.items()))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def write(name, model, tok, proc, ref, inputs, folder):
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    model.save_pretrained(folder, safe_serialization=True)
    gen_cfg = os.path.join(folder, "generation_config.json")  # not needed by the Rust loader
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    add_rope_keys_to_text_config(os.path.join(folder, "config.json"))
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok.to_str(pretty=True))
        f.write("\n")
    proc.image_processor.save_pretrained(folder)
    # One metadata key: safetensors writes several in hash order, which would change the bytes.
    meta = {"prompts": json.dumps(PROMPTS[name])}
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(folder, "reference.safetensors"),
              metadata=meta)
    # Round trip: the folder reloads to the same outputs, and its tokenizer.json is ours.
    reloaded = CLASSES[name].from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        again = reloaded(**inputs).logits
    close(again, ref["logits"], f"{name} reload", atol=1e-6)
    assert Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).to_str() == tok.to_str()
    if name == "llava":
        check_hub_layout(folder, inputs, ref["logits"])


def check_hub_layout(folder, inputs, logits):
    """transformers 5.24 writes the SigLIP tower as `vision_tower.*`; hub checkpoints written by
    4.x (llava-interleave-qwen-7b-hf) have `vision_tower.vision_model.*`. Both load to the same
    model: rename to the 4.x layout and compare."""
    import tempfile
    from safetensors.torch import load_file
    weights = load_file(os.path.join(folder, "model.safetensors"))
    hub = {("vision_tower.vision_model." + k[len("vision_tower."):] if k.startswith("vision_tower.") else k): v
           for k, v in weights.items()}
    assert any(k.startswith("vision_tower.embeddings.") for k in weights)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(folder, "config.json")) as f, open(os.path.join(tmp, "config.json"), "w") as g:
            g.write(f.read())
        save_file(hub, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        model = LlavaForConditionalGeneration.from_pretrained(
            tmp, attn_implementation="eager", dtype=torch.float32).eval()
        with torch.no_grad():
            close(model(**inputs).logits, logits, "llava 4.x (hub) tensor names", atol=1e-6)


def add_rope_keys_to_text_config(path):
    """make_fixtures.add_classic_rope_keys, applied to the nested text_config."""
    with open(path) as f:
        cfg = json.load(f)
    tmp = path + ".text.json"
    with open(tmp, "w") as f:
        json.dump(cfg["text_config"], f)
    cfg["text_config"] = add_classic_rope_keys(tmp)
    os.remove(tmp)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def summary(name, tok, folder):
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    print(f"{name}: " + ", ".join(f"{f} {s / 1024:.1f} KiB" for f, s in sizes.items()))
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
    prefixes = sorted({".".join(n.split(".")[:3]) if n.startswith("model.") else n.split(".")[0] for n in names})
    print(f"  weights ({len(names)} tensors): prefixes {prefixes}")
    specials = {t: tok.token_to_id(t) for t in TOKENIZERS[name]["leading"] + TOKENIZERS[name]["trailing"]
                if not t.startswith("<row_") or t in ("<row_1_col_1>", "<row_6_col_6>")}
    print(f"  tokenizer: {tok.get_vocab_size()} tokens; specials {specials}")
    with safe_open(os.path.join(folder, "reference.safetensors"), "pt") as f:
        for k in f.keys():
            v = f.get_tensor(k)
            extra = f" max|x| {v.abs().max().item():.3g}" if v.is_floating_point() else ""
            print(f"  {k:38s} {str(list(v.shape)):22s} {str(v.dtype)[6:]:7s}{extra}")


@torch.no_grad()
def build(name, out_root, seed):
    spec = TOKENIZERS[name]
    tok = build_tokenizer(spec["leading"], spec["trailing"], spec["bos"])
    again = build_tokenizer(spec["leading"], spec["trailing"], spec["bos"])
    assert tok.to_str() == again.to_str(), f"{name}: tokenizer training is not deterministic"
    config = make_config(name, tok)
    torch.manual_seed(seed)
    model = CLASSES[name](config).eval()
    for sub in (model.config, model.config.vision_config, model.config.text_config,
                getattr(model.config, "perceiver_config", model.config)):
        assert sub._attn_implementation == "eager", (name, type(sub))
    randomize(model, seed)
    inputs, rows = make_inputs(name, tok, seed + 1)
    proc = check_ids_against_processor(name, tok, rows)
    out = reference(model, name, inputs)
    err = check(model, name, inputs, rows, out)
    out["generate.row0"] = greedy(model, name, inputs, rows)
    ref = {**inputs, **out}
    folder = os.path.join(out_root, name)
    write(name, model, tok, proc, ref, inputs, folder)
    summary(name, tok, folder)
    if name == "idefics2":
        odd_size(model, tok, seed + 2, folder)
    print(f"  row 1 alone vs padded: max abs diff {err:.1e}; generate.row0 = {out['generate.row0'].tolist()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm"))
    ap.add_argument("--seed", type=int, default=2468)
    ap.add_argument("--only", choices=MODELS)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    out = os.path.normpath(args.out)
    for name, offset in MODELS.items():
        if args.only in (None, name):
            build(name, out, args.seed + offset)


if __name__ == "__main__":
    main()
