"""CLIP's text tower over prompt embeddings, cut to the longest EOT position.

Under the causal mask a token only attends to earlier ones, so everything after the last EOT of a
batch cannot change any EOT output: the sequence is cut to max(EOT)+1 tokens. Same features,
a fraction of the compute and memory (77 -> ~10-20 tokens for typical prompts).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .deep_prompts import TEXT_SLOT, run_blocks
from .loader import compute_dtype


def eot_positions(tokenized):
    """EOT index per prompt: the EOT token has the largest id in CLIP's vocabulary."""
    return tokenized.argmax(dim=-1)


class TextEncoder(nn.Module):
    def __init__(self, clip_model, cut=True):
        super().__init__()
        if getattr(clip_model, "text_pool_type", "argmax") != "argmax":
            raise ValueError("TextEncoder needs a CLIP whose text pooling is 'argmax' (EOT) as in OpenAI CLIP")
        self.transformer = clip_model.transformer
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("attn_mask", clip_model.attn_mask, persistent=False)
        self.token_embedding = clip_model.token_embedding
        self.cut = cut

    @property
    def dtype(self):
        """The transformer's weight dtype (fp16 in CoOp's fp16; positional_embedding stays fp32 there)."""
        return compute_dtype(self.transformer)

    def forward(self, prompts, tokenized, deep_prompts=()):
        """prompts: (n, L, width) token embeddings; tokenized: (n, L) ids; deep_prompts[i]: (n_ctx, width)
        replacing tokens 1..n_ctx before layer i, or None (clipadapt.clip.deep_prompts). Returns (n, embed_dim)."""
        eot = eot_positions(tokenized)
        length = int(eot.max().item()) + 1 if self.cut else prompts.shape[1]
        x = prompts[:, :length].to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        mask = self.attn_mask[:length, :length]
        if any(p is not None for p in deep_prompts):
            x = run_blocks(self.transformer, x, deep_prompts, TEXT_SLOT, attn_mask=mask)
        else:
            x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection

    def embed(self, tokenized):
        return self.token_embedding(tokenized)

    @torch.no_grad()
    def encode_tokenized(self, tokenized, batch_size=256, normalize=True, dtype=torch.float32):
        """Features of fixed (hand-crafted) prompts, in chunks so 1000 classes fit any GPU; cast to
        `dtype` before they are normalised (fp16: as CoOp's `encode_text` output is normalised)."""
        feats = []
        for start in range(0, tokenized.shape[0], batch_size):
            tok = tokenized[start:start + batch_size]
            feats.append(self(self.embed(tok), tok).to(dtype))
        feats = torch.cat(feats)
        return F.normalize(feats, dim=-1) if normalize else feats
