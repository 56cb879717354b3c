"""CLIP-Adapter (Gao et al., IJCV 2024, arXiv 2110.04544): a bottleneck MLP on CLIP's features,
blended residually with the frozen features; CLIP stays frozen and only the adapter trains.

    f' = alpha * A_v(f) + (1 - alpha) * f            (visual adapter, alpha = RATIO)
    W' = beta  * A_t(W) + (1 - beta)  * W            (optional text adapter, beta = TEXT_RATIO)
    logits = logit_scale * cos(f', W')

W holds the text features of one hand-crafted prompt per class (CoOp's per-dataset template),
computed once. The modules below work without the trainer (SHIP + CLIP-Adapter trains them on
real and synthetic features):

    adapter = Adapter(dim, reduction=4, final_relu=True)
    logits = adapter_logits(features, text_weights, logit_scale, adapter, ratio)
    classifier = AdaptedClassifier(dim, ratio=0.2, visual=True, text=False)
    logits = classifier(features, text_weights, logit_scale)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.clip import prompts_for
from clipadapt.engine import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipadapt.engine.builtin.utils import load_checkpoint
from clipadapt.trainer import ClipTrainer


# ----- modules -----------------------------------------------------------------------------------
class Adapter(nn.Module):
    """Linear(dim -> dim/r, no bias) -> ReLU -> Linear(dim/r -> dim, no bias) [-> ReLU].

    The released code ends with a ReLU (so A(x) >= 0); the paper's equation does not: `final_relu`.
    The parameters are named `fc.0.weight` / `fc.2.weight`, as in the released code.
    """

    def __init__(self, dim, reduction=4, final_relu=True):
        super().__init__()
        hidden = dim // reduction
        if hidden < 1:
            raise ValueError(f"Adapter reduction {reduction} leaves no hidden unit for feature dim {dim}")
        layers = [nn.Linear(dim, hidden, bias=False), nn.ReLU(), nn.Linear(hidden, dim, bias=False)]
        if final_relu:
            layers.append(nn.ReLU())
        self.fc = nn.Sequential(*layers)
        self.dim, self.reduction, self.final_relu = dim, reduction, final_relu

    def forward(self, x):
        return self.fc(x)  # (..., dim)

    def extra_repr(self):
        return f"dim={self.dim}, reduction={self.reduction}, final_relu={self.final_relu}"


def residual_blend(features, adapter, ratio):
    """ratio * adapter(features) + (1 - ratio) * features; the features themselves without an adapter."""
    if adapter is None:
        return features
    return ratio * adapter(features) + (1 - ratio) * features


def adapter_logits(image_features, text_weights, logit_scale, adapter=None, ratio=0.2, text_adapter=None,
                   text_ratio=0.2):
    """logit_scale * cos(blend(image_features), blend(text_weights)): (B, D), (n_cls, D) -> (B, n_cls).

    Neither input needs to be normalised: both are normalised after their blend. The adapters are
    positively homogeneous (no bias, ReLU), so scaling an input does not change the logits.
    """
    image = F.normalize(residual_blend(image_features, adapter, ratio), dim=-1)
    text = F.normalize(residual_blend(text_weights, text_adapter, text_ratio), dim=-1)
    return logit_scale * image @ text.t()


class AdaptedClassifier(nn.Module):
    """The visual and (optional) text adapters with their ratios: everything CLIP-Adapter learns.

    Class names never enter its state dict (the text weights are an input), so a checkpoint trained on
    some classes evaluates on any others (base -> new, GZSL, cross-dataset).
    """

    def __init__(self, dim, ratio=0.2, reduction=4, final_relu=True, visual=True, text=False, text_ratio=0.2):
        super().__init__()
        self.visual = Adapter(dim, reduction, final_relu) if visual else None
        self.text = Adapter(dim, reduction, final_relu) if text else None
        self.ratio, self.text_ratio = ratio, text_ratio

    def image_embedding(self, image_features):
        """(B, D) -> unit-norm adapted image features."""
        return F.normalize(residual_blend(image_features, self.visual, self.ratio), dim=-1)

    def text_embedding(self, text_weights):
        """(n_cls, D) -> unit-norm adapted classifier weights."""
        return F.normalize(residual_blend(text_weights, self.text, self.text_ratio), dim=-1)

    def forward(self, image_features, text_weights, logit_scale):
        return logit_scale * self.image_embedding(image_features) @ self.text_embedding(text_weights).t()

    def extra_repr(self):
        return f"ratio={self.ratio}, text_ratio={self.text_ratio}"


# ----- trainer -----------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class CLIPAdapter(ClipTrainer):
    CONFIG_NODE = "CLIP_ADAPTER"

    @staticmethod
    def config_defaults(node):
        node.RATIO = 0.2  # alpha: the released code's value (paper: ~0.2 generic, ~0.6 fine-grained)
        node.REDUCTION = 4  # bottleneck D -> D/4 (paper and released code)
        node.FINAL_RELU = True  # ReLU after the second layer, as in the released code
        node.VISUAL_ADAPTER = True  # A_v on image features (paper's default variant)
        node.TEXT_ADAPTER = False  # A_t on the classifier weights (paper's variants)
        node.TEXT_RATIO = 0.2  # beta
        node.PREC = "fp16"  # frozen CLIP's precision (fp16, fp32, bf16, amp); adapter is fp32
        node.TEMPLATE = ""  # "" = the dataset's CoOp template

    def check_cfg(self, cfg):
        node = cfg.TRAINER.CLIP_ADAPTER
        if node.PREC not in ("fp16", "fp32", "bf16", "amp"):
            raise ValueError(f'TRAINER.CLIP_ADAPTER.PREC "{node.PREC}" must be fp16, fp32, bf16 or amp')
        if not (node.VISUAL_ADAPTER or node.TEXT_ADAPTER):
            raise ValueError("TRAINER.CLIP_ADAPTER: VISUAL_ADAPTER and TEXT_ADAPTER are both False: nothing to train")
        for key in ("RATIO", "TEXT_RATIO"):
            if not 0.0 <= node[key] <= 1.0:
                raise ValueError(f"TRAINER.CLIP_ADAPTER.{key} = {node[key]} must lie in [0, 1]")
        if node.REDUCTION < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.REDUCTION = {node.REDUCTION} must be >= 1")

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        dim = self.embed_dim
        self.classifier = AdaptedClassifier(
            dim, ratio=node.RATIO, reduction=node.REDUCTION, final_relu=node.FINAL_RELU,
            visual=node.VISUAL_ADAPTER, text=node.TEXT_ADAPTER, text_ratio=node.TEXT_RATIO,
        ).to(self.device)  # float32 whatever PREC: features are cast to float32 before it
        if self.cfg.MODEL.INIT_WEIGHTS:
            state = load_checkpoint(self.cfg.MODEL.INIT_WEIGHTS)
            self.classifier.load_state_dict(state.get("state_dict", state))
        n_params = sum(p.numel() for p in self.classifier.parameters())
        print(f"CLIP-Adapter: D = {dim}, {n_params:,} trainable parameters ({self.classifier.extra_repr()})")
        self._text_weights = {}
        self.train_text_weights = self.text_weights(self.train_classnames)
        self.optim = build_optimizer(self.classifier, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("clip_adapter", self.classifier, self.optim, self.sched)

    def text_weights(self, classnames):
        """(n_cls, D) unit-norm features of the hand-crafted prompts, encoded once per class list."""
        key = tuple(classnames)
        if key not in self._text_weights:
            prompts = prompts_for(classnames, self.cfg.DATASET.NAME, self.method_cfg.TEMPLATE)
            print(f"Prompts: {prompts[:3]}{' ...' if len(prompts) > 3 else ''}")
            self._text_weights[key] = self.encode_texts(prompts).float()
        return self._text_weights[key]

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        output = self.classifier(image_features, self.train_text_weights, self.logit_scale)  # (B, n_cls)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        self.end_of_epoch_lr_step()
        return {"loss": loss.item(), "acc": (output.argmax(1) == label).float().mean().item() * 100}

    @torch.no_grad()
    def prepare_eval(self):
        # The text adapter is fixed during evaluation: adapt the test classes' weights once.
        self.eval_text_embedding = self.classifier.text_embedding(self.text_weights(self.classnames))

    def model_inference(self, image_features):
        return self.logit_scale * self.classifier.image_embedding(image_features) @ self.eval_text_embedding.t()
