#!/usr/bin/env python3
"""Build a tiny random Idefics v1 model (IdeficsForVisionText2Text) and its Hugging Face reference
outputs, in the layout of scripts/make_vlm_fixtures.py.

Writes tests/fixtures/vlm/idefics/ with what a user's Hugging Face folder holds:
  config.json               what save_pretrained writes (IdeficsConfig: the text settings at the
                            top level, vision_config, perceiver_config), plus the classic
                            `rope_theta` / `rope_scaling` keys (transformers 5 only writes
                            `rope_parameters`)
  model.safetensors         float32 weights, with the tensor names save_pretrained writes
                            (model.embed_tokens.{weight, additional_embedding.weight},
                            model.vision_model.*, model.perceiver_resampler.*,
                            model.gated_cross_attn_layers.{0,1}.*, model.layers.*, model.norm,
                            lm_head.{weight, additional_fc.weight})
  tokenizer.json            a small byte-level BPE (make_vlm_fixtures.build_tokenizer, trained on
                            its CORPUS) with <unk> <s> </s> as ids 0 1 2 (pad, bos, eos as in the
                            hub idefics tokenizer) and, after the BPE vocabulary,
                            <fake_token_around_image> = vocab_size and <image> = vocab_size + 1
                            (the hub's 32000 / 32001); the post-processor prepends <s>. No
                            <end_of_utterance>: IdeficsProcessor only inserts it between two
                            consecutive text items, which an interleaved prompt never has, and
                            its id (vocab_size + 2) would be outside the model's vocabulary
  preprocessor_config.json  IdeficsImageProcessor as save_pretrained writes it: resize to 32x32
                            (no aspect ratio kept, PIL bicubic on the uint8 image), rescale 1/255,
                            normalise with the CLIP mean / std
  image_{a..e}.png          the five RGB input images (W x H: a 40x24, b 17x33, c 32x32, d 50x50,
                            e 20x20) for a Rust side that decodes and preprocesses them itself
  reference.safetensors     inputs (int64) and reference outputs (float32), see below

Model: text hidden 64, 4 heads, 4 decoder layers, intermediate 128, RMSNorm eps 1e-6,
vocab_size = the tokenizer's base vocabulary, additional_vocab_size 2 (decoupled embedding and
lm_head), cross_layer_interval 2 (gated cross-attention block 0 runs before decoder layer 0,
block 1 before layer 2), qk_layer_norms true (RMSNorm over head_dim on the cross-attention q and
k), alpha_type "float"; vision: CLIP-like tower embed_dim 32, 32 px images, 4 px patches (64
patches + class token = 65 positions), 2 layers, 4 heads, intermediate 64, exact GELU; perceiver
resampler: 4 latents, depth 2, 2 heads of dim 8, qk LayerNorms. Every weight is re-randomised
(norm weights around 1, biases, class embedding, latents, the decoupled embedding rows) and the
gates are set to alpha_cross_attn = (0.6, -0.8) and alpha_dense = (-0.8, 0.6) for blocks (0, 1):
stock init zeroes them, which would hide the cross-attention. `reference` re-computes a gated
block and a perceiver block by hand: image_attention_mask [B, S, n_images] is repeated over each
image's 4 latents and turned into an additive 0 / float32-min mask; cross-attention has no RoPE,
scale head_dim^-0.5, q / k RMSNorm'ed per head when qk_layer_norms; a token with an all-zero row
gets no cross-attention output (cross_attention_gate), but the block's MLP still applies to it;
h += tanh(alpha_cross_attn) * attn, then h += tanh(alpha_dense) * mlp(rms_norm(h)).

The reference batch has two rows, built by the transformers IdeficsProcessor from the images
as PIL images and the text pieces between them (the interleaved-list call, see `processor_call`):
  row 0: text, image A, text, image B, text (holding a literal </s>), image C, text
  row 1: text, image D, text, image E, text; shorter, left-padded to row 0's length
The processor strips spaces (" " only) around each text piece, writes <s> + for every image
<fake_token_around_image><image><fake_token_around_image> (only <image><fake_token_around_image>
right after another image), and tokenises without adding special tokens. Row 0's first text
attends to no image; its tokens after the </s> attend to no image until image C. The forward gets
position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0). Keys (n_real = 5 real images, in
prompt order A B C D E; S = row 0's length; V = vocab_size + 2):
  input_ids, attention_mask     [2, S] int64, what the processor returns (pad = <unk> = 0)
  position_ids                  [2, S] int64, as above
  pixel_values                  [2, 3, 3, 32, 32] the processor's output; row 1's third slot is
                                its padding image (all 0.0)
  image_attention_mask          [2, S, 3] int64, the processor's: token t of row b attends to
                                image slot i iff the most recent <image> at or before t is the
                                row's i-th one and no </s> lies between that <image> and t (the
                                </s> itself still attends); zeros before the first <image>, on
                                padding, and for row 1's padding slot
  vision.embeddings             [5, 65, 32] class + patch embeddings + position embeddings,
                                before pre_layrnorm
  vision.hidden_states.{0..2}   transformers' (CLIP) numbering: 0 = after pre_layrnorm (the
                                encoder input), k = encoder layer k-1's output
  vision.last_hidden_state      what the perceiver receives: the last encoder layer's output
                                (= vision.hidden_states.2; post_layernorm only feeds the unused
                                pooled output)
  connector.perceiver.blocks.{0,1}  the latents after each perceiver block (attention and MLP
                                residuals), before the final LayerNorm [5, 4, 32]
  connector.output              the perceiver output after its final LayerNorm [5, 4, 32]: the
                                keys / values of the gated cross-attention (4 per image)
  decoder.hidden_states.0       the token embeddings [2, S, 64]
  decoder.gated.{0,1}           the hidden state after gated cross-attention block j [2, S, 64]
  decoder.hidden_states.{1..4}  decoder layer l-1's output, before the final norm [2, S, 64]
                                (transformers' own output_hidden_states differ: [0] = layer 0's
                                input = decoder.gated.0, [1..3] = layers 0..2's outputs, [4] = the
                                final norm's output)
  logits                        [2, S, V]
  generate.row0, generate.row1  [8] int64: the new token ids of greedy generate(max_new_tokens=8)
                                on that row alone (the processor run on the row alone: batch of
                                one, no padding, only its images); each generated token attends to
                                the images the prompt's last token attends to
  generate.row0.scores, generate.row1.scores  [8, V] the logits of each of the 8 steps
                                (output_logits; the same as output_scores for plain greedy)
Outputs at padded positions (attention_mask 0) are whatever transformers computes there; only
real positions are checked against an unpadded run. Metadata (JSON strings): "prompts" the two
prompts as a user writes them, one literal <image> per image; "full_texts" the exact strings the
processor tokenises; "images" the PNG file names per row. Tokenising full_texts with
tokenizer.json (no added BOS) gives the unpadded input_ids. The metadata keys are written in
sorted order (safetensors itself writes several in hash order, which would change the bytes).

Also writes tests/fixtures/vlm/idefics-vector/: the same sizes with alpha_type "vector" (gates of
shape [1, 1, 64]) and qk_layer_norms false, another seed; config.json, model.safetensors,
tokenizer.json (identical), preprocessor_config.json and reference.safetensors with input_ids,
attention_mask, position_ids, pixel_values, image_attention_mask (the same batch) and logits;
the same metadata (the PNGs live in idefics/).

Everything is offline and deterministic (fixed seeds, eager attention, float32, CPU).
Regenerate with:
    .venv-ref/bin/python scripts/make_idefics_fixtures.py
"""

