"""PREC fp16 is the model CoOp gets from OpenAI's CLIP: OpenAI's `build_model` (which runs
`convert_weights`) keeps conv, linear and attention weights and the two projections in fp16, and
everything else (LayerNorm, embeddings, BatchNorm, logit_scale) in fp32, with LayerNorm computing in
fp32. bf16 is the same layout in bf16. Checked here on the CPU, where fp16 and bf16 kernels exist for
these ops: the layout key by key against OpenAI's own code, and the features against OpenAI's
model in the same precision on the same seeded weights (the real ViT-B/16 and RN50 architectures).
On a CPU, PREC fp16 and amp still run in fp32 (`load_clip`); `build_clip` builds the fp16 model
anywhere. Runs on CUDA are left to a machine that has one.
"""
import contextlib
from types import SimpleNamespace

import pytest
import torch

from clipadapt.clip import TextEncoder, build_clip, compute_dtype, load_clip, precision_dtype, precision_key
from clipadapt.trainer import ClipTrainer
from helpers import relative_difference, seeded_openai_state

# max |ours - OpenAI's| / max |OpenAI's|: a few units of the format's rounding (fp16 2^-11, bf16 2^-8),
# from kernels that sum in another order (batch-first attention, the cut text encoder).
TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 5e-2}


def openai_low_precision(openai_model_py, state, dtype):
    """OpenAI's model as `build_model` gives it (fp16 after `convert_weights`); for bf16, every tensor
    it made fp16 is bf16 instead (OpenAI's forward casts to `conv1.weight.dtype`, so it runs in bf16)."""
    model = openai_model_py.build_model({k: v.clone() for k, v in state.items()}).eval()
    for tensor in model.parameters():
        if tensor.dtype == torch.float16:
            tensor.data = tensor.data.to(dtype)
    return model


def tokens(tokenizer):
    return tokenizer(["a photo of a dog.", "a centered satellite photo of Annual Crop Land.", "x"])


@pytest.mark.parametrize("name,dtype", [("ViT-B/16", torch.float16), ("RN50", torch.float16),
                                        ("ViT-B/16", torch.bfloat16)])
def test_low_precision_model_is_openai_build_model(name, dtype, openai_model_py, tmp_path):
    state = seeded_openai_state(openai_model_py, name)
    theirs = openai_low_precision(openai_model_py, state, dtype)
    path = str(tmp_path / "state_dict.pt")
    torch.save(state, path)
    ours, tokenizer, _ = build_clip(name, pretrained_tag=path, dtype=dtype)

    # The layout, key by key (parameters and buffers: BatchNorm statistics stay fp32 too).
    our_dtypes = {k: v.dtype for k, v in ours.state_dict().items()}
    assert our_dtypes == {k: v.dtype for k, v in theirs.state_dict().items()}
    assert our_dtypes["ln_final.weight"] == our_dtypes["token_embedding.weight"] == torch.float32
    assert our_dtypes["text_projection"] == our_dtypes["visual.conv1.weight"] == dtype
    assert type(ours.ln_final).__name__ == "LayerNormFp32"

    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    text = tokens(tokenizer)
    encoder = TextEncoder(ours)
    assert encoder.dtype == dtype  # the weights', not positional_embedding's (fp32)
    with torch.no_grad():
        want_image, want_text = theirs.encode_image(images), theirs.encode_text(text)
        got_image = ours.encode_image(images.to(compute_dtype(ours.visual)))
        got_cut_text, got_text = encoder(encoder.embed(text), text), ours.encode_text(text)
    assert want_image.dtype == got_image.dtype == got_cut_text.dtype == got_text.dtype == dtype
    diffs = {"image": relative_difference(got_image, want_image), "text": relative_difference(got_text, want_text),
             "cut text": relative_difference(got_cut_text, want_text)}
    assert max(diffs.values()) < TOLERANCE[dtype], diffs


def test_fp32_and_cpu_fallbacks(openai_model_py):
    """fp32 (and amp, under autocast) use the whole model in fp32 as CoOp's `clip_model.float()`; on a
    CPU fp16 and amp fall back to fp32, bf16 keeps the mixed layout."""
    for prec in ("fp32", "fp16", "amp"):
        model = load_clip("tiny-vit", pretrained=False, device="cpu", prec=prec)[0]
        assert {p.dtype for p in model.parameters()} == {torch.float32}, prec
        assert precision_key(prec, "cpu") == precision_key("fp32", "cpu")
    model = load_clip("tiny-vit", pretrained=False, device="cpu", prec="bf16")[0]
    assert model.visual.conv1.weight.dtype == model.text_projection.dtype == torch.bfloat16
    assert model.visual.ln_pre.weight.dtype == model.positional_embedding.dtype == torch.float32
    # On CUDA (no device needed to ask): fp16 keeps fp16 weights without autocast, amp fp32 under autocast.
    assert precision_dtype("fp16", "cuda") == (torch.float16, False)
    assert precision_dtype("amp", "cuda") == (torch.float32, True)
    # Features of the mixed layout are cached apart from those of the fully cast model it replaced.
    assert precision_key("fp16", "cuda") != str(precision_dtype("fp16", "cuda"))


@pytest.mark.parametrize("arch", ["tiny-vit", "tiny-rn"])
def test_trainer_casts_images_to_the_weights_dtype(arch):
    """The trainer's image encoder feeds fp32 loader images to a bf16-weight CLIP (whose logit_scale and
    embeddings stay fp32) as OpenAI's `image.type(clip_model.dtype)`; the result comes back fp32."""
    model = build_clip(arch, pretrained=False, dtype=torch.bfloat16)[0]
    trainer = SimpleNamespace(clip_model=model, _image_encoder=model.encode_image,
                              autocast=lambda enabled=True: contextlib.nullcontext())
    images = torch.randn(3, 3, 32, 32)
    features = ClipTrainer.encode_images(trainer, images)
    with torch.no_grad():
        want = model.encode_image(images.bfloat16()).float()
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, want, rtol=0, atol=0)


def test_coop_step_trains_fp32_context_through_a_bf16_clip(shapes_root, tmp_path):
    """A CoOp step with PREC bf16 on the CPU: images encoded online, gradients reach the fp32 context
    through bf16 weights and fp32 LayerNorms, and the context moves."""
    from clipadapt.engine import build_trainer
    from helpers import make_cfg
    cfg = make_cfg("CoOp", "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml", shapes_root, tmp_path / "out",
                   ["DATASET.NUM_SHOTS", "1", "FEATURES.CACHE", "False", "TRAINER.COOP.PREC", "bf16"])
    trainer = build_trainer(cfg)
    assert trainer.clip_model.transformer.resblocks[0].mlp.c_fc.weight.dtype == torch.bfloat16
    assert trainer.prompt_learner.ctx.dtype == torch.float32
    before = trainer.prompt_learner.ctx.detach().clone()
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2  # not the last batch: no scheduler step
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert torch.isfinite(torch.tensor(summary["loss"]))
    assert not torch.equal(trainer.prompt_learner.ctx, before)
