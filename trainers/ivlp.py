"""IVLP (independent vision-language prompting; MaPLe's baseline, PromptSRC's architecture): deep
prompts in both CLIP encoders, learned independently (no coupling between the branches).

As the released `trainers/independentVL.py` and `ResidualAttentionBlock_IVLP`: the text prompt `ctx`
(N_CTX_TEXT tokens from CTX_INIT, the rest of CTX_INIT kept as text) enters the text encoder's input
and a deep text prompt replaces it before each of layers 2..PROMPT_DEPTH_TEXT; the vision prompt `VPT`
(N_CTX_VISION tokens) is appended to the image tokens and a deep vision prompt replaces it before each
of layers 2..PROMPT_DEPTH_VISION (0: no vision prompts, the "language only" variant). Cross-entropy.
N_CTX_TEXT 0 with PROMPT_DEPTH_TEXT 0 is VPT-deep (Jia et al., ECCV 2022) on CLIP: vision prompts
only, the text side CTX_INIT + the class name as fixed text (configs/trainers/IVLP/vit_b16_vpt_deep.yaml).
"""
import torch
import torch.nn as nn

from clipadapt.clip import PromptLearner, vision_width
from clipadapt.engine import TRAINER_REGISTRY
from clipadapt.prompted_trainer import DeepPromptTrainer


def _prompts(count, n_ctx, width, device):
    """`count` deep prompts (n_ctx, width), N(0, 0.02) and fp32 whatever the PREC, as released."""
    return nn.ParameterList([nn.Parameter(torch.empty(n_ctx, width, device=device).normal_(std=0.02))
                             for _ in range(count)])


class IndependentPromptLearner(PromptLearner):
    """`ctx` (text input), `VPT` (vision input), `text_prompts.<i>` / `vision_prompts.<i>` (before layer i + 2).
    A released checkpoint's names map onto these (IVLP.released_state)."""

    def __init__(self, text_encoder, tokenizer, classnames, vis_width, n_ctx_text=2, n_ctx_vision=2,
                 ctx_init="a photo of a", depth_text=9, depth_vision=9, dtype=torch.float32):
        super().__init__(text_encoder, tokenizer, classnames, n_ctx=n_ctx_text,
                         ctx_init=ctx_init if n_ctx_text <= 4 else "", dtype=dtype, init_tail_fixed=True)
        width, device = self.ctx.shape[-1], self.ctx.device
        self.text_prompts = _prompts(max(depth_text - 1, 0), self.n_ctx, width, device)
        self.VPT = _prompts(1, n_ctx_vision, vis_width, device)[0] if depth_vision > 0 else None
        self.vision_prompts = _prompts(max(depth_vision - 1, 0), n_ctx_vision, vis_width, device)

    def deep_prompts(self):
        return self.VPT, [None, *self.text_prompts], [None, *self.vision_prompts]


# The released checkpoint holds the whole CustomCLIP; these are its prompts, and their names here.
RELEASED_NAMES = (("prompt_learner.ctx", "ctx"), ("image_encoder.VPT", "VPT"))
RELEASED_DEEP = (("text_encoder.transformer.resblocks.", "text_prompts."),
                 ("image_encoder.transformer.resblocks.", "vision_prompts."))


@TRAINER_REGISTRY.register()
class IVLP(DeepPromptTrainer):
    CONFIG_NODE = "IVLP"
    MODEL_NAME = "VLPromptLearner"  # the released run folders' model name

    @staticmethod
    def config_defaults(node):
        node.N_CTX_VISION = 2  # vision prompt tokens per layer
        node.N_CTX_TEXT = 2  # text prompt tokens per layer
        node.CTX_INIT = "a photo of a"  # its first N_CTX_TEXT words initialise the text prompt (N_CTX_TEXT <= 4)
        node.PREC = "fp16"  # fp16, fp32, bf16 or amp
        node.PROMPT_DEPTH_VISION = 9  # layers with vision prompts (0: none)
        node.PROMPT_DEPTH_TEXT = 9  # layers with text prompts (1: the input only)

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node, key = cfg.TRAINER[cls.CONFIG_NODE], f"TRAINER.{cls.CONFIG_NODE}"
        vpt_deep = node.N_CTX_TEXT == 0 and node.PROMPT_DEPTH_TEXT == 0  # the text side is CTX_INIT as text
        if not vpt_deep and (node.N_CTX_TEXT < 1 or node.PROMPT_DEPTH_TEXT < 1) or node.PROMPT_DEPTH_VISION < 0:
            raise ValueError(f"{key}.N_CTX_TEXT and PROMPT_DEPTH_TEXT must be at least 1 (or both 0: VPT-deep, the "
                             "hand-crafted text prompt), PROMPT_DEPTH_VISION 0 or more")
        if vpt_deep and node.PROMPT_DEPTH_VISION < 1:
            raise ValueError(f"{key}: with no text prompts (N_CTX_TEXT 0, PROMPT_DEPTH_TEXT 0) PROMPT_DEPTH_VISION "
                             "must be at least 1: nothing would be learned")
        if node.PROMPT_DEPTH_VISION > 0 and node.N_CTX_VISION < 1:
            raise ValueError(f"{key}.N_CTX_VISION must be at least 1 when PROMPT_DEPTH_VISION is set")

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        if node.PROMPT_DEPTH_TEXT > 0:
            self.check_depth("PROMPT_DEPTH_TEXT", node.PROMPT_DEPTH_TEXT, encoders=("text",))
        if node.PROMPT_DEPTH_VISION > 0:
            self.check_depth("PROMPT_DEPTH_VISION", node.PROMPT_DEPTH_VISION, encoders=("vision",))
        vis_width = vision_width(self.clip_model.visual) if node.PROMPT_DEPTH_VISION > 0 else 0
        self.register_prompt_learner(IndependentPromptLearner(
            self.text_encoder, self.tokenizer, self.train_classnames, vis_width, n_ctx_text=node.N_CTX_TEXT,
            n_ctx_vision=node.N_CTX_VISION, ctx_init=node.CTX_INIT, depth_text=node.PROMPT_DEPTH_TEXT,
            depth_vision=node.PROMPT_DEPTH_VISION, dtype=self.head_dtype))

    def released_state(self, state_dict):
        if not any(k.startswith("prompt_learner.") for k in state_dict):
            return state_dict
        state = {ours: state_dict[theirs] for theirs, ours in RELEASED_NAMES if theirs in state_dict}
        for key, value in state_dict.items():
            for theirs, ours in RELEASED_DEEP:
                if key.startswith(theirs) and key.endswith(".VPT_shallow"):
                    layer = int(key[len(theirs):].split(".")[0])
                    state[f"{ours}{layer - 1}"] = value
        return state
