"""Prompt construction with learnable context (CoOp), shared by every prompt-learning trainer.

A prompt is [SOS] ctx_1 .. ctx_M [CLASS] . [EOS] (class at the end, middle or front). The context
is learned; the class-name tokens are fixed buffers that are rebuilt, never saved, so a checkpoint
trained on base classes evaluates on new classes (or all classes) as it is.
"""
import torch
import torch.nn as nn

POSITIONS = ("end", "middle", "front")


def n_tokens(tokenizer, text):
    """Number of BPE tokens of `text` (without SOS/EOS)."""
    return int(tokenizer([text])[0].argmax().item()) - 1


class PromptLearner(nn.Module):
    def __init__(self, text_encoder, tokenizer, classnames, n_ctx=16, ctx_init="", csc=False,
                 position="end", init_std=0.02, dtype=torch.float32, init_tail_fixed=False):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f'Class token position "{position}" is not one of {POSITIONS}')
        self.tokenizer = tokenizer
        # CLIP's (frozen) embedding table, kept out of this module's parameters and checkpoints.
        object.__setattr__(self, "token_embedding", text_encoder.token_embedding)
        self.csc = csc
        self.position = position
        width = self.token_embedding.weight.shape[1]
        if ctx_init:
            ctx_init = ctx_init.replace("_", " ")
            # init_tail_fixed (MaPLe's): only the first n_ctx tokens of the init are learned, the words after
            # them stay in the prompt as fixed text ("a photo" learned, "of a" kept). Else all are learned.
            n_ctx = min(n_ctx, n_tokens(tokenizer, ctx_init)) if init_tail_fixed else n_tokens(tokenizer, ctx_init)
            with torch.no_grad():
                init = self.token_embedding(tokenizer([ctx_init]).to(self.token_embedding.weight.device))
            ctx = init[0, 1:1 + n_ctx].float().cpu()
            if csc:
                ctx = ctx.unsqueeze(0).repeat(len(classnames), 1, 1)
            self.prompt_prefix = ctx_init
        else:
            shape = (len(classnames), n_ctx, width) if csc else (n_ctx, width)
            ctx = torch.empty(shape).normal_(std=init_std)
            self.prompt_prefix = " ".join(["X"] * n_ctx)
        self.n_ctx = n_ctx
        # dtype fp16 is CoOp's PREC fp16: its context is an fp16 parameter, drawn in fp32 and rounded (as
        # normal_ on an fp16 tensor draws), and the optimizer updates it in fp16.
        ctx = ctx.to(device=self.token_embedding.weight.device, dtype=dtype)
        self.ctx = nn.Parameter(ctx)  # (n_ctx, width) or (n_cls, n_ctx, width)
        self.set_classnames(classnames)

    def set_classnames(self, classnames):
        """Point the learner at another class list (base -> new, all classes for SHIP/GZSL); a no-op
        for the list it already serves, so callers need not check."""
        if getattr(self, "classnames", None) == list(classnames):
            return
        if self.csc and self.ctx.dim() == 3 and len(classnames) != self.ctx.shape[0]:
            raise ValueError(f"Class-specific context (CSC) was learned for {self.ctx.shape[0]} classes and cannot "
                             f"serve {len(classnames)} others; use unified context for base-to-new or GZSL.")
        self.classnames = list(classnames)
        names = [name.replace("_", " ") for name in classnames]
        self.name_lens = [n_tokens(self.tokenizer, name) for name in names]
        device = self.token_embedding.weight.device
        tokenized = self.tokenizer([f"{self.prompt_prefix} {name}." for name in names]).to(device)
        with torch.no_grad():
            embedding = self.token_embedding(tokenized).to(self.ctx.dtype)
        # Not saved in checkpoints: they depend on the class names only.
        self.register_buffer("tokenized_prompts", tokenized, persistent=False)  # (n_cls, L)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + self.n_ctx:], persistent=False)  # CLASS . EOS pad

    @property
    def n_cls(self):
        return len(self.classnames)

    def forward(self, class_idx=None, ctx_shift=None):
        """Prompt embeddings (N, L, width) and token ids (N, L) for classes `class_idx` (default all).

        ctx_shift (N, width) is added to every context token of row i (CoCoOp/SHIP's bias); a
        (N, n_ctx, width) shift adds one vector per token (SHIP's sequential bias).
        """
        if class_idx is None:
            class_idx = torch.arange(self.n_cls, device=self.token_prefix.device)
        prefix, suffix = self.token_prefix[class_idx], self.token_suffix[class_idx]
        ctx = self.ctx[class_idx] if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(len(class_idx), -1, -1)
        if ctx_shift is not None:
            ctx = ctx + (ctx_shift.unsqueeze(1) if ctx_shift.dim() == 2 else ctx_shift)
        ctx = ctx.to(prefix.dtype)
        if self.position == "end":
            prompts = torch.cat([prefix, ctx, suffix], dim=1)
        else:
            rows = []
            for row, cls in enumerate(class_idx.tolist()):
                name_len = self.name_lens[cls]
                name, rest = suffix[row:row + 1, :name_len], suffix[row:row + 1, name_len:]
                c = ctx[row:row + 1]
                if self.position == "middle":
                    half = self.n_ctx // 2
                    rows.append(torch.cat([prefix[row:row + 1], c[:, :half], name, c[:, half:], rest], dim=1))
                else:
                    rows.append(torch.cat([prefix[row:row + 1], name, c, rest], dim=1))
            prompts = torch.cat(rows, dim=0)
        return prompts, self.tokenized_prompts[class_idx]