import argparse
import contextlib
import json
import os
import struct
import sys

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save
from tokenizers import Tokenizer
from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsProcessor, PreTrainedTokenizerFast
from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil
from transformers.models.idefics.modeling_idefics import IdeficsRMSNorm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_vlm_fixtures as vlm  # noqa: E402
from make_fixtures import add_classic_rope_keys  # noqa: E402
from make_vlm_fixtures import close  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Shapes
# ---------------------------------------------------------------------------------------------
IMAGE_SIZE = 32
PATCH = 4
N_POS = (IMAGE_SIZE // PATCH) ** 2 + 1  # 64 patches + class token
VISION = dict(embed_dim=32, image_size=IMAGE_SIZE, patch_size=PATCH, num_hidden_layers=2,
              num_attention_heads=4, intermediate_size=64, hidden_act="gelu", layer_norm_eps=1e-5)
PERCEIVER = dict(use_resampler=True, resampler_n_latents=4, resampler_depth=2, resampler_n_heads=2,
                 resampler_head_dim=8, qk_layer_norms_perceiver=True)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
            additional_vocab_size=2, cross_layer_interval=2, rms_norm_eps=1e-6, hidden_act="silu",
            max_position_embeddings=256, tie_word_embeddings=False, use_resampler=True)
# The seed offset of "idefics" picks a seed whose greedy continuations are not one token repeated
# (tiny random decoders often fall into such a loop; `greedy` asserts variety).
VARIANTS = {"idefics": dict(alpha_type="float", qk_layer_norms=True, seed_offset=23),
            "idefics-vector": dict(alpha_type="vector", qk_layer_norms=False, seed_offset=50)}
