"""MaPLe (Khattak et al., CVPR 2023): coupled vision-language prompts in the first J layers of both
CLIP encoders.

As the released `trainers/maple.py` and its `clip/model.py`: the text prompt `ctx` (N_CTX tokens,
initialised from the first N_CTX words of CTX_INIT, the rest of CTX_INIT kept as text) goes into the
text encoder's input and, through `proj` (text width -> vision width), is appended to the image
tokens; for layers 2..J a deep text prompt `compound_prompts_text[i]` replaces the text prompt tokens
and its projection `compound_prompt_projections[i]` replaces the vision prompt tokens (the coupling).
Logits = scale * cos(image, text); the loss is the cross-entropy. CLIP stays frozen, but the image
encoder runs at every step with gradients flowing to its prompts, so there is no feature cache.
Widths come from the model, so any open_clip ViT works (the released code hard-codes 512 -> 768).
"""
import torch
import torch.nn as nn

from clipadapt.clip import PromptLearner, clone_linear, vision_width
from clipadapt.engine import TRAINER_REGISTRY
from clipadapt.prompted_trainer import DeepPromptTrainer

RELEASED_PREFIX = "prompt_learner."  # the released checkpoint holds the whole CustomCLIP


class MultiModalPromptLearner(PromptLearner):
    """Parameters named as released: `ctx`, `proj`, `compound_prompts_text.<i>`, `compound_prompt_projections.<i>`."""

    def __init__(self, text_encoder, tokenizer, classnames, vis_width, n_ctx=2, ctx_init="a photo of a", depth=9,
                 dtype=torch.float32):
        # As released: the init words are used only for N_CTX <= 4; otherwise the context is random ("X X ...").
        super().__init__(text_encoder, tokenizer, classnames, n_ctx=n_ctx, ctx_init=ctx_init if n_ctx <= 4 else "",
                         dtype=dtype, init_tail_fixed=True)
        width, device = self.ctx.shape[-1], self.ctx.device
        # `proj` is in the CLIP's dtype (fp16 under PREC fp16); the deep prompts and their projections stay
        # fp32 whatever the PREC, as the released code leaves them (cast where they enter the encoders).
        self.proj = nn.Linear(width, vis_width).to(device=device, dtype=dtype)
        self.compound_prompts_text = nn.ParameterList(
            [nn.Parameter(torch.empty(self.n_ctx, width, device=device).normal_(std=0.02)) for _ in range(depth - 1)])
        self.compound_prompt_projections = clone_linear(nn.Linear(width, vis_width), depth - 1).to(device)

    def deep_prompts(self):
        """(first-layer vision prompts, text prompts per layer, vision prompts per layer): layer 0 of both
        encoders takes the input prompts, layers 1..J-1 the compound ones."""
        text = [None, *self.compound_prompts_text]
        vision = [None, *(layer(p) for layer, p in zip(self.compound_prompt_projections, self.compound_prompts_text))]
        return self.proj(self.ctx), text, vision


@TRAINER_REGISTRY.register()
class MaPLe(DeepPromptTrainer):
    CONFIG_NODE = "MAPLE"
    MODEL_NAME = "MultiModalPromptLearner"  # the released run folders' model name

    @staticmethod
    def config_defaults(node):
        node.N_CTX = 2  # prompt tokens per layer, in both encoders
        node.CTX_INIT = "a photo of a"  # its first N_CTX words initialise the text prompt (N_CTX <= 4)
        node.PREC = "fp16"  # fp16, fp32, bf16 or amp
        node.PROMPT_DEPTH = 9  # J: layers that get prompts (1 = the input layer only)

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.MAPLE.PROMPT_DEPTH < 1 or cfg.TRAINER.MAPLE.N_CTX < 1:
            raise ValueError("TRAINER.MAPLE.PROMPT_DEPTH and TRAINER.MAPLE.N_CTX must be at least 1")

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        self.check_depth("PROMPT_DEPTH", node.PROMPT_DEPTH)
        self.register_prompt_learner(MultiModalPromptLearner(
            self.text_encoder, self.tokenizer, self.train_classnames, vision_width(self.clip_model.visual),
            n_ctx=node.N_CTX, ctx_init=node.CTX_INIT, depth=node.PROMPT_DEPTH, dtype=self.head_dtype))

    def released_state(self, state_dict):
        """The released checkpoint holds the whole CustomCLIP: its prompt learner's entries are this learner."""
        if any(k.startswith(RELEASED_PREFIX) for k in state_dict):
            return {k[len(RELEASED_PREFIX):]: v for k, v in state_dict.items() if k.startswith(RELEASED_PREFIX)}
        return state_dict
