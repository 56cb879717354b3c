"""Classifier heads over frozen CLIP features, for a trainer that chooses its head by config (SHIP's
stage 2: CoOp, CLIP-Adapter or Tip-Adapter-F over base + new classes). A head has

- `name` and `module`: what trains, registered (and saved) under that name;
- `set_classnames(names)`: the class list it scores (the training label space, or the test one);
- `class_weights()`: (n_cls, D) unit-norm class weights of that list (recomputed per step when they learn);
- `logits(features, weights)`: (B, n_cls) of raw image features.

The modules are the methods' own (PromptLearner, AdaptedClassifier, TipCache), so a head's checkpoint
is the method's checkpoint.
"""
import torch

from .adapters import AdaptedClassifier
from .cache_model import TipCache
from .clip import PromptLearner


class PromptHead:
    """CoOp: learnable context tokens before each class name, through the frozen text encoder."""
    name = "prompt_learner"

    def __init__(self, trainer, classnames, n_ctx, ctx_init):
        self.trainer = trainer
        self.module = PromptLearner(trainer.text_encoder, trainer.tokenizer, classnames, n_ctx=n_ctx,
                                    ctx_init=ctx_init)

    def set_classnames(self, classnames):
        self.module.set_classnames(classnames)

    def class_weights(self):
        prompts, tokenized = self.module()
        with self.trainer.autocast():
            return self.trainer.normalize(self.trainer.text_encoder(prompts, tokenized).float())

    def logits(self, features, weights):
        return self.trainer.logit_scale * self.trainer.normalize(features) @ weights.t()


class FixedPromptHead:
    """A head over fixed hand-crafted prompt weights (one per class, the dataset's template)."""

    def set_classnames(self, classnames):
        self.classnames = list(classnames)
        self._weights = self.trainer.prompt_weights(classnames)

    def class_weights(self):
        return self._weights


class AdapterHead(FixedPromptHead):
    """CLIP-Adapter: a residual bottleneck MLP on the image features."""
    name = "clip_adapter"

    def __init__(self, trainer, ratio, reduction):
        self.trainer = trainer
        self.module = AdaptedClassifier(trainer.embed_dim, ratio=ratio, reduction=reduction).to(trainer.device)

    def logits(self, features, weights):
        return self.module(features, weights, self.trainer.logit_scale)


class CacheHead(FixedPromptHead):
    """Tip-Adapter-F: zero-shot logits plus a cache of labelled features with learnable keys, over the
    classes `cache_classnames` (its values' columns); scoring another class list uses their columns."""
    name = "tip_adapter"

    def __init__(self, trainer, cache_classnames, n_keys, zero_shot_scale):
        self.trainer = trainer
        self.cache_classnames = list(cache_classnames)
        self.zero_shot_scale = zero_shot_scale
        self.module = TipCache(n_keys, trainer.embed_dim, len(cache_classnames), learnable=True).to(trainer.device)

    def set_classnames(self, classnames):
        super().set_classnames(classnames)
        missing = [c for c in classnames if c not in self.cache_classnames]
        if missing:
            raise ValueError(f"the Tip-Adapter cache holds no entries for {', '.join(missing[:3])} "
                             f"({len(missing)} classes): it scores only the classes it was built on")
        self._columns = torch.tensor([self.cache_classnames.index(c) for c in classnames],
                                     device=self.trainer.device)

    def logits(self, features, weights, alpha=None, beta=None):
        features = self.trainer.normalize(features)
        return (self.zero_shot_scale * features @ weights.t()
                + self.module(features, alpha, beta)[:, self._columns])
