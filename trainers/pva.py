"""PVA (Lu et al., ECCV 2024): variational adapters in a shared latent space, base/novel separation.

CLIP stays frozen. A visual and a textual variational adapter map CLIP's image feature and the
feature of a learnable-token prompt (CoOp context) into one latent space as diagonal Gaussians
q = N(mu, sigma^2); the visual adapter holds learnable tokens of its own (read by attention,
VISUAL_TOKENS). A latent z is mapped back to CLIP's D-dim space and classified there by scaled
cosine against the adapted text features. Training sees base classes only: cross-entropy +
BETA_KL * KL(q || N(0, I)) of both modalities + GAMMA * image-text alignment (KLs in nats per
latent dimension).

At test time a sample's latent Gaussian is compared with the base prototypes (Gaussians calibrated
on the base training data at the end of training, saved in the checkpoint), by negative KL
(MEASURE kl, uses the variance), cosine or Euclidean distance of the means; with MC_SAMPLES > 0
by Monte-Carlo samples of z. Base-like samples (score >= tau) go to the fine-tuned classifier,
novel-like ones to the classifier that retains generalization (NOVEL_CLASSIFIER: zero-shot text
against the adapted image feature refined with CLIP's, f_out = f_adapter + lambda f_CLIP, or plain
CLIP zero-shot); RESIDUAL_SCOPE all refines every sample as well. No code of the paper is public;
docs/PVA.md tables what is the paper's and what is ours (each of those is a key below).
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.clip import PromptLearner
from clipadapt.config import choice_error
from clipadapt.engine import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipadapt.trainer import ClipTrainer

ALIGNS = ("cosine", "kl")
PROTOTYPES = ("image", "text")
MEASURES = ("kl", "cosine", "euclidean")
RESIDUAL_SCOPES = ("novel", "all")
NOVEL_CLASSIFIERS = ("adapted", "zeroshot")


# ----- the method's math, as functions (tested against hand computations) ------------------------
def kl_to_standard_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, summed over latent dims: (..., L) -> (...)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def kl_gaussians(mu_q, logvar_q, mu_p, logvar_p):
    """KL(q || p) of diagonal Gaussians, row by row: (..., L) x (..., L) -> (...)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0).sum(-1)


def pairwise_kl(mu_q, logvar_q, mu_p, logvar_p):
    """KL(q_i || p_k) for every pair: (B, L) x (K, L) -> (B, K), by matmuls (no (B, K, L) tensor)."""
    inv_var_p = (-logvar_p).exp()  # (K, L)
    quad = (mu_q.pow(2) + logvar_q.exp()) @ inv_var_p.t() - 2 * mu_q @ (mu_p * inv_var_p).t() \
        + (mu_p.pow(2) * inv_var_p).sum(-1)  # sum_l (var_q + (mu_q - mu_p)^2) / var_p
    log_det = logvar_p.sum(-1)[None, :] - logvar_q.sum(-1)[:, None]
    return 0.5 * (quad + log_det - mu_q.shape[-1])


def pairwise_log_density(z, mu_p, logvar_p):
    """log N(z_i; mu_k, diag exp(logvar_k)) for every pair: (B, L) x (K, L) -> (B, K)."""
    inv_var_p = (-logvar_p).exp()  # (K, L)
    quad = z.pow(2) @ inv_var_p.t() - 2 * z @ (mu_p * inv_var_p).t() + (mu_p.pow(2) * inv_var_p).sum(-1)
    return -0.5 * (quad + logvar_p.sum(-1)[None, :] + z.shape[-1] * math.log(2 * math.pi))


def gaussian_entropy(logvar):
    """Differential entropy of N(., diag exp(logvar)): (..., L) -> (...)."""
    return 0.5 * (logvar.shape[-1] * (1.0 + math.log(2 * math.pi)) + logvar.sum(-1))


def sample_latents(mu, logvar, n_samples, generator=None):
    """n_samples draws z = mu + sigma * eps: (B, L) -> (n_samples, B, L); the generator makes them
    reproducible."""
    eps = torch.randn((n_samples, *mu.shape), generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * logvar).exp() * eps