ALPHA_CROSS = (0.6, -0.8)  # float gates of blocks 0, 1
ALPHA_DENSE = (-0.8, 0.6)
MAX_NEW_TOKENS = 8
MIN_DISTINCT_GENERATED = 4

# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------
BPE_SIZE = 285  # byte alphabet + merges; with <unk> <s> </s> first, vocab_size = 288
LEADING = ["<unk>", "<s>", "</s>"]
TRAILING = ["<fake_token_around_image>", "<image>"]
PAD, BOS, EOS, UNK = "<unk>", "<s>", "</s>", "<unk>"
FAKE, IMAGE = "<fake_token_around_image>", "<image>"


def build_tokenizer():
    """make_vlm_fixtures.build_tokenizer with this script's (smaller) BPE size."""
    saved = vlm.BPE_SIZE
    vlm.BPE_SIZE = BPE_SIZE
    try:
        tok = vlm.build_tokenizer(LEADING, TRAILING, bos=BOS)
        again = vlm.build_tokenizer(LEADING, TRAILING, bos=BOS)
    finally:
        vlm.BPE_SIZE = saved
    assert tok.to_str() == again.to_str(), "tokenizer training is not deterministic"
    n = BPE_SIZE + len(LEADING)
    assert [tok.token_to_id(t) for t in LEADING + TRAILING] == [0, 1, 2, n, n + 1]
    return tok


# ---------------------------------------------------------------------------------------------
# Prompts and images
# ---------------------------------------------------------------------------------------------
# Row 0: text, A, text, B, text (with a literal </s>), C, text. Row 1: text, D, text, E, text.
PROMPTS = ["What is in<image> and in<image> here?</s>Is the cat in<image> the image?",
           "Is the dog in<image> or in<image> now?"]
IMAGE_FILES = [["image_a.png", "image_b.png", "image_c.png"], ["image_d.png", "image_e.png"]]
IMAGE_SIZES = {"image_a.png": (40, 24), "image_b.png": (17, 33), "image_c.png": (32, 32),
               "image_d.png": (50, 50), "image_e.png": (20, 20)}  # (width, height)


def make_images(seed):
    """Small synthetic RGB pictures: gradients, a solid rectangle and noise (uint8)."""
    rng = np.random.RandomState(seed)
    out = {}
    for name, (w, h) in IMAGE_SIZES.items():
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        img = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1),
                        127.5 + 127.5 * np.sin((x + 2 * y) / 3.0)], axis=-1)
        x0, y0 = rng.randint(0, w // 2), rng.randint(0, h // 2)
        img[y0:y0 + h // 3 + 1, x0:x0 + w // 3 + 1] = rng.randint(0, 256, size=3)
        img = img + rng.normal(0, 20, size=img.shape)
        out[name] = Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")
    return out


def processor_call(proc, prompts, images):
    """IdeficsProcessor on interleaved lists [text, PIL image, text, ...] (the Idefics v1 API).
    The text= + images= call would append all images after the text instead of at the <image>s."""
    batch = []
    for prompt, imgs in zip(prompts, images):
        texts = prompt.split(IMAGE)
        assert len(texts) == len(imgs) + 1 and all(texts), "no empty text pieces in these prompts"
        sample = [texts[0]]
        for img, text in zip(imgs, texts[1:]):
            sample += [img, text]
        batch.append(sample)
    return proc(text=batch, padding="longest", return_tensors="pt")


def full_text(prompt):
    """What IdeficsProcessor.__call__ builds for the interleaved list: <s>, then each text piece
    stripped of spaces, each image as <fake><image><fake> (<image><fake> right after an image;
    no <end_of_utterance>: it only goes between two consecutive text items)."""
    texts = prompt.split(IMAGE)
    out = BOS + texts[0].strip(" ")
    for text in texts[1:]:
        out += FAKE + IMAGE + FAKE + text.strip(" ")
    return out


def image_attention_rule(ids, image_id, eos_id, n_slots):
    """The rule of processing_idefics.image_attention_mask_for_packed_input_ids_pt +
    incremental_to_binary_attention_mask, written out: one-hot of the most recent <image>'s
    index; zeros before the first <image> and after a </s> (until the next <image>)."""
    out = torch.zeros(len(ids), n_slots, dtype=torch.int64)
    count, seen_eos = -1, False
    for t, tid in enumerate(ids):
        if tid == image_id:
            count += 1
            seen_eos = False
        if count >= 0 and not seen_eos and count < n_slots:
            out[t, count] = 1
        if tid == eos_id:
            seen_eos = True
    return out


def to_pixels(img):
    """IdeficsImageProcessorPil by hand: RGB, PIL bicubic resize of the uint8 image to 32x32,
    x / 255 in float64 cast to float32, then (x - mean) / std in float32."""
    arr = np.array(img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), resample=Image.BICUBIC))
    x = (arr.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.array(IdeficsImageProcessorPil.image_mean, dtype=np.float32)
    std = np.array(IdeficsImageProcessorPil.image_std, dtype=np.float32)
    return torch.from_numpy(((x - mean) / std).transpose(2, 0, 1).copy())


def make_processor(tok):
    fast = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.to_str()), bos_token=BOS, eos_token=EOS,
        pad_token=PAD, unk_token=UNK, padding_side="left")
    return IdeficsProcessor(IdeficsImageProcessorPil(image_size=IMAGE_SIZE), fast)


