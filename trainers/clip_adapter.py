"""CLIP-Adapter (Gao et al., IJCV 2024, arXiv 2110.04544): a bottleneck MLP on CLIP's features,
blended residually with the frozen features; CLIP stays frozen and only the adapter trains.

    f' = alpha * A_v(f) + (1 - alpha) * f            (visual adapter, alpha = RATIO)
    W' = beta  * A_t(W) + (1 - beta)  * W            (optional text adapter, beta = TEXT_RATIO)
    logits = logit_scale * cos(f', W')

The paper's option of learning alpha and beta per dataset with a small hyper-network is
LEARN_RATIO (RatioNet below): (alpha, beta) = sigmoid(MLP(dataset descriptor)), the descriptor being
the normalised mean of the class-prompt text features (docs/CLIPAdapter.md says what the paper leaves
open and what we chose).

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


class RatioNet(nn.Module):
    """The hyper-network of the learned residual ratios: class text features -> (alpha, beta) in (0, 1).

    Input: the dataset descriptor d = normalize(mean_c normalize(W_c)) of the (n_cls, D) classifier
    weights, so the ratios are a property of the dataset (its class list), not of an image.
    Linear(D -> D/r) -> ReLU -> Linear(D/r -> 2) -> sigmoid. The last layer starts at zero weight and
    bias logit(init ratio), so an untrained RatioNet gives exactly the configured RATIO / TEXT_RATIO.
    """

    def __init__(self, dim, reduction=4, init_ratio=0.2, init_text_ratio=0.2):
        super().__init__()
        for name, value in (("init_ratio", init_ratio), ("init_text_ratio", init_text_ratio)):
            if not 0.0 < value < 1.0:
                raise ValueError(f"RatioNet {name} = {value} must lie strictly between 0 and 1 (sigmoid output)")
        hidden = max(dim // reduction, 1)
        self.fc = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 2))
        with torch.no_grad():
            self.fc[2].weight.zero_()
            self.fc[2].bias.copy_(torch.logit(torch.tensor([init_ratio, init_text_ratio])))

    @staticmethod
    def descriptor(text_weights):
        """(n_cls, D) -> (D,): the unit-norm mean of the unit-norm class features."""
        return F.normalize(F.normalize(text_weights, dim=-1).mean(0), dim=-1)

    def forward(self, text_weights):
        alpha, beta = torch.sigmoid(self.fc(self.descriptor(text_weights)))  # scalars in (0, 1)
        return alpha, beta


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

    def __init__(self, dim, ratio=0.2, reduction=4, final_relu=True, visual=True, text=False, text_ratio=0.2,
                 learn_ratio=False, ratio_reduction=4):
        super().__init__()
        self.visual = Adapter(dim, reduction, final_relu) if visual else None
        self.text = Adapter(dim, reduction, final_relu) if text else None
        self.ratio, self.text_ratio = ratio, text_ratio
        # learned ratios: RatioNet's output replaces `ratio` / `text_ratio` (which become its starting values)
        self.ratio_net = RatioNet(dim, ratio_reduction, ratio, text_ratio) if learn_ratio else None

    def ratios(self, text_weights):
        """(alpha, beta) for the class list `text_weights` (n_cls, D): fixed, or RatioNet's."""
        if self.ratio_net is None:
            return self.ratio, self.text_ratio
        return self.ratio_net(text_weights)

    def image_embedding(self, image_features, ratio=None):
        """(B, D) -> unit-norm adapted image features (`ratio`: alpha, default the fixed one)."""
        ratio = self.ratio if ratio is None else ratio
        return F.normalize(residual_blend(image_features, self.visual, ratio), dim=-1)

    def text_embedding(self, text_weights, ratio=None):
        """(n_cls, D) -> unit-norm adapted classifier weights (`ratio`: beta, default the fixed one)."""
        ratio = self.text_ratio if ratio is None else ratio
        return F.normalize(residual_blend(text_weights, self.text, ratio), dim=-1)

    def forward(self, image_features, text_weights, logit_scale):
        alpha, beta = self.ratios(text_weights)
        return logit_scale * self.image_embedding(image_features, alpha) @ self.text_embedding(text_weights, beta).t()

    def extra_repr(self):
        learned = ", learned by RatioNet from these" if self.ratio_net is not None else ""
        return f"ratio={self.ratio}, text_ratio={self.text_ratio}{learned}"


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
        node.LEARN_RATIO = False  # the paper's option: alpha, beta from a hyper-network (RatioNet), per dataset;
        #                           RATIO / TEXT_RATIO are then its starting values
        node.RATIO_REDUCTION = 4  # RatioNet's hidden width D / 4 (ours: the paper gives no size)
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
            if node.LEARN_RATIO and not 0.0 < node[key] < 1.0:
                raise ValueError(f"TRAINER.CLIP_ADAPTER.{key} = {node[key]}: with LEARN_RATIO it is the learned "
                                 "ratio's starting value and must lie strictly between 0 and 1")
        if node.RATIO_REDUCTION < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.RATIO_REDUCTION = {node.RATIO_REDUCTION} must be >= 1")
        if node.REDUCTION < 1:
            raise ValueError(f"TRAINER.CLIP_ADAPTER.REDUCTION = {node.REDUCTION} must be >= 1")

    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        dim = self.embed_dim
        self.classifier = AdaptedClassifier(
            dim, ratio=node.RATIO, reduction=node.REDUCTION, final_relu=node.FINAL_RELU,
            visual=node.VISUAL_ADAPTER, text=node.TEXT_ADAPTER, text_ratio=node.TEXT_RATIO,
            learn_ratio=node.LEARN_RATIO, ratio_reduction=node.RATIO_REDUCTION,
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
        # The text adapter and the ratios are fixed during evaluation: compute them once for the test classes.
        text_weights = self.text_weights(self.classnames)
        self.eval_ratio, text_ratio = self.classifier.ratios(text_weights)
        self.eval_text_embedding = self.classifier.text_embedding(text_weights, text_ratio)
        if self.classifier.ratio_net is not None:
            print(f"Learned ratios for these {len(self.classnames)} classes: alpha = {float(self.eval_ratio):.4f}, "
                  f"beta = {float(text_ratio):.4f}" + ("" if self.classifier.text is not None else " (unused: no text adapter)"))

    def model_inference(self, image_features):
        image = self.classifier.image_embedding(image_features, self.eval_ratio)
        return self.logit_scale * image @ self.eval_text_embedding.t()
