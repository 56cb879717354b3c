"""PVA (Lu et al., ECCV 2024): variational adapters in a shared latent space, base/novel separation.

CLIP stays frozen. A visual and a textual variational adapter map CLIP's image feature and the
feature of a learnable-token prompt (CoOp context) into one latent space, where images are
classified by cosine similarity to the class latents. Training sees base classes only: cross-
entropy + BETA_KL * KL(q || N(0, I)) of both modalities + GAMMA * image-text alignment. The adapter
output is refined with CLIP's own feature through a residual (LAMBDA).

At test time a sample's latent is compared with the base prototypes (calibrated on the base
training data at the end of training, saved in the checkpoint): base-like samples (score >= tau)
are classified by the fine-tuned classifier, novel-like ones by CLIP's hand-crafted zero-shot text
features against the refined image feature. No code of the paper is public; docs/PVA.md says which
parts are the paper's and which are our choices (each of those is a key below).
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.clip import PromptLearner, prompts_for
from clipadapt.engine import TRAINER_REGISTRY, build_lr_scheduler, build_optimizer
from clipadapt.engine.builtin.utils import load_checkpoint
from clipadapt.features import encode_images
from clipadapt.trainer import ClipTrainer

ALIGNS = ("cosine", "kl")
PROTOTYPES = ("image", "text")
MEASURES = ("cosine", "kl")


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


def alignment_loss(kind, mu_v, logvar_v, mu_t, logvar_t):
    """Cross-modal alignment of each image with its label's text latent, averaged over the batch.

    cosine: 1 - cos(mu_v, mu_t); kl: KL(q_v || q_t) in closed form.
    """
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(mu_v, mu_t, dim=-1)).mean()
    return kl_gaussians(mu_v, logvar_v, mu_t, logvar_t).mean()


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
    """x (N, D) -> (mu, logvar) (N, L): a bottleneck MLP with a mean and a log-variance head.

    With `skip`, mu = skip(x) + MLP(x) and the mean head starts at zero, so training starts from
    CLIP's own space (skip = identity when L = D, a learned linear map otherwise). With
    `variational` off the adapter is deterministic: logvar is 0 and z = mu.
    """

    def __init__(self, in_dim, latent_dim, hidden, variational=True, skip=True, init_logvar=-8.0):
        super().__init__()
        self.variational = variational
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
    and the router's state (base prototypes and tau), which depend on the base training classes only
    and are saved in the checkpoint."""

    def __init__(self, prompt_learner, embed_dim, node):
        super().__init__()
        latent = node.LATENT_DIM or embed_dim
        hidden = node.HIDDEN or max(embed_dim // 4, 1)
        self.prompt_learner = prompt_learner
        kw = dict(variational=node.VARIATIONAL, skip=node.ADAPTER_SKIP, init_logvar=node.INIT_LOGVAR)
        self.visual = VariationalAdapter(embed_dim, latent, hidden, **kw)
        self.textual = VariationalAdapter(embed_dim, latent, hidden, **kw)
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

    def refine(self, z, clip_feature):
        """Residual refinement f_out = f_adapter + lambda * f_CLIP (both unit-norm), then unit-norm."""
        out = F.normalize(self.to_clip(z), dim=-1)
        if self.lam:
            out = out + self.lam * F.normalize(clip_feature, dim=-1)
        return F.normalize(out, dim=-1)

    def score(self, mu, logvar, measure):
        """s(x): similarity of each sample's latent to its closest base prototype: (B, L) -> (B,)."""
        if measure == "cosine":
            sim = F.normalize(mu, dim=-1) @ F.normalize(self.prototypes, dim=-1).t()
        else:
            sim = -pairwise_kl(mu, logvar, self.prototypes, self.prototype_logvar)
        return sim.max(dim=1).values  # (B,)


# ----- trainer ------------------------------------------------------------------------------------
@TRAINER_REGISTRY.register()
class PVA(ClipTrainer):
    CONFIG_NODE = "PVA"

    @staticmethod
    def config_defaults(node):
        # Learnable text tokens (CoOp context through clipadapt.clip.PromptLearner).
        node.N_CTX = 4  # number of learnable context tokens (ignored when CTX_INIT is set)
        node.CTX_INIT = "a photo of a"  # initial context ("" = random, N_CTX tokens)
        node.PREC = "fp16"  # fp16, fp32, bf16 or amp (the frozen CLIP's precision)
        # Adapters and the shared latent space.
        node.LATENT_DIM = 0  # L; 0 = D, CLIP's embedding dim (the latent map is then the identity)
        node.HIDDEN = 0  # adapter bottleneck width; 0 = D // 4
        node.ADAPTER_SKIP = True  # mu = skip(x) + MLP(x), MLP's mean head starting at zero
        node.INIT_LOGVAR = -8.0  # initial log sigma^2 of the variational adapters
        node.LOGIT_SCALE = 0.0  # scale of the cosine logits; 0 = CLIP's learned exp(logit_scale)
        # Loss.
        node.VARIATIONAL = True  # off: deterministic adapters (z = mu), no KL term
        node.BETA_KL = 1e-4  # weight of KL(q_v || N(0,I)) + KL(q_t || N(0,I))
        node.GAMMA = 1.0  # weight of the cross-modal alignment term
        node.ALIGN = "cosine"  # cosine (1 - cos of the means) or kl (KL(q_v || q_t) in closed form)
        # Residual refinement with CLIP's features.
        node.RESIDUAL = True  # off: lambda = 0
        node.LAMBDA = 1.0  # f_out = f_adapter + LAMBDA * f_CLIP
        # Base / novel separation.
        node.SEPARATION = True  # off: every sample through the fine-tuned classifier
        node.PROTOTYPE = "image"  # image (mean latent of base training images per class) or text
        node.MEASURE = "cosine"  # cosine, or kl (negative KL(q_x || prototype))
        node.TAU_PERCENTILE = 10.0  # tau = this percentile of base training scores; < 0: fixed TAU
        node.TAU = 0.0  # fixed threshold, used when TAU_PERCENTILE < 0
        node.SPLIT_LABEL_SPACE = True  # GZSL: base-like samples among base classes, novel-like among novel
        node.TEMPLATE = ""  # zero-shot prompt of the novel branch; "" = the dataset's CoOp template
        node.CTX_LR_MULT = 1.0  # learning rate of the context tokens relative to OPTIM.LR

    def check_cfg(self, cfg):
        node = cfg.TRAINER.PVA
        checks = [("PREC", node.PREC, ("fp16", "fp32", "bf16", "amp")), ("ALIGN", node.ALIGN, ALIGNS),
                  ("PROTOTYPE", node.PROTOTYPE, PROTOTYPES), ("MEASURE", node.MEASURE, MEASURES)]
        for key, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f'TRAINER.PVA.{key} "{value}" must be one of {allowed}')
        if node.TAU_PERCENTILE > 100:
            raise ValueError(f"TRAINER.PVA.TAU_PERCENTILE {node.TAU_PERCENTILE} must be at most 100 (< 0: fixed TAU)")

    # ----- model ---------------------------------------------------------------------------------
    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        prompt_learner = PromptLearner(self.text_encoder, self.tokenizer, self.train_classnames,
                                       n_ctx=node.N_CTX, ctx_init=node.CTX_INIT)
        self.model = PVAModel(prompt_learner, self.embed_dim, node).to(self.device)
        if self.cfg.MODEL.INIT_WEIGHTS:
            state = load_checkpoint(self.cfg.MODEL.INIT_WEIGHTS)
            self.load_state_into("pva", state.get("state_dict", state), self.cfg.MODEL.INIT_WEIGHTS)
        ctx = [self.model.prompt_learner.ctx]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("prompt_learner.")]
        groups = [{"params": rest}, {"params": ctx, "lr": self.cfg.OPTIM.LR * node.CTX_LR_MULT}]
        self.optim = build_optimizer(self.model, self.cfg.OPTIM, param_groups=groups)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("pva", self.model, self.optim, self.sched)
        self._zs_classnames = None

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

    def prompt_text_features(self):
        """Unit-norm CLIP features of the learnable-token prompts of the prompt learner's classes (n, D)."""
        prompts, tokenized = self.model.prompt_learner()
        with self.autocast():
            return self.normalize(self.text_encoder(prompts, tokenized).float())

    # ----- training ------------------------------------------------------------------------------
    def before_epoch(self):
        self.model.prompt_learner.set_classnames(self.train_classnames)

    def forward_backward(self, batch):
        node, model = self.method_cfg, self.model
        image_features, label = self.parse_batch_train(batch)
        f_v = self.normalize(image_features)  # (B, D)
        f_t = self.prompt_text_features()  # (n_base, D)
        mu_v, logvar_v = model.visual(f_v)  # (B, L)
        mu_t, logvar_t = model.textual(f_t)  # (n_base, L)
        z_v, z_t = model.visual.sample(mu_v, logvar_v), model.textual.sample(mu_t, logvar_t)
        output = self.scale * model.refine(z_v, f_v) @ model.refine(z_t, f_t).t()  # (B, n_base)
        loss_ce = F.cross_entropy(output, label)
        loss = loss_ce
        summary = {"ce": loss_ce.item()}
        if node.VARIATIONAL and node.BETA_KL > 0:
            kl = kl_to_standard_normal(mu_v, logvar_v).mean() + kl_to_standard_normal(mu_t, logvar_t).mean()
            loss = loss + node.BETA_KL * kl
            summary["kl"] = kl.item()
        if node.GAMMA > 0:
            align = alignment_loss(node.ALIGN, mu_v, logvar_v, mu_t[label], logvar_t[label])
            loss = loss + node.GAMMA * align
            summary["align"] = align.item()
        self.model_backward_and_update(loss)
        self.end_of_epoch_lr_step()
        return {"loss": loss.item(), **summary, "acc": (output.argmax(1) == label).float().mean().item() * 100}

    def after_epoch(self):
        # Calibrate the router before anything is saved or validated, so each checkpoint holds
        # prototypes and tau that match its weights.
        node, cfg = self.method_cfg, self.cfg
        freq = cfg.TRAIN.CHECKPOINT_FREQ
        saves = (self.epoch + 1 == self.max_epoch) or (freq > 0 and (self.epoch + 1) % freq == 0)
        validates = not cfg.TEST.NO_TEST and cfg.TEST.FINAL_MODEL == "best_val"
        if node.SEPARATION and (saves or validates):
            self.calibrate()
        super().after_epoch()

    # ----- router calibration on the base training data -------------------------------------------
    def base_training_features(self):
        """(N, D) features of the training images under the test transform (no augmentation), labels (N,)."""
        data = self._split_data["train_x"]
        labels = torch.tensor([item.label for item in data], device=self.device)
        if self.use_feature_cache:
            return self.cached_features("train_x"), labels
        if getattr(self, "_train_test_view", None) is None:
            self._train_test_view = encode_images(
                self.encode_images, data, self.transform_test, batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                num_workers=self.cfg.DATALOADER.NUM_WORKERS, device=self.device,
                desc="Image features (train_x, for the router)").to(self.device)
        return self._train_test_view, labels

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
            onehot = F.one_hot(labels, n_base).float()  # (N, n_base)
            counts = onehot.sum(0).clamp_min(1)[:, None]
            prototypes = onehot.t() @ mu_v / counts  # per-class mean latent
            prototype_logvar = (onehot.t() @ logvar_v.exp() / counts).clamp_min(1e-12).log()
        model.prototypes = prototypes.detach().clone()
        model.prototype_logvar = prototype_logvar.detach().clone()
        scores = model.score(mu_v, logvar_v, node.MEASURE)  # (N,)
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
        self.tuned_text = model.refine(mu_t, f_t)  # (n_cls, D)
        if self._zs_classnames != self.classnames:  # hand-crafted prompts, once per class list
            self.zs_text = self.encode_texts(prompts_for(self.classnames, self.cfg.DATASET.NAME, node.TEMPLATE)).float()
            self._zs_classnames = self.classnames
        self._tau_now = self.tau
        self._routing = {"score": [], "to_base": [], "label": []}
        if node.SEPARATION and not model.calibrated:
            print("Warning: the router has no base prototypes (untrained model?): every sample goes to the "
                  "zero-shot (novel) branch")

    def branch_logits(self, image_features):
        """Fine-tuned and zero-shot logits (B, n_cls) each, the latent (mu, logvar) of each sample."""
        model = self.model
        f_v = self.normalize(image_features)
        mu_v, logvar_v = model.visual(f_v)
        r_v = model.refine(mu_v, f_v)  # residual-refined image feature (B, D)
        return self.scale * r_v @ self.tuned_text.t(), self.scale * r_v @ self.zs_text.t(), mu_v, logvar_v

    def model_inference(self, image_features):
        node, model = self.method_cfg, self.model
        tuned, zero_shot, mu_v, logvar_v = self.branch_logits(image_features)
        if not node.SEPARATION:
            return tuned
        if model.calibrated:
            score = model.score(mu_v, logvar_v, node.MEASURE)  # (B,)
        else:
            score = torch.full((len(tuned),), float("-inf"), device=tuned.device)
        to_base = score >= self._tau_now  # (B,)
        if node.SPLIT_LABEL_SPACE and self.cfg.DATASET.SUBSAMPLE_CLASSES == "gzsl":
            base_cols = torch.arange(tuned.shape[1], device=tuned.device) < len(self.base_classnames)
            tuned = tuned.masked_fill(~base_cols, float("-inf"))
            zero_shot = zero_shot.masked_fill(base_cols, float("-inf"))
        self._routing["score"].append(score.cpu())
        self._routing["to_base"].append(to_base.cpu())
        return torch.where(to_base[:, None], tuned, zero_shot)

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
        test set holds both base and novel samples (GZSL: labels < number of base classes are base)."""
        score = torch.cat(self._routing["score"]).numpy()
        to_base = torch.cat(self._routing["to_base"]).numpy()
        lines = [f"=> separation (tau = {self._tau_now:.4f})", f"* routed_base: {100 * to_base.mean():.1f}%",
                 f"* routed_novel: {100 * (1 - to_base.mean()):.1f}%"]
        if self.cfg.DATASET.SUBSAMPLE_CLASSES == "gzsl":
            is_base = torch.cat(self._routing["label"]).numpy() < len(self.base_classnames)
            if is_base.any() and (~is_base).any():
                lines.append(f"* routing_acc: {100 * (to_base == is_base).mean():.1f}%")
                lines.append(f"* auroc: {100 * auroc(score, is_base):.1f}%")
        print("\n".join(lines))