def make_inputs(tok, proc, images):
    """The processor's batch (and each row alone), checked against the hand-built full texts,
    the image attention rule and a hand-made preprocessing."""
    pil = [[images[f] for f in row] for row in IMAGE_FILES]
    enc = processor_call(proc, PROMPTS, pil)
    texts = [full_text(p) for p in PROMPTS]
    rows = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    S = len(rows[0])
    assert len(rows[1]) < S and max(len(r) for r in rows) == S
    image_id, eos_id, pad_id = tok.token_to_id(IMAGE), tok.token_to_id(EOS), tok.token_to_id(PAD)
    assert all(r[0] == tok.token_to_id(BOS) and r.count(tok.token_to_id(BOS)) == 1 for r in rows)
    want = torch.tensor([[pad_id] * (S - len(r)) + r for r in rows])
    assert torch.equal(enc["input_ids"], want), (enc["input_ids"], want)
    mask = torch.tensor([[0] * (S - len(r)) + [1] * len(r) for r in rows])
    assert torch.equal(enc["attention_mask"], mask)
    n_slots = max(len(f) for f in IMAGE_FILES)
    assert enc["image_attention_mask"].shape == (2, S, n_slots)
    for b in range(2):
        rule = image_attention_rule(want[b].tolist(), image_id, eos_id, n_slots)
        assert torch.equal(enc["image_attention_mask"][b].long(), rule), b
    pv = enc["pixel_values"]
    assert pv.shape == (2, n_slots, 3, IMAGE_SIZE, IMAGE_SIZE) and pv.dtype == torch.float32
    for b, row in enumerate(IMAGE_FILES):
        for i, f in enumerate(row):
            close(pv[b, i], to_pixels(images[f]), f"preprocessing {f}", atol=1e-6)
    assert (pv[1, 2] == 0).all(), "row 1's third slot is the processor's zero padding image"
    inputs = dict(input_ids=enc["input_ids"].long(), attention_mask=enc["attention_mask"].long(),
                  position_ids=(enc["attention_mask"].long().cumsum(-1) - 1).clamp(min=0),
                  pixel_values=pv, image_attention_mask=enc["image_attention_mask"].long())
    # Each row alone (batch 1, no padding, only its own images) is the same as the batch's slice.
    alone = []
    for b in range(2):
        e = processor_call(proc, PROMPTS[b:b + 1], pil[b:b + 1])
        n, k = len(rows[b]), len(IMAGE_FILES[b])
        assert torch.equal(e["input_ids"][0], want[b, -n:]) and e["attention_mask"].all()
        assert torch.equal(e["pixel_values"][0], pv[b, :k])
        assert torch.equal(e["image_attention_mask"][0].long(), inputs["image_attention_mask"][b, -n:, :k])
        alone.append(dict(input_ids=e["input_ids"].long(), attention_mask=e["attention_mask"].long(),
                          pixel_values=e["pixel_values"], image_attention_mask=e["image_attention_mask"].long()))
    return inputs, rows, texts, alone


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
def make_config(tok, alpha_type, qk_layer_norms):
    config = IdeficsConfig(
        **TEXT, vocab_size=BPE_SIZE + len(LEADING), alpha_type=alpha_type, qk_layer_norms=qk_layer_norms,
        pad_token_id=tok.token_to_id(PAD), bos_token_id=tok.token_to_id(BOS), eos_token_id=tok.token_to_id(EOS),
        vision_config=dict(VISION), perceiver_config=dict(PERCEIVER))
    assert config.vocab_size == tok.token_to_id(FAKE) and config.vocab_size + 1 == tok.token_to_id(IMAGE)
    config._attn_implementation = "eager"
    config.dtype = torch.float32
    return config


