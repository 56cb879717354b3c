"""Deep prompts: learned tokens that replace part of a transformer's sequence before chosen layers,
for CLIP's text and image encoders (open_clip's blocks, unchanged). One mechanism for MaPLe, IVLP,
PromptSRC and VPT-deep, as the released `ResidualAttentionBlock_MaPLe` / `_IVLP` do it:

- text: the prompt tokens sit right after SOS, at positions 1..n (the first layer's are the prompt
  learner's context in the input embedding); before layer i a deep prompt replaces positions 1..n;
- vision: the first layer's prompts are appended after the patch tokens (after the positional
  embedding, before ln_pre); before layer i a deep prompt replaces the last n tokens.

A layer without a prompt (None, or past the list) keeps what the previous layer produced, so with
no prompts at all both encoders compute exactly what open_clip's own forward computes.
"""
import torch
import torch.nn as nn


class DeepPromptError(ValueError):
    """A model the deep prompts cannot be put into (a ResNet image encoder, another pooling)."""


TEXT_SLOT = "after_sos"  # positions 1..n
VISION_SLOT = "end"  # the last n positions


def replace_tokens(x, prompt, slot, seq_dim):
    """x with n tokens along `seq_dim` replaced by `prompt` (n, width), the same for every sequence of
    the batch: positions 1..n for TEXT_SLOT, the last n for VISION_SLOT."""
    n, length = prompt.shape[0], x.shape[seq_dim]
    begin = 1 if slot == TEXT_SLOT else length - n
    shape = [-1, -1, -1]
    shape[1 - seq_dim] = x.shape[1 - seq_dim]
    prompt = prompt.unsqueeze(1 - seq_dim).expand(*shape).to(x.dtype)
    return torch.cat([x.narrow(seq_dim, 0, begin), prompt, x.narrow(seq_dim, begin + n, length - begin - n)],
                     dim=seq_dim)


def run_blocks(transformer, x, deep_prompts=(), slot=TEXT_SLOT, attn_mask=None):
    """open_clip `transformer` over x (N, L, width), deep_prompts[i] (or None) put in before block i.
    Returns (N, L, width)."""
    batch_first = getattr(transformer, "batch_first", False)
    seq_dim = 1 if batch_first else 0
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        prompt = deep_prompts[i] if i < len(deep_prompts) else None
        if prompt is not None:
            x = replace_tokens(x, prompt, slot, seq_dim)
        x = block(x, attn_mask=attn_mask)
    return x if batch_first else x.transpose(0, 1)


def check_prompted_vision(visual):
    """The image encoder must be a ViT with CLIP's class-token pooling (every OpenAI and open_clip CLIP ViT)."""
    if not hasattr(visual, "conv1") or not hasattr(visual, "class_embedding"):
        raise DeepPromptError(f"Vision prompts need a ViT image encoder; this backbone's is a {type(visual).__name__} "
                              "(a ResNet has no token sequence to prompt). Use a ViT backbone (e.g. ViT-B/16).")
    if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") != "tok" \
            or getattr(visual, "final_ln_after_pool", False):
        raise DeepPromptError("Vision prompts support ViTs pooled by the class token as CLIP's are; this model "
                              f"pools with {getattr(visual, 'pool_type', '?')!r}.")


def vision_width(visual):
    return visual.class_embedding.shape[-1]


def encode_image_prompted(visual, images, first_prompts=None, deep_prompts=()):
    """CLIP's ViT over `images` with `first_prompts` (n, width) appended before ln_pre and
    deep_prompts[i] replacing the last n tokens before block i (i >= 1). Returns (B, embed_dim)."""
    check_prompted_vision(visual)
    x = visual.conv1(images)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, grid**2, width)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.patch_dropout(x)
    if first_prompts is not None:
        x = torch.cat([x, first_prompts.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x)
    x = run_blocks(visual.transformer, x, deep_prompts, slot=VISION_SLOT)
    pooled = visual.ln_post(x)[:, 0]
    return pooled @ visual.proj if visual.proj is not None else pooled


def clone_linear(linear, copies):
    """`copies` deep copies of one Linear (the released `_get_clones`: every copy starts equal)."""
    import copy
    return nn.ModuleList([copy.deepcopy(linear) for _ in range(copies)])