def prototype_similarity(measure, mu, logvar, proto_mu, proto_logvar, samples=None):
    """Similarity of each sample's latent Gaussian to each prototype Gaussian: (B, L) -> (B, K).

    kl: -KL(q_x || p_k) (uses both variances); cosine: cos of the means; euclidean: -|mu - p_k|^2 / 2
    (= -KL with every variance 1: the means only). With `samples` (S, B, L), Monte-Carlo estimates:
    kl: mean_s log p_k(z_s) + H(q_x), an unbiased estimate of -KL(q_x || p_k); cosine and
    euclidean: the mean over samples of the measure applied to z_s.
    """
    if samples is None:
        if measure == "kl":
            return -pairwise_kl(mu, logvar, proto_mu, proto_logvar)
        samples = mu[None]
    if measure == "kl":
        log_density = torch.stack([pairwise_log_density(z, proto_mu, proto_logvar) for z in samples])
        return log_density.mean(0) + gaussian_entropy(logvar)[:, None]
    if measure == "cosine":
        protos = F.normalize(proto_mu, dim=-1)
        return torch.stack([F.normalize(z, dim=-1) @ protos.t() for z in samples]).mean(0)
    return torch.stack([-0.5 * torch.cdist(z, proto_mu).pow(2) for z in samples]).mean(0)


def moment_matched_prototypes(mu, logvar, labels, n_classes):
    """Per-class Gaussian that matches the first two moments of the mixture of the class's sample
    Gaussians: mean of the means; variance = mean of the variances + variance of the means.
    (N, L), (N,) -> (n_classes, L) means and log-variances."""
    onehot = F.one_hot(labels, n_classes).to(mu.dtype)  # (N, K)
    counts = onehot.sum(0).clamp_min(1)[:, None]
    mean = onehot.t() @ mu / counts
    second_moment = onehot.t() @ (logvar.exp() + mu.pow(2)) / counts
    return mean, (second_moment - mean.pow(2)).clamp_min(1e-6).log()


def alignment_loss(kind, mu_v, logvar_v, mu_t, logvar_t):
    """Cross-modal alignment of each image with its label's text latent, averaged over the batch.

    cosine: 1 - cos(mu_v, mu_t); kl: KL(q_v || q_t) in closed form, in nats per latent dimension.
    """
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(mu_v, mu_t, dim=-1)).mean()
    return kl_gaussians(mu_v, logvar_v, mu_t, logvar_t).mean() / mu_v.shape[-1]


