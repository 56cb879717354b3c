"""CLIP-Adapter's modules (Gao et al., arXiv 2110.04544), used by the CLIPAdapter trainer and by SHIP's
CLIP-Adapter stage 2: the bottleneck adapter, the residual blend, the learned-ratio hyper-network
(RatioNet) and AdaptedClassifier, which holds everything CLIP-Adapter learns.

    adapter = Adapter(dim, reduction=4, final_relu=True)
    logits = adapter_logits(features, text_weights, logit_scale, adapter, ratio)
    classifier = AdaptedClassifier(dim, ratio=0.2, visual=True, text=False)
    logits = classifier(features, text_weights, logit_scale)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


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
