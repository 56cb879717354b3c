"""CoCoOp (Zhou et al., CVPR 2022): CoOp's context shifted per image by a meta-net of the image feature.

As the released `trainers/cocoop.py`: logits_i = scale * f_i . norm(T(ctx + meta_net(f_i), class)) for
every class, with f_i the normalised frozen image feature; the loss is the cross-entropy. The image
encoder is frozen and unprompted, so f comes from the feature cache; what costs is the text side,
B x n_cls prompts per step, which runs cut to the longest EOT (clipadapt.clip.text) and, at evaluation,
in passes of at most EVAL_TEXT_BATCH prompts so that 100 test images x 1000 ImageNet classes fit.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.clip import PromptLearner
from clipadapt.engine import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipadapt.trainer import ClipTrainer


class ConditionalPromptLearner(PromptLearner):
    """CoOp's context plus the meta-net (Linear(D, D/16), ReLU, Linear(D/16, width)); the parameters
    are named as the released ones (`ctx`, `meta_net.linear1.*`, `meta_net.linear2.*`), so a released
    checkpoint loads."""

    def __init__(self, text_encoder, tokenizer, classnames, vis_dim, n_ctx=16, ctx_init="", dtype=torch.float32):
        super().__init__(text_encoder, tokenizer, classnames, n_ctx=n_ctx, ctx_init=ctx_init, dtype=dtype)
        width = self.ctx.shape[-1]
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(vis_dim, vis_dim // 16)),
            ("relu", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(vis_dim // 16, width)),
        ])).to(device=self.ctx.device, dtype=dtype)  # fp16 under PREC fp16, as released


def conditional_logits(prompt_learner, text_encoder, image_features, logit_scale, max_prompts=None):
    """(B, n_cls) CoCoOp logits of `image_features` (B, D), normalised here. The B x n_cls prompts go
    through the text encoder in passes of at most `max_prompts` (None: one pass; whole images per pass)."""
    dtype = prompt_learner.ctx.dtype
    feats = F.normalize(image_features.to(dtype), dim=-1)
    bias = prompt_learner.meta_net(feats)  # (B, width): one shift per image, added to every context token
    n_cls = prompt_learner.n_cls
    classes = torch.arange(n_cls, device=feats.device)
    per_pass = len(feats) if max_prompts is None else max(1, max_prompts // n_cls)
    logits = []
    for start in range(0, len(feats), per_pass):
        f, b = feats[start:start + per_pass], bias[start:start + per_pass]
        prompts, tokenized = prompt_learner(classes.repeat(len(f)), ctx_shift=b.repeat_interleave(n_cls, dim=0))
        text = F.normalize(text_encoder(prompts, tokenized).to(dtype), dim=-1).view(len(f), n_cls, -1)
        logits.append(logit_scale * torch.einsum("bd,bcd->bc", f, text))
    return torch.cat(logits)


@TRAINER_REGISTRY.register()
class CoCoOp(ClipTrainer):
    CONFIG_NODE = "COCOOP"

    @staticmethod
    def config_defaults(node):
        node.N_CTX = 16  # number of context tokens (the released default; its configs use 4)
        node.CTX_INIT = ""  # e.g. "a photo of a" (then N_CTX = its token count)
        node.PREC = "fp16"  # fp16, fp32, bf16 or amp
        node.EVAL_TEXT_BATCH = 2000  # prompts per text-encoder pass at evaluation: memory only

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.COCOOP.EVAL_TEXT_BATCH < 1:
            raise ValueError("TRAINER.COCOOP.EVAL_TEXT_BATCH must be at least 1 (prompts per text-encoder pass)")

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        self.prompt_learner = ConditionalPromptLearner(
            self.text_encoder, self.tokenizer, self.train_classnames, vis_dim=self.embed_dim, n_ctx=node.N_CTX,
            ctx_init=node.CTX_INIT, dtype=self.head_dtype)
        self.load_init_weights(self.prompt_learner, "prompt_learner")
        self.optim = build_optimizer(self.prompt_learner, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, self.optim, self.sched)

    def logits(self, image_features, max_prompts=None):
        return conditional_logits(self.prompt_learner, self.text_encoder, image_features,
                                  self.logit_scale, max_prompts)

    def before_epoch(self):
        self.prompt_learner.set_classnames(self.train_classnames)

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        with self.autocast():
            output = self.logits(image_features)
            loss = F.cross_entropy(output, label)
        return self.finish_step(loss, output, label)

    def prepare_eval(self):
        self.prompt_learner.set_classnames(self.classnames)

    def model_inference(self, image_features):
        return self.logits(image_features, self.method_cfg.EVAL_TEXT_BATCH)