def randomize(model, seed, alpha_type):
    """Re-initialise with O(1) activations and non-trivial norms and biases (as
    make_vlm_fixtures.randomize does), plus non-zero gates."""
    g = torch.Generator().manual_seed(seed)
    norm_params = {f"{m}.{p}" for m, mod in model.named_modules()
                   if isinstance(mod, (torch.nn.LayerNorm, IdeficsRMSNorm)) for p, _ in mod.named_parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha_cross_attn") or name.endswith("alpha_dense"):
                j = int(name.split(".")[2])
                if alpha_type == "float":
                    p.fill_((ALPHA_CROSS if name.endswith("alpha_cross_attn") else ALPHA_DENSE)[j])
                else:  # vector: per-channel gates of either sign, |alpha| in [0.3, 1.1]
                    mag = 0.3 + 0.8 * torch.rand(p.shape, generator=g)
                    sign = torch.where(torch.rand(p.shape, generator=g) < 0.5, -1.0, 1.0)
                    p.copy_(mag * sign)
            elif name in norm_params and name.endswith(".weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "position_embedding" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif name.endswith("class_embedding") or name.endswith("latents"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif name.startswith("model.embed_tokens."):  # weight and additional_embedding.weight
                p.copy_(2.0 * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif p.dim() in (2, 4):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)
            else:
                raise ValueError(f"unexpected parameter {name}")


def build_model(config, seed, alpha_type):
    torch.manual_seed(seed)
    model = IdeficsForVisionText2Text(config).eval()
    assert model.config._attn_implementation == "eager"
    assert model.model.vision_model.config._attn_implementation == "eager"
    randomize(model, seed, alpha_type)
    return model


# ---------------------------------------------------------------------------------------------
# Reference
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hooks(model, n_real):
    out = {}
    m = model.model
    vt, pr = m.vision_model, m.perceiver_resampler
    handles = []

    def keep(key, real_only=False):
        def f(_m, _i, o):
            o = o[0] if isinstance(o, tuple) else o
            out[key] = (o[:n_real] if real_only else o).detach().clone()
        return f

    handles.append(vt.embeddings.register_forward_hook(keep("vision.embeddings", True)))
    handles.append(vt.pre_layrnorm.register_forward_hook(keep("vision.hidden_states.0", True)))
    for i, layer in enumerate(vt.encoder.layers):
        handles.append(layer.register_forward_hook(keep(f"vision.hidden_states.{i + 1}", True)))
    handles.append(vt.register_forward_hook(
        lambda _m, _i, o: out.__setitem__("vision.last_hidden_state", o.last_hidden_state[:n_real].detach().clone())))
    for i, (_attn, ff) in enumerate(pr.blocks):
        # The block's output is ff(latents) + latents, the same addition as the resampler's.
        handles.append(ff.register_forward_hook(
            lambda _m, inp, o, i=i: out.__setitem__(f"connector.perceiver.blocks.{i}",
                                                    (o + inp[0])[:n_real].detach().clone())))
    handles.append(pr.register_forward_hook(keep("connector.output", True)))
    handles.append(m.embed_tokens.register_forward_hook(keep("decoder.hidden_states.0")))
    for j, block in enumerate(m.gated_cross_attn_layers):
        handles.append(block.register_forward_hook(keep(f"decoder.gated.{j}")))
    for i, layer in enumerate(m.layers):
        handles.append(layer.register_forward_hook(keep(f"decoder.hidden_states.{i + 1}")))
    try:
        yield out
    finally:
        for h in handles:
            h.remove()


def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


@torch.no_grad()
def manual_gated_block(model, j, hidden, image_states, image_attention_mask):
    """Gated cross-attention block j written out (checks the details the Rust side needs)."""
    cfg = model.config
    blk = model.model.gated_cross_attn_layers[j]
    at = blk.cross_attn
    B, S, D = hidden.shape
    H, hd = cfg.num_attention_heads, D // cfg.num_attention_heads
    n_img, n_lat = image_attention_mask.shape[-1], image_states.shape[1]
    kv = image_states.reshape(B, n_img * n_lat, -1)  # images of a row, 4 latents each, in order
    x = rms_norm(hidden, blk.input_layernorm.weight, cfg.rms_norm_eps)
    q = (x @ at.q_proj.weight.T).view(B, S, H, hd).transpose(1, 2)
    k = (kv @ at.k_proj.weight.T).view(B, -1, H, hd).transpose(1, 2)
    v = (kv @ at.v_proj.weight.T).view(B, -1, H, hd).transpose(1, 2)
    if cfg.qk_layer_norms:  # no RoPE in cross-attention; RMSNorm over head_dim
        q = rms_norm(q, at.q_layer_norm.weight, cfg.rms_norm_eps)
        k = rms_norm(k, at.k_layer_norm.weight, cfg.rms_norm_eps)
    allowed = image_attention_mask.repeat_interleave(n_lat, dim=-1).bool()  # [B, S, n_img * n_lat]
    scores = (q @ k.transpose(-1, -2)) * hd**-0.5
    scores = scores + torch.where(allowed[:, None], 0.0, torch.finfo(torch.float32).min)
    a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, S, D) @ at.o_proj.weight.T
    gate = allowed.any(-1)  # tokens attending to no image get no cross-attention output
    a = torch.where(gate[..., None], a, 0.0)
    h = hidden + torch.tanh(blk.alpha_cross_attn) * a
    y = rms_norm(h, blk.post_attention_layernorm.weight, cfg.rms_norm_eps)
    mlp = blk.mlp
    y = (torch.nn.functional.silu(y @ mlp.gate_proj.weight.T) * (y @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T
    return h + torch.tanh(blk.alpha_dense) * y


@torch.no_grad()
def manual_perceiver_block(model, i, context, latents):
    """Perceiver block i written out: keys / values over [context; latents], qk LayerNorms."""
    attn, ff = model.model.perceiver_resampler.blocks[i]
    c, l = attn.context_layer_norm(context), attn.latents_layer_norm(latents)
    H, hd = attn.n_heads, attn.head_dim
    q = attn.q_proj(l)
    kv_in = torch.cat([c, l], dim=-2)
    k, v = attn.k_proj(kv_in), attn.v_proj(kv_in)
    q, k, v = [t.view(t.shape[0], t.shape[1], H, hd).transpose(1, 2) for t in (q, k, v)]
    if attn.qk_layer_norms:
        q, k = attn.q_layer_norm(q), attn.k_layer_norm(k)
    w = ((q * hd**-0.5) @ k.transpose(-1, -2)).softmax(-1)
    latents = attn.output_proj((w @ v).transpose(1, 2).flatten(-2)) + latents
    return ff.c_proj(torch.relu(ff.fc(ff.ln(latents)))) + latents


@torch.no_grad()
def reference(model, inputs, n_real):
    with hooks(model, n_real) as out:
        res = model(**inputs, output_hidden_states=True)
    out["logits"] = res.logits
    cfg = model.config
    Lt, Lv = cfg.num_hidden_layers, cfg.vision_config.num_hidden_layers
    m = model.model
    vt = m.vision_model
    # Vision: pre_layrnorm of the embeddings, last_hidden_state without post_layernorm.
    close(vt.pre_layrnorm(out["vision.embeddings"]), out["vision.hidden_states.0"], "pre_layrnorm", atol=0)
    close(out["vision.last_hidden_state"], out[f"vision.hidden_states.{Lv}"], "last_hidden_state", atol=0)
    post = vt.post_layernorm(out["vision.last_hidden_state"])
    assert (post - out["vision.last_hidden_state"]).abs().max() > 0.1, "post_layernorm would have mattered"
    # Perceiver: blocks written out, final LayerNorm.
    lat = m.perceiver_resampler.latents.expand(n_real, -1, -1)
    for i in range(cfg.perceiver_config.resampler_depth):
        lat = manual_perceiver_block(model, i, out["vision.last_hidden_state"], lat)
        close(lat, out[f"connector.perceiver.blocks.{i}"], f"perceiver block {i}", atol=1e-5)
    last = f"connector.perceiver.blocks.{cfg.perceiver_config.resampler_depth - 1}"
    close(m.perceiver_resampler.layer_norm(out[last]),
          out["connector.output"], "perceiver layer_norm", atol=0)
    # Decoder: gated block j written out, fed by the hidden state before decoder layer j * interval.
    B = inputs["input_ids"].shape[0]
    n_slots = inputs["image_attention_mask"].shape[-1]
    with hooks(model, B * n_slots) as full:  # all slots, padding image included
        model(**inputs)
    for j in range(Lt // cfg.cross_layer_interval):
        before = out[f"decoder.hidden_states.{j * cfg.cross_layer_interval}"]
        mine = manual_gated_block(model, j, before, full["connector.output"], inputs["image_attention_mask"])
        close(mine, out[f"decoder.gated.{j}"], f"gated block {j} by hand", atol=1e-5)
    # transformers' own hidden_states: [0] = decoder layer 0's input (already after gated block 0),
    # [l] = decoder layer l-1's output for 0 < l < L, [L] = the final norm's output.
    hs = res.hidden_states
    assert len(hs) == Lt + 1
    close(hs[0], out["decoder.gated.0"], "transformers hidden_states[0]", atol=0)
    for l in range(1, Lt):
        close(hs[l], out[f"decoder.hidden_states.{l}"], f"transformers hidden_states[{l}]", atol=0)
    close(hs[Lt], m.norm(out[f"decoder.hidden_states.{Lt}"]), "final norm", atol=0)
    return out


def row_inputs(inputs, rows, b, alone):
    n = len(rows[b])
    kw = dict(alone[b], position_ids=torch.arange(n)[None])
    assert torch.equal(kw["input_ids"][0], inputs["input_ids"][b, -n:])
    return kw


@torch.no_grad()
def check(model, inputs, rows, alone, out):
    """Padding convention, the image gating and non-degenerate outputs."""
    logits = out["logits"]
    for b in range(2):
        n = len(rows[b])
        close(logits[b, -n:], model(**row_inputs(inputs, rows, b, alone)).logits[0], f"row {b} alone", atol=1e-5)
    # Row 0's tokens before its first <image> see no image: other pixels leave them unchanged,
    # the tokens from the first <image> on change.
    image_id = model.config.vocab_size + 1
    first = rows[0].index(image_id)
    other = dict(inputs, pixel_values=torch.flip(inputs["pixel_values"], dims=[-1]))
    moved = model(**other).logits
    close(moved[0, :first], logits[0, :first], "text before the first image", atol=0)
    d = (moved[0, first:] - logits[0, first:]).abs().amax(-1)
    assert d.min() > 1e-3, f"tokens after the first image ignore the pixels ({d.min():.2g})"
    # The gates matter: zeroing them changes the logits a lot.
    saved = {n: p.clone() for n, p in model.named_parameters() if "alpha" in n}
    for n, p in model.named_parameters():
        if "alpha" in n:
            p.zero_()
    zeroed = model(**inputs).logits
    for n, p in model.named_parameters():
        if n in saved:
            p.copy_(saved[n])
    assert (zeroed - logits).abs().max() > 0.5
    for k, v in out.items():
        assert torch.isfinite(v.float()).all(), f"{k} not finite"
        if v.is_floating_point():
            assert v.std().item() > 0.1, f"{k} degenerate (std {v.std().item():.3g})"
    assert logits.std().item() > 0.3
    return first


@torch.no_grad()
def greedy(model, kw):
    """generate on one row alone, checked against a step-by-step greedy without a cache that
    gives each new token the prompt's last image_attention_mask row."""
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    gen = model.generate(input_ids=kw["input_ids"], attention_mask=kw["attention_mask"],
                         pixel_values=kw["pixel_values"], image_attention_mask=kw["image_attention_mask"],
                         max_new_tokens=MAX_NEW_TOKENS, do_sample=False, eos_token_id=eos, pad_token_id=pad,
                         output_scores=True, output_logits=True, return_dict_in_generate=True)
    n = kw["input_ids"].shape[1]
    new = gen.sequences[0, n:]
    scores = torch.cat(gen.logits, dim=0)
    close(torch.cat(gen.scores, dim=0), scores, "scores = logits (greedy, no processors)", atol=0)
    ids, iam = kw["input_ids"], kw["image_attention_mask"]
    manual = []
    for step in range(MAX_NEW_TOKENS):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=kw["pixel_values"],
                       image_attention_mask=iam).logits[0, -1]
        close(logits, scores[step], f"generate step {step} logits", atol=1e-4)
        t = logits.argmax().item()
        manual.append(t)
        ids = torch.cat([ids, torch.tensor([[t]])], dim=1)
        iam = torch.cat([iam, iam[:, -1:]], dim=1)
        if t == eos:
            break
    assert new.tolist() == manual, (new.tolist(), manual)
    assert len(new) == MAX_NEW_TOKENS and len(set(manual)) >= MIN_DISTINCT_GENERATED, manual
    assert eos not in manual and max(manual) < model.config.vocab_size, manual
    return new.clone(), scores.clone()


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
def save_sorted(tensors, path, metadata):
    """safetensors.save with the metadata keys in sorted order: the library writes several keys
    in hash order, which changes from run to run."""
    raw = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__")
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    new = {"__metadata__": dict(sorted(meta.items())), **dict(entries)}
    text = json.dumps(new, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with safe_open(path, "pt") as f:
        assert f.metadata() == metadata and sorted(f.keys()) == sorted(tensors)
        for k in tensors:
            assert torch.equal(f.get_tensor(k), tensors[k])


def write(folder, model, tok, proc, ref, metadata, images, inputs):
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    model.save_pretrained(folder, safe_serialization=True)
    gen_cfg = os.path.join(folder, "generation_config.json")  # not needed by the Rust loader
    if os.path.exists(gen_cfg):
        os.remove(gen_cfg)
    add_classic_rope_keys(os.path.join(folder, "config.json"))
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tok.to_str(pretty=True))
        f.write("\n")
    proc.image_processor.save_pretrained(folder)
    for name, img in (images or {}).items():
        img.save(os.path.join(folder, name), format="PNG", optimize=False, compress_level=9)
        again = Image.open(os.path.join(folder, name))
        assert again.mode == "RGB" and np.array_equal(np.array(again), np.array(img))
    save_sorted(ref, os.path.join(folder, "reference.safetensors"), metadata)
    # Round trip: the folder reloads to the same outputs, tied nothing, and its tokenizer.json is ours.
    reloaded = IdeficsForVisionText2Text.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32).eval()
    with torch.no_grad():
        close(reloaded(**inputs).logits, ref["logits"], f"{folder} reload", atol=1e-6)
    for n, p in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[n], p), n
    assert Tokenizer.from_file(os.path.join(folder, "tokenizer.json")).to_str() == tok.to_str()
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {"lm_head.weight", "lm_head.additional_fc.weight", "model.embed_tokens.weight",
            "model.embed_tokens.additional_embedding.weight"} <= names, sorted(names)


def summary(name, folder, tok):
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in sorted(os.listdir(folder))}
    print(f"{name}: {sum(sizes.values()) / 1024:.1f} KiB: "
          + ", ".join(f"{f} {s / 1024:.1f} KiB" for f, s in sizes.items()))
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        names = sorted(f.keys())
    print(f"  weights: {len(names)} tensors")
    print(f"  tokenizer: {tok.get_vocab_size()} tokens; specials "
          f"{ {t: tok.token_to_id(t) for t in LEADING + TRAILING} }")
    with safe_open(os.path.join(folder, "reference.safetensors"), "pt") as f:
        for k in f.keys():
            v = f.get_tensor(k)
            extra = f" max|x| {v.abs().max().item():.3g}" if v.is_floating_point() else ""
            print(f"  {k:34s} {str(list(v.shape)):20s} {str(v.dtype)[6:]:7s}{extra}")