def mean_probability_logits(logits):
    """Logits of the Monte-Carlo predictive distribution: log mean_s softmax(logits_s): (S, B, C) -> (B, C)."""
    return torch.logsumexp(F.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


def auroc(scores, positive):
    """Area under the ROC curve of `scores` for positives vs negatives (Mann-Whitney rank formula,
    ties get their average rank). Returns nan when one of the two groups is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    start = 0
    while start < len(scores):  # 1-based ranks, ties averaged
        end = start
        while end + 1 < len(scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# ----- modules ------------------------------------------------------------------------------------
class VariationalAdapter(nn.Module):
    """x (N, D) unit-norm -> (mu, logvar) (N, L): learnable tokens (optional), then a bottleneck MLP
    with a mean and a log-variance head.

    The input is scaled by sqrt(D) (per-dimension RMS 1), the scale of the N(0, I) prior, so the
    KL terms and sigma = exp(INIT_LOGVAR / 2) are measured against the features' own spread.
    With `n_tokens`, the adapter holds learnable tokens T (n_tokens, D) that the feature reads by
    attention: x + softmax(x T^T) T. With `skip`, mu = skip(x) + MLP(x) and the mean head starts at
    zero, so training starts from CLIP's own space. With `variational` off the adapter is
    deterministic: z = mu, and logvar is 0 (unit variance) where a measure needs one.
    """

    def __init__(self, in_dim, latent_dim, hidden, variational=True, skip=True, init_logvar=-2.0, n_tokens=0):
        super().__init__()
        self.variational = variational
        self.input_scale = math.sqrt(in_dim)
        self.tokens = nn.Parameter(torch.randn(n_tokens, in_dim) * 0.02) if n_tokens > 0 else None
        self.body = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True))
        self.mu_head = nn.Linear(hidden, latent_dim)
        self.skip = None
        if skip:
            self.skip = nn.Identity() if in_dim == latent_dim else nn.Linear(in_dim, latent_dim, bias=False)
            nn.init.zeros_(self.mu_head.weight)
            nn.init.zeros_(self.mu_head.bias)
        self.logvar_head = None
        if variational:
            self.logvar_head = nn.Linear(hidden, latent_dim)
            nn.init.zeros_(self.logvar_head.weight)
            nn.init.constant_(self.logvar_head.bias, init_logvar)

    def forward(self, x):
        if self.tokens is not None:
            x = x + torch.softmax(x @ self.tokens.t(), dim=-1) @ self.tokens  # (N, D)
        x = self.input_scale * x
        h = self.body(x)
        mu = self.mu_head(h)
        if self.skip is not None:
            mu = mu + self.skip(x)
        logvar = self.logvar_head(h) if self.logvar_head is not None else torch.zeros_like(mu)
        return mu, logvar  # (N, L) each

    def sample(self, mu, logvar):
        """z = mu + sigma * eps while training a variational adapter; mu otherwise."""
        if self.variational and self.training:
            return mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        return mu


class PVAModel(nn.Module):
    """Everything PVA learns or calibrates: prompt context, both adapters, the latent -> CLIP map,
    and the router's state (base prototype Gaussians and tau), which depend on the base training
    classes only and are saved in the checkpoint."""

    def __init__(self, prompt_learner, embed_dim, node):
        super().__init__()
        latent = node.LATENT_DIM or embed_dim
        hidden = node.HIDDEN or max(embed_dim // 4, 1)
        self.prompt_learner = prompt_learner
        kw = dict(variational=node.VARIATIONAL, skip=node.ADAPTER_SKIP, init_logvar=node.INIT_LOGVAR)
        n_visual_tokens = node.N_VISUAL_TOKENS if node.VISUAL_TOKENS else 0
        self.visual = VariationalAdapter(embed_dim, latent, hidden, n_tokens=n_visual_tokens, **kw)
        self.textual = VariationalAdapter(embed_dim, latent, hidden, **kw)  # its tokens: the prompt context
        # f_adapter: the latent back in CLIP's embedding space (shared by both modalities).
        self.to_clip = nn.Identity() if latent == embed_dim else nn.Linear(latent, embed_dim, bias=False)
        self.lam = float(node.LAMBDA) if node.RESIDUAL else 0.0
        # Router state, set by calibration on the base training data. Resized on load to the
        # checkpoint's shape, so it does not depend on the test class list.
        self.register_buffer("tau", torch.zeros(()))
        self.register_buffer("prototypes", torch.zeros(0, latent))  # (n_base, L) means
        self.register_buffer("prototype_logvar", torch.zeros(0, latent))  # (n_base, L)

    @property
    def calibrated(self):
        return self.prototypes.shape[0] > 0

    def refine(self, z, clip_feature, residual):
        """f_out = norm(f_adapter) [+ lambda * norm(f_CLIP) with `residual`], then unit-norm: (..., D)."""
        out = F.normalize(self.to_clip(z), dim=-1)
        if residual and self.lam:
            out = out + self.lam * F.normalize(clip_feature, dim=-1)
        return F.normalize(out, dim=-1)

    def score(self, mu, logvar, measure, samples=None):
        """s(x): similarity of each sample's latent to its closest base prototype: (B, L) -> (B,)."""
        sim = prototype_similarity(measure, mu, logvar, self.prototypes, self.prototype_logvar, samples)
        return sim.max(dim=1).values  # (B,)


# ----- trainer ------------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class PVA(ClipTrainer):
    CONFIG_NODE = "PVA"

    @staticmethod
    def config_defaults(node):
        # Learnable tokens: text (CoOp context through clipadapt.clip.PromptLearner) and visual.
        node.N_CTX = 4  # number of learnable context tokens (ignored when CTX_INIT is set)
        node.CTX_INIT = "a photo of a"  # initial context ("" = random, N_CTX tokens)
        node.PREC = "fp16"  # fp16, fp32, bf16 or amp (the frozen CLIP's precision)
        node.VISUAL_TOKENS = True  # learnable tokens in the visual adapter (the description: in each adapter)
        node.N_VISUAL_TOKENS = 4  # their number
        # Adapters and the shared latent space.
        node.LATENT_DIM = 0  # L; 0 = D, CLIP's embedding dim (the latent map is then the identity)
        node.HIDDEN = 0  # adapter bottleneck width; 0 = D // 4
        node.ADAPTER_SKIP = True  # mu = skip(x) + MLP(x), MLP's mean head starting at zero
        node.INIT_LOGVAR = -2.0  # initial log sigma^2 (features have per-dim RMS 1: sigma 0.37 of it)
        node.LOGIT_SCALE = 0.0  # scale of the cosine logits; 0 = CLIP's learned exp(logit_scale)
        # Loss (KL terms in nats per latent dimension).
        node.VARIATIONAL = True  # off: deterministic adapters (z = mu), no KL term
        node.BETA_KL = 0.1  # weight of KL(q_v || N(0,I)) + KL(q_t || N(0,I))
        node.GAMMA = 1.0  # weight of the cross-modal alignment term
        node.ALIGN = "cosine"  # cosine (1 - cos of the means) or kl (KL(q_v || q_t) in closed form)
        # Residual refinement with CLIP's features.
        node.RESIDUAL = True  # off: lambda = 0
        node.LAMBDA = 1.0  # f_out = f_adapter + LAMBDA * f_CLIP
        node.RESIDUAL_SCOPE = "novel"  # novel: novel-like samples only (the description); all: every sample, in training too
        # Base / novel separation.
        node.SEPARATION = True  # off: every sample through the fine-tuned classifier
        node.NOVEL_CLASSIFIER = "adapted"  # adapted: zero-shot text vs the refined adapted feature; zeroshot: plain CLIP
        node.PROTOTYPE = "image"  # image (moment-matched Gaussian of base training latents per class) or text
        node.MEASURE = "kl"  # kl (-KL(q_x || prototype), uses the variance), cosine or euclidean (means only)
        node.MC_SAMPLES = 0  # > 0: that many samples of z at test time (routing and classification); 0: closed form / z = mu
        node.TAU_PERCENTILE = 10.0  # tau = this percentile of base training scores; < 0: fixed TAU
        node.TAU = 0.0  # fixed threshold, used when TAU_PERCENTILE < 0
        node.SPLIT_LABEL_SPACE = True  # GZSL: base-like samples among base classes, novel-like among novel
        node.TEMPLATE = ""  # zero-shot prompt of the novel branch; "" = the dataset's CoOp template
        node.CTX_LR_MULT = 1.0  # learning rate of the context tokens relative to OPTIM.LR

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.PVA
        checks = [("ALIGN", node.ALIGN, ALIGNS),
                  ("PROTOTYPE", node.PROTOTYPE, PROTOTYPES), ("MEASURE", node.MEASURE, MEASURES),
                  ("RESIDUAL_SCOPE", node.RESIDUAL_SCOPE, RESIDUAL_SCOPES),
                  ("NOVEL_CLASSIFIER", node.NOVEL_CLASSIFIER, NOVEL_CLASSIFIERS)]
        for key, value, allowed in checks:
            if value not in allowed:
                raise choice_error(f"TRAINER.PVA.{key}", value, allowed)
        if node.TAU_PERCENTILE > 100:
            raise ValueError(f"TRAINER.PVA.TAU_PERCENTILE {node.TAU_PERCENTILE} must be at most 100 (< 0: fixed TAU)")
        for key in ("MC_SAMPLES", "N_VISUAL_TOKENS"):
            if int(node[key]) != node[key] or node[key] < 0:
                raise ValueError(f"TRAINER.PVA.{key} {node[key]} must be a whole number >= 0")

    # ----- model ---------------------------------------------------------------------------------
    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        prompt_learner = PromptLearner(self.text_encoder, self.tokenizer, self.train_classnames,
                                       n_ctx=node.N_CTX, ctx_init=node.CTX_INIT)
        self.model = PVAModel(prompt_learner, self.embed_dim, node).to(self.device)
        self.load_init_weights(self.model, "pva")
        ctx = [self.model.prompt_learner.ctx]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("prompt_learner.")]
        groups = [{"params": rest}, {"params": ctx, "lr": self.cfg.OPTIM.LR * node.CTX_LR_MULT}]
        self.optim = build_optimizer(self.model, self.cfg.OPTIM, param_groups=groups)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("pva", self.model, self.optim, self.sched)

    def load_state_into(self, name, state_dict, fpath):
        # The router's buffers take the checkpoint's shape (its base classes), whatever this run tests.
        for key in ("prototypes", "prototype_logvar"):
            if key in state_dict:
                setattr(self._models[name], key, torch.empty_like(state_dict[key], device=self.device))
        super().load_state_into(name, state_dict, fpath)

    @property
    def scale(self):
        node = self.method_cfg
        return torch.tensor(node.LOGIT_SCALE, device=self.device) if node.LOGIT_SCALE > 0 else self.logit_scale

    @property
    def residual_everywhere(self):
        """RESIDUAL_SCOPE all: the fine-tuned classifier (and training) use the refined features too."""
        return self.method_cfg.RESIDUAL_SCOPE == "all"

    def prompt_text_features(self):
        """Unit-norm CLIP features of the learnable-token prompts of the prompt learner's classes (n, D)."""
        prompts, tokenized = self.model.prompt_learner()
        with self.autocast():
            return self.normalize(self.text_encoder(prompts, tokenized).float())

    # ----- training ------------------------------------------------------------------------------
    def before_epoch(self):
        self.model.prompt_learner.set_classnames(self.train_classnames)

    def loss_terms(self, image_features, label):
        """The training loss and its terms on one batch: (loss, {name: tensor}, logits (B, n_base))."""
        node, model = self.method_cfg, self.model
        f_v = self.normalize(image_features)  # (B, D)
        f_t = self.prompt_text_features()  # (n_base, D)
        mu_v, logvar_v = model.visual(f_v)  # (B, L)
        mu_t, logvar_t = model.textual(f_t)  # (n_base, L)
        z_v, z_t = model.visual.sample(mu_v, logvar_v), model.textual.sample(mu_t, logvar_t)
        residual = self.residual_everywhere
        output = self.scale * model.refine(z_v, f_v, residual) @ model.refine(z_t, f_t, residual).t()
        terms = {"ce": F.cross_entropy(output, label)}
        loss = terms["ce"]
        if node.VARIATIONAL and node.BETA_KL > 0:
            latent_dim = mu_v.shape[-1]
            terms["kl"] = (kl_to_standard_normal(mu_v, logvar_v).mean()
                           + kl_to_standard_normal(mu_t, logvar_t).mean()) / latent_dim
            loss = loss + node.BETA_KL * terms["kl"]
        if node.GAMMA > 0:
            terms["align"] = alignment_loss(node.ALIGN, mu_v, logvar_v, mu_t[label], logvar_t[label])
            loss = loss + node.GAMMA * terms["align"]
        return loss, terms, output

    def forward_backward(self, batch):
        image_features, label = self.parse_batch_train(batch)
        loss, terms, output = self.loss_terms(image_features, label)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"PVA loss is not finite at epoch {self.epoch + 1}: "
                                     + ", ".join(f"{k} {v.item():.4g}" for k, v in terms.items()))
        return self.finish_step(loss, output, label, **terms)

    def after_epoch(self):
        # Calibrate the router before anything is saved or validated, so each checkpoint holds
        # prototypes and tau that match its weights.
        node = self.method_cfg
        if node.SEPARATION and self.epoch_is_saved_or_compared():
            self.calibrate()
        super().after_epoch()

    # ----- router calibration on the base training data -------------------------------------------
    def base_training_features(self):
        """(N, D) features of the training images under the test transform (no augmentation), labels (N,)."""
        data = self._split_data["train_x"]
        labels = torch.tensor([item.label for item in data], device=self.device)
        if getattr(self, "_train_test_view", None) is None:
            self._train_test_view = self.split_features("train_x")
        return self._train_test_view, labels

    def mc_generator(self):
        """A generator for test-time samples, seeded from the run's seed: every evaluation draws the same."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(max(int(self.cfg.SEED), 0))
        return generator

    def latent_samples(self, mu, logvar, generator):
        """(S, B, L) test-time samples of z (MC_SAMPLES > 0 on a variational adapter), else None."""
        node = self.method_cfg
        if node.MC_SAMPLES > 0 and node.VARIATIONAL:
            return sample_latents(mu, logvar, node.MC_SAMPLES, generator)
        return None

    @torch.no_grad()
    def calibrate(self):
        """Set the base prototypes and tau from the base training samples (no novel data needed)."""
        node, model = self.method_cfg, self.model
        was_training = model.training
        model.eval()
        feats, labels = self.base_training_features()
        n_base = len(self.train_classnames)
        mu_v, logvar_v = model.visual(self.normalize(feats))  # (N, L)
        if node.PROTOTYPE == "text":
            model.prompt_learner.set_classnames(self.train_classnames)
            prototypes, prototype_logvar = model.textual(self.prompt_text_features())  # (n_base, L)
        else:
            prototypes, prototype_logvar = moment_matched_prototypes(mu_v, logvar_v, labels, n_base)
        model.prototypes = prototypes.detach().clone()
        model.prototype_logvar = prototype_logvar.detach().clone()
        samples = self.latent_samples(mu_v, logvar_v, self.mc_generator())
        scores = model.score(mu_v, logvar_v, node.MEASURE, samples)  # (N,)
        if node.TAU_PERCENTILE >= 0:
            # "lower": at least (100 - p)% of the base training samples have s >= tau.
            tau = torch.quantile(scores.double(), node.TAU_PERCENTILE / 100.0, interpolation="lower").float()
        else:
            tau = torch.tensor(float(node.TAU), device=self.device)
        model.tau = tau.reshape(()).to(self.device)
        routed = (scores >= model.tau).float().mean().item() * 100
        print(f"Router calibrated on {len(scores)} base training samples: tau = {model.tau.item():.4f} "
              f"({node.PROTOTYPE} prototypes, {node.MEASURE}); {routed:.1f}% of them are base-like")
        model.train(was_training)

    # ----- inference -----------------------------------------------------------------------------
    @property
    def tau(self):
        node = self.method_cfg
        return float(node.TAU) if node.TAU_PERCENTILE < 0 else float(self.model.tau.item())

    def prepare_eval(self):
        node, model = self.method_cfg, self.model
        model.prompt_learner.set_classnames(self.classnames)
        f_t = self.prompt_text_features()  # (n_cls, D)
        mu_t, _ = model.textual(f_t)
        self.tuned_text = model.refine(mu_t, f_t, self.residual_everywhere)  # (n_cls, D)
        self.zs_text = self.prompt_weights(self.classnames, node.TEMPLATE)  # hand-crafted prompts, once per class list
        self._tau_now = self.tau
        self._generator = self.mc_generator()
        self._routing = {"score": [], "to_base": [], "label": [], "mu": [], "logvar": []}
        if node.SEPARATION and not model.calibrated:
            print("Warning: the router has no base prototypes (untrained model?): every sample goes to the "
                  "zero-shot (novel) branch")

    def classify(self, z, f_v, text, residual):
        """Scaled cosine logits of z (B, L) or its samples (S, B, L) against text (C, D); over samples,
        the logits of the mean predicted probability."""
        logits = self.scale * self.model.refine(z, f_v, residual) @ text.t()
        return mean_probability_logits(logits) if logits.dim() == 3 else logits

    def branch_logits(self, image_features, samples_generator=None):
        """Fine-tuned and novel-branch logits (B, n_cls) each, the latent (mu, logvar) and the test-time
        samples (S, B, L) or None of each image."""
        node, model = self.method_cfg, self.model
        f_v = self.normalize(image_features)
        mu_v, logvar_v = model.visual(f_v)
        samples = self.latent_samples(mu_v, logvar_v, samples_generator or self.mc_generator())
        z = mu_v if samples is None else samples
        tuned = self.classify(z, f_v, self.tuned_text, self.residual_everywhere)
        if node.NOVEL_CLASSIFIER == "zeroshot":
            novel = self.scale * f_v @ self.zs_text.t()  # CLIP's own zero-shot classifier
        else:
            novel = self.classify(z, f_v, self.zs_text, residual=True)
        return tuned, novel, mu_v, logvar_v, samples

    def model_inference(self, image_features):
        node, model = self.method_cfg, self.model
        tuned, novel, mu_v, logvar_v, samples = self.branch_logits(image_features, self._generator)
        if not node.SEPARATION:
            return tuned
        if model.calibrated:
            score = model.score(mu_v, logvar_v, node.MEASURE, samples)  # (B,)
        else:
            score = torch.full((len(tuned),), float("-inf"), device=tuned.device)
        to_base = score >= self._tau_now  # (B,)
        if node.SPLIT_LABEL_SPACE and self.cfg.DATASET.SUBSAMPLE_CLASSES == "gzsl":
            base_cols = torch.arange(tuned.shape[1], device=tuned.device) < len(self.base_classnames)
            tuned = tuned.masked_fill(~base_cols, float("-inf"))
            novel = novel.masked_fill(base_cols, float("-inf"))
        for key, value in (("score", score), ("to_base", to_base), ("mu", mu_v), ("logvar", logvar_v)):
            self._routing[key].append(value.cpu())
        return torch.where(to_base[:, None], tuned, novel)

    def parse_batch_test(self, batch):
        image_features, label = super().parse_batch_test(batch)
        if getattr(self, "_routing", None) is not None:
            self._routing["label"].append(label.cpu())
        return image_features, label

    @torch.no_grad()
    def test(self, split=None):
        result = super().test(split)
        if self.method_cfg.SEPARATION and self._routing["score"]:
            self.report_routing()
        self._routing = None
        return result

    def report_routing(self):
        """Separation diagnostics after Dassl's result block; routing accuracy and AUROC when the
        test set holds both base and novel samples (GZSL: labels < number of base classes are base),
        with the AUROC of every measure on the same latents (closed form), to show what the
        variance adds to the means."""
        score = torch.cat(self._routing["score"]).numpy()
        to_base = torch.cat(self._routing["to_base"]).numpy()
        lines = [f"=> separation (tau = {self._tau_now:.4f})", f"* routed_base: {100 * to_base.mean():.1f}%",
                 f"* routed_novel: {100 * (1 - to_base.mean()):.1f}%"]
        if self.cfg.DATASET.SUBSAMPLE_CLASSES == "gzsl":
            is_base = torch.cat(self._routing["label"]).numpy() < len(self.base_classnames)
            if is_base.any() and (~is_base).any() and self.model.calibrated:
                lines.append(f"* routing_acc: {100 * (to_base == is_base).mean():.1f}%")
                lines.append(f"* auroc: {100 * auroc(score, is_base):.1f}%")
                mu, logvar = torch.cat(self._routing["mu"]), torch.cat(self._routing["logvar"])
                proto = self.model.prototypes.cpu(), self.model.prototype_logvar.cpu()
                for measure in MEASURES:
                    s = prototype_similarity(measure, mu, logvar, *proto).max(1).values.numpy()
                    lines.append(f"* auroc_{measure}: {100 * auroc(s, is_base):.1f}%")
        print("\n".join(lines))
