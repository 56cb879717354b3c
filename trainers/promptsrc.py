"""PromptSRC (Khattak et al., ICCV 2023): IVLP's prompts, self-regularised towards frozen CLIP, and
Gaussian prompt aggregation over the epochs.

As the released `trainers/promptsrc.py`: loss = CE + L_SCL, with
  loss_scl_text  = TEXT_LOSS_WEIGHT  * L1(text features, fixed text features)
  loss_scl_image = IMAGE_LOSS_WEIGHT * L1(image features, frozen image features of the same images)
  L_SCL_logits   = KL(zero-shot || prompted logits), summed and divided by the logits' element count
(all features unit-norm; the fixed text features are the mean over the 60 ImageNet templates of CLIP's
text features of the training classes, normalised; zero-shot logits = scale * frozen image . fixed
text). GPA: at the end of epoch e the prompts are added into an aggregate with weight N(e; GPA_MEAN,
GPA_STD) normalised over epochs 1..MAX_EPOCH; after the last epoch the aggregate is the model.

The released code holds two more CLIP copies for the teachers and aggregates the whole state dict;
here the frozen features come from the CLIP already loaded (the image teacher is CLIP's own encoder
on the batch's images: a cached view would be another crop than the one the student sees) and only
the prompts are aggregated.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.clip import IMAGENET_TEMPLATES
from clipadapt.engine import TRAINER_REGISTRY

from .ivlp import IVLP

GPA_PREFIX = "gpa."


def gaussian_weights(n_epochs, mean, std):
    """GPA's weight of each epoch 1..n_epochs: the N(mean, std) density there, normalised to sum 1."""
    density = [math.exp(-0.5 * ((epoch - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
               for epoch in range(1, n_epochs + 1)]
    total = sum(density)
    return [d / total for d in density]


def self_regularization(text, fixed_text, image, frozen_image, logits, zero_shot_logits, text_weight, image_weight):
    """PromptSRC's three terms under their released names (inputs unit-norm features and logits)."""
    kl = F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(zero_shot_logits, dim=1), reduction="sum",
                  log_target=True) / logits.numel()
    return {"loss_scl_text": F.l1_loss(text, fixed_text.to(text.dtype)) * text_weight,
            "loss_scl_image": F.l1_loss(image, frozen_image.to(image.dtype)) * image_weight,
            "L_SCL_logits": kl}


class PromptAggregate(nn.Module):
    """The running GPA sum of a learner's parameters, as buffers (saved with the checkpoint, so a
    resumed run aggregates what an uninterrupted one does)."""

    def __init__(self, learner):
        super().__init__()
        self.names = [name for name, _ in learner.named_parameters()]
        for name, param in learner.named_parameters():
            self.register_buffer(self._key(name), torch.zeros_like(param, dtype=torch.float32))

    @staticmethod
    def _key(name):
        return name.replace(".", "_")

    def add(self, learner, weight):
        with torch.no_grad():
            for name, param in learner.named_parameters():
                getattr(self, self._key(name)).add_(param.detach().float(), alpha=weight)

    def load_into(self, learner):
        with torch.no_grad():
            for name, param in learner.named_parameters():
                param.copy_(getattr(self, self._key(name)).to(param.dtype))


@TRAINER_REGISTRY.register()
class PromptSRC(IVLP):
    CONFIG_NODE = "PROMPTSRC"
    MODEL_NAME = "VLPromptLearner"  # the released run folders' model name

    @staticmethod
    def config_defaults(node):
        IVLP.config_defaults(node)
        node.N_CTX_VISION = 4
        node.N_CTX_TEXT = 4
        node.TEXT_LOSS_WEIGHT = 25.0  # L1 to the fixed text features
        node.IMAGE_LOSS_WEIGHT = 10.0  # L1 to the frozen image features
        node.GPA_MEAN = 15.0  # epoch of GPA's largest weight
        node.GPA_STD = 1.0

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        if cfg.TRAINER.PROMPTSRC.GPA_STD <= 0:
            raise ValueError("TRAINER.PROMPTSRC.GPA_STD must be > 0")

    def build_model(self):
        super().build_model()
        self.prompt_learner.gpa = PromptAggregate(self.prompt_learner)
        node = self.method_cfg
        self.gpa_weights = gaussian_weights(self.cfg.OPTIM.MAX_EPOCH, node.GPA_MEAN, node.GPA_STD)

    def fixed_text_features(self):
        """Unit-norm mean over the 60 ImageNet templates of CLIP's text features of the training classes."""
        cache = self.__dict__.setdefault("_fixed_text", {})
        key = tuple(self.train_classnames)
        if key not in cache:
            names = [c.replace("_", " ") for c in self.train_classnames]
            total = 0
            for template in IMAGENET_TEMPLATES:
                tokens = self.tokenizer([template.format(n) for n in names]).to(self.device)
                total = total + self.text_encoder.encode_tokenized(tokens, normalize=False).float()
            cache[key] = self.normalize(total / len(IMAGENET_TEMPLATES))
        return cache[key].to(self.head_dtype)

    def forward_backward(self, batch):
        images, label = self.parse_batch_train(batch)
        node = self.method_cfg
        with self.autocast():
            image, text = self.features(images)
            logits = self.logit_scale * image @ text.t()
            loss_ce = F.cross_entropy(logits, label)
            with torch.no_grad():
                fixed = self.fixed_text_features()
                frozen = self.normalize(self.clip_model.visual(images).to(self.head_dtype))
                zero_shot_logits = self.logit_scale * frozen @ fixed.t()
            terms = self_regularization(text, fixed, image, frozen, logits, zero_shot_logits,
                                        node.TEXT_LOSS_WEIGHT, node.IMAGE_LOSS_WEIGHT)
            loss = loss_ce + sum(terms.values())
        return self.finish_step(loss, logits, label, loss_ce=loss_ce, **terms)

    def after_epoch(self):
        """GPA, before the epoch's checkpoint is written: the last epoch saves (and tests) the aggregate."""
        self.prompt_learner.gpa.add(self.prompt_learner, self.gpa_weights[self.epoch])
        if self.epoch + 1 == self.max_epoch:
            print("Using GPA model for final inference...")
            self.prompt_learner.gpa.load_into(self.prompt_learner)
        super().after_epoch()

    def released_state(self, state_dict):
        """A released checkpoint (the aggregated whole CustomCLIP) has no running aggregate: keep ours."""
        state = super().released_state(state_dict)
        if not any(k.startswith(GPA_PREFIX) for k in state):
            state = dict(state, **{k: v for k, v in self.prompt_learner.state_dict().items() if k.startswith(GPA_PREFIX)})
        return state