@torch.no_grad()
def build(out_root, seed):
    tok = build_tokenizer()
    proc = make_processor(tok)
    assert not proc.tokenizer_was_trained_with_end_of_utterance_token
    images = make_images(seed + 7)
    inputs, rows, texts, alone = make_inputs(tok, proc, images)
    n_real = sum(len(f) for f in IMAGE_FILES)
    metadata = {"prompts": json.dumps(PROMPTS), "full_texts": json.dumps(texts), "images": json.dumps(IMAGE_FILES)}
    for name, spec in VARIANTS.items():
        s = seed + spec["seed_offset"]
        config = make_config(tok, spec["alpha_type"], spec["qk_layer_norms"])
        model = build_model(config, s, spec["alpha_type"])
        out = reference(model, inputs, n_real)
        first = check(model, inputs, rows, alone, out)
        folder = os.path.join(out_root, name)
        if name == "idefics":
            for b in range(2):
                gen, scores = greedy(model, alone[b])
                out[f"generate.row{b}"], out[f"generate.row{b}.scores"] = gen, scores
            ref = {**inputs, **out}
            write(folder, model, tok, proc, ref, metadata, images, inputs)
        else:
            ref = {**inputs, "logits": out["logits"]}
            write(folder, model, tok, proc, ref, metadata, None, inputs)
        summary(name, folder, tok)
        print(f"  row 0 tokens before the first <image>: {first}; "
              + "; ".join(f"generate.row{b} = {out[f'generate.row{b}'].tolist()}"
                          for b in range(2) if f"generate.row{b}" in out))
    for b in range(2):
        print(f"  full_texts[{b}] = {texts[b]!r}")
        print(f"  image_attention_mask row {b} (slot index or -) = "
              + "".join(str(r.argmax().item()) if r.any() else "-" for r in inputs["image_attention_mask"][b]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "vlm"))
    ap.add_argument("--seed", type=int, default=1357)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    build(os.path.normpath(args.out), args.seed)


if __name__ == "__main__":
    main()
