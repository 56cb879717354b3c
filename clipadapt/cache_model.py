"""Tip-Adapter's cache model (Zhang et al., ECCV 2022), written once for TipAdapter, TipAdapterF and
SHIP's `tip_adapter_f` stage 2. The math and its order of operations follow the released code
(`gaopengcuhk/Tip-Adapter` `main.py`, `utils.py`):

    keys    K = normalize(mean over AUGMENT_EPOCH augmented views of the raw training features)   (N, D)
    values  L = one-hot training labels                                                         (N, C)
    logits  = s * f W^T + alpha * exp(-(beta - beta * f K^T)) L        f, W unit-norm; s = 100

Tip-Adapter-F makes K learnable (an nn.Linear(D, N) whose weight starts as K). alpha and beta are
chosen on the validation split by a grid search (`search_alpha_beta`).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

# The released configs (configs/<dataset>.yaml at d0e2d6f): init_alpha, search_scale [beta, alpha] and
# train_epoch; init_beta is 1, search_step [200, 20] and augment_epoch 10 in every one.
RELEASED = {
    "Caltech101": dict(init_alpha=3.0, search_scale=(12, 5), train_epoch=20),
    "DescribableTextures": dict(init_alpha=2.0, search_scale=(13, 13), train_epoch=20),
    "EuroSAT": dict(init_alpha=2.0, search_scale=(12, 10), train_epoch=100),
    "FGVCAircraft": dict(init_alpha=5.0, search_scale=(30, 30), train_epoch=20),
    "Food101": dict(init_alpha=1.17, search_scale=(10, 10), train_epoch=20),
    "ImageNet": dict(init_alpha=1.17, search_scale=(7, 3), train_epoch=20),
    "OxfordFlowers": dict(init_alpha=10.0, search_scale=(50, 50), train_epoch=20),
    "OxfordPets": dict(init_alpha=1.17, search_scale=(7, 3), train_epoch=20),
    "StanfordCars": dict(init_alpha=3.0, search_scale=(20, 10), train_epoch=20),
    "SUN397": dict(init_alpha=1.17, search_scale=(12, 10), train_epoch=20),
    "UCF101": dict(init_alpha=3.0, search_scale=(7, 3), train_epoch=20),
}


def released_value(dataset_name, key, default=None):
    """The released config's `key` for a dataset (DATASET.NAME), or `default` where it has none."""
    return RELEASED.get(dataset_name, {}).get(key, default)


def cache_keys(views):
    """(N, D) unit-norm keys from a list of (N, D) raw feature tensors, one per augmented view: the
    views are averaged before normalising, as the released `build_cache_model` does."""
    keys = torch.stack([v.float() for v in views]).mean(dim=0)
    return keys / keys.norm(dim=-1, keepdim=True)


def cache_values(labels, num_classes):
    """(N, C) one-hot values of the cache's labels."""
    return F.one_hot(labels.long(), num_classes).float()


def cache_logits(affinity, values, beta):
    """exp(-(beta - beta * affinity)) L, written as the released code writes it."""
    return ((-1) * (beta - beta * affinity)).exp() @ values


def search_grid(scale, steps):
    """The released `search_hp` grid: `steps` values from 0.1 up to (not including) `scale`."""
    return [i * (scale - 0.1) / steps + 0.1 for i in range(steps)]


def accuracy(logits, labels):
    return 100.0 * (logits.argmax(dim=1) == labels).float().mean().item()


def search_alpha_beta(affinity, values, clip_logits, labels, scale, steps, log=print):
    """The released grid search: beta over search_grid(scale[0], steps[0]) (outer), alpha over
    search_grid(scale[1], steps[1]) (inner); the first setting with a strictly better accuracy wins.
    Returns (beta, alpha, accuracy). `affinity` is f K^T of the search split's unit-norm features."""
    best = (0.0, 0.0, 0.0)
    for beta in search_grid(scale[0], steps[0]):
        residual = cache_logits(affinity, values, beta)  # one exp per beta (alpha only scales it)
        for alpha in search_grid(scale[1], steps[1]):
            acc = accuracy(clip_logits + residual * alpha, labels)
            if acc > best[2]:
                log(f"New best setting, beta: {beta:.2f}, alpha: {alpha:.2f}; accuracy: {acc:.2f}")
                best = (beta, alpha, acc)
    return best


def released_optimizer(parameters, optim_cfg, iterations):
    """Tip-Adapter-F's optimiser and schedule: AdamW (OPTIM.LR, OPTIM.EPS, OPTIM.WEIGHT_DECAY, betas) and a
    cosine over every iteration of OPTIM.MAX_EPOCH epochs, to be stepped once per iteration."""
    if optim_cfg.NAME != "adamw":
        raise ValueError(f"OPTIM.NAME {optim_cfg.NAME}: the Tip-Adapter-F cache trains with AdamW, as released")
    optim = torch.optim.AdamW(parameters, lr=optim_cfg.LR, eps=optim_cfg.EPS, weight_decay=optim_cfg.WEIGHT_DECAY,
                              betas=(optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2))
    return optim, torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=optim_cfg.MAX_EPOCH * iterations)


class TipCache(nn.Module):
    """The cache: keys as `adapter` (nn.Linear(D, N), weight K, the released name), one-hot `values`,
    and the deployed `alpha` and `beta` (buffers, so a checkpoint holds what its evaluation uses)."""

    def __init__(self, n_keys, dim, num_classes, learnable=False, dtype=torch.float32):
        super().__init__()
        self.adapter = nn.Linear(dim, n_keys, bias=False, dtype=dtype)  # the released code's clip_model.dtype
        self.adapter.weight.requires_grad_(learnable)
        self.register_buffer("values", torch.zeros(n_keys, num_classes))
        self.register_buffer("alpha", torch.tensor(1.0, dtype=torch.float64))  # Python floats in the released code
        self.register_buffer("beta", torch.tensor(1.0, dtype=torch.float64))

    @torch.no_grad()
    def fill(self, keys, values, alpha, beta):
        self.adapter.weight.copy_(keys)
        self.values.copy_(values)
        self.set_hparams(alpha, beta)

    @torch.no_grad()
    def set_hparams(self, alpha, beta):
        self.alpha.fill_(alpha)
        self.beta.fill_(beta)

    def affinity(self, features):
        """(B, N) f K^T of unit-norm features."""
        return self.adapter(features.to(self.adapter.weight.dtype))

    def forward(self, features, alpha=None, beta=None):
        """(B, C) alpha * exp(-(beta - beta f K^T)) L, at the deployed alpha and beta unless given."""
        alpha = self.alpha.item() if alpha is None else alpha
        beta = self.beta.item() if beta is None else beta
        affinity = self.affinity(features)
        return cache_logits(affinity, self.values.to(affinity.dtype), beta) * alpha
