"""SHIP (Wang et al., ICCV 2023): synthesized prompts for classes known only by their names.

Stage 1, the generator: a VAE whose decoder is CLIP's frozen text encoder. An image feature x is
encoded to q(z|x); the generator turns z into a local bias added to every one of the VAE's
learnable context tokens; the prompt [SOS] ctx+bias [CLASS] . [EOS] of x's class goes through the
text encoder, and the (unit-norm) result must reconstruct x:

    loss = ||x_hat - x||^2 + KL_WEIGHT * KL(q(z|x) || N(0, I))

It trains once, in `before_train`, on the real base-class features.

Stage 2, the epochs: CoOp (or CLIP-Adapter) over base + new classes. Each batch of real base
features is joined by synthetic features of new classes (z ~ N(0, I) -> bias -> prompt of a
uniformly drawn new class -> text encoder), and cross-entropy runs over all classes. Evaluation is
the stage-2 model's, exactly as CoOp's (CLIP-Adapter's): the generator is not used at test time.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from clipadapt.cache_model import cache_keys, cache_values, released_optimizer, released_value
from clipadapt.clip import PromptLearner
from clipadapt.config import ConfigError, choice_error
from clipadapt.heads import AdapterHead, CacheHead, PromptHead
from clipadapt.engine import TRAINER_REGISTRY, MetricMeter, build_lr_scheduler, build_optimizer
from clipadapt.trainer import ClipTrainer

STAGE2_CHOICES = ("coop", "clip_adapter", "tip_adapter_f")
GENERATOR_CHOICES = ("clip", "mlp")
BIAS_CHOICES = ("identical", "sequential")
XD_CHOICES = ("per_target", "single")


# ----- modules -------------------------------------------------------------------------------------

def init_weights(module, std=0.02):
    """The released code's init: Linear weights N(0, std), biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class FeatureEncoder(nn.Module):
    """q(z|x): unit-norm image feature (B, D) -> mean, log-variance (B, latent)."""

    def __init__(self, feat_dim, hidden, latent):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU(inplace=True))
        self.mean = nn.Linear(hidden, latent)
        self.log_var = nn.Linear(hidden, latent)

    def forward(self, x):
        h = self.body(x)
        return self.mean(h), self.log_var(h)


def activation(leaky_slope):
    """The released generator's activation: ReLU, or LeakyReLU(slope) (ImageNet)."""
    return nn.LeakyReLU(leaky_slope, inplace=True) if leaky_slope > 0 else nn.ReLU(inplace=True)


class BiasGenerator(nn.Module):
    """z (B, latent) -> local bias added to the context tokens of the prompt: one (B, ctx_dim) for
    every token (the paper's identical bias [r, ..., r]), or (B, n_tokens, ctx_dim), one per token
    (its Table 5 sequential bias [r1, ..., rL])."""

    def __init__(self, latent, hidden, ctx_dim, leaky_slope=0.0, n_tokens=0):
        super().__init__()
        self.n_tokens, self.ctx_dim = n_tokens, ctx_dim
        self.net = nn.Sequential(nn.Linear(latent, hidden), activation(leaky_slope),
                                 nn.Linear(hidden, max(n_tokens, 1) * ctx_dim))

    def forward(self, z):
        bias = self.net(z)
        return bias.view(len(z), self.n_tokens, self.ctx_dim) if self.n_tokens else bias


class FeatureGenerator(nn.Module):
    """Table 4's generator "trained from scratch": a 3-layer MLP from z and the class's hand-crafted
    text feature (how the class is given to it is ours: the paper does not say) to a feature (B, D)."""

    def __init__(self, latent, hidden, feat_dim, leaky_slope=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent + feat_dim, hidden), activation(leaky_slope),
                                 nn.Linear(hidden, hidden), activation(leaky_slope), nn.Linear(hidden, feat_dim))

    def forward(self, z, class_features):
        return self.net(torch.cat([z, class_features], dim=1))


def vae_loss(recon, x, mean, log_var, kl_weight=1.0):
    """(loss, rec, kld): squared L2 summed over dims, KL to N(0, I) summed over latent dims; both
    averaged over the batch."""
    rec = (recon - x).pow(2).sum(dim=1).mean()
    kld = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(dim=1).mean()
    return rec + kl_weight * kld, rec, kld


class PromptVAE(nn.Module):
    """Encoder and generator of SHIP's VAE. With GENERATOR "clip" (SHIP) the generator is the bias
    MLP, the VAE's own context (N_CTX_VAE tokens, N(0, 0.02); frozen at zero without global prompts)
    and the frozen text encoder, held by reference so it stays out of this module's state dict. With
    "mlp" (Table 4's from-scratch generator) it is FeatureGenerator, conditioned on `class_features`."""

    def __init__(self, text_encoder, tokenizer, classnames, feat_dim, n_ctx=4, enc_hidden=2048, gen_hidden=4096,
                 latent=512, leaky_slope=0.0, init_std=0.02, generator="clip", global_prompt=True,
                 bias="identical", class_features=None):
        super().__init__()
        object.__setattr__(self, "text_encoder", text_encoder)
        self.latent, self.kind = latent, generator
        # Built in this order (context, encoder, generator) so the RNG draws of the default SHIP are
        # those of the released code's construction.
        if generator == "mlp":
            self.register_buffer("class_features", class_features, persistent=False)
        else:
            self.prompt_learner = PromptLearner(text_encoder, tokenizer, classnames, n_ctx=n_ctx, ctx_init="",
                                                init_std=init_std)
            if not global_prompt:  # the prompt is the local bias alone
                self.prompt_learner.ctx.data.zero_()
                self.prompt_learner.ctx.requires_grad_(False)
        self.encoder = FeatureEncoder(feat_dim, enc_hidden, latent)
        if generator == "mlp":
            self.generator = FeatureGenerator(latent, gen_hidden, feat_dim, leaky_slope)
        else:
            self.generator = BiasGenerator(latent, gen_hidden, self.prompt_learner.ctx.shape[-1], leaky_slope,
                                           n_tokens=n_ctx if bias == "sequential" else 0)
        init_weights(self.encoder, init_std)
        init_weights(self.generator, init_std)

    def decode(self, z, class_idx):
        """Unit-norm features (B, D) of classes `class_idx` generated from z."""
        if self.kind == "mlp":
            return F.normalize(self.generator(z, self.class_features[class_idx]).float(), dim=-1)
        bias = self.generator(z)  # (B, ctx_dim) or (B, L, ctx_dim)
        prompts, tokenized = self.prompt_learner(class_idx, ctx_shift=bias)
        return F.normalize(self.text_encoder(prompts, tokenized).float(), dim=-1)

    def forward(self, x, class_idx):
        """Reconstruction of unit-norm features x (B, D) of classes `class_idx`: (recon, mean, log_var)."""
        mean, log_var = self.encoder(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        return self.decode(z, class_idx), mean, log_var

    @torch.no_grad()
    def synthesize(self, class_idx):
        """Synthetic unit-norm features (B, D), one per entry of `class_idx`, z ~ N(0, I)."""
        z = torch.randn(len(class_idx), self.latent, device=self.encoder.mean.weight.device)
        return self.decode(z, class_idx)


# ----- trainer -------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class SHIP(ClipTrainer):
    CONFIG_NODE = "SHIP"
    STARTS_FROM_RUN = True  # a per-target cross-dataset run starts from the source run's models

    @staticmethod
    def config_defaults(node):
        node.STAGE2 = "coop"  # "coop", "clip_adapter" or "tip_adapter_f": the model fine-tuned on real + synthetic
        node.PREC = "fp32"  # the released code runs the text encoder in fp32 (.float())
        # Stage 1: the generator (released code, main_coop_vae.py; ImageNet values in vit_b16_imagenet.yaml)
        node.N_CTX_VAE = 4  # L, the VAE prompt's context tokens (Table 6: 1, 2, 4, 8)
        node.GENERATOR = "clip"  # "clip": prompts through CLIP's text encoder (SHIP); "mlp": Table 4's 3-layer MLP
        node.GLOBAL_PROMPT = True  # Table 5: learnable global prompts [p1..pL] under the bias; False = bias alone
        node.BIAS = "identical"  # Table 5: "identical" [r, ..., r] or "sequential" [r1, ..., rL]
        node.ENC_HIDDEN = 2048  # encoder hidden units: the released code's 2048 (4096 on ImageNet); the paper says 4096
        node.GEN_HIDDEN = 4096  # generator hidden units
        node.LATENT = 512  # z dimension
        node.GEN_LEAKY_SLOPE = 0.0  # 0 = ReLU in the generator; ImageNet uses LeakyReLU(0.2)
        node.INIT_STD = 0.02  # N(0, std) init of Linear weights and of the VAE context
        node.KL_WEIGHT = 1.0
        node.VAE_EPOCHS = 50  # 10 on ImageNet
        node.VAE_LR = 1e-3  # AdamW for encoder, generator and VAE context
        node.VAE_WEIGHT_DECAY = 0.01  # torch's AdamW default (the released code sets none)
        node.VAE_BATCH_SIZE = 256
        # Stage 2 (optimizer, schedule, epochs and batch size are OPTIM.* and DATALOADER.TRAIN_X.*)
        node.COOP_N_CTX = 4
        node.COOP_CTX_INIT = "a photo of a"
        node.SYN_PER_REAL = 1.0  # synthetic features per real feature in a batch; 0 = generator off
        node.ADAPTER_RATIO = 0.2  # STAGE2 clip_adapter: alpha, the adapter's share of the blend
        node.ADAPTER_REDUCTION = 4  # STAGE2 clip_adapter: bottleneck D -> D / 4
        # STAGE2 tip_adapter_f (ours: SHIP's code for it is unreleased, SHIP#2): Tip-Adapter-F's cache of the
        # base classes' real features (averaged over TIP_AUGMENT_EPOCH views) and TIP_SYN_SHOTS synthesized
        # features per new class; alpha and beta fixed (the val split holds base classes only)
        node.TIP_AUGMENT_EPOCH = 10
        node.TIP_SYN_SHOTS = 0  # synthesized cache entries per label-only class; 0 = the real classes' shots
        node.TIP_INIT_ALPHA = 0.0  # 0 = Tip-Adapter's released init_alpha for the dataset (1.0 where it has none)
        node.TIP_INIT_BETA = 1.0
        node.TIP_LOGIT_SCALE = 100.0  # Tip-Adapter's zero-shot scale; 0 = the model's own
        # Cross-dataset (paper 4.2.2): "per_target" trains the generator on the source too, and each
        # target run (MODEL.INIT_RUN = the source run) fine-tunes stage 2 on features synthesized for
        # the target's class names; "single": one source model evaluated on every target (CoOp's protocol)
        node.XD_PROTOCOL = "per_target"
        node.TARGET_SYN_SHOTS = 16  # ours: synthesized features per target class and epoch (the source's shots)

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.SHIP
        for key, choices in (("STAGE2", STAGE2_CHOICES), ("GENERATOR", GENERATOR_CHOICES), ("BIAS", BIAS_CHOICES),
                             ("XD_PROTOCOL", XD_CHOICES)):
            if node[key] not in choices:
                raise choice_error(f"TRAINER.SHIP.{key}", node[key], choices)
        if cfg.MODEL.INIT_RUN:
            mode = cfg.DATASET.SUBSAMPLE_CLASSES
            if node.XD_PROTOCOL != "per_target" or mode != "all" or node.STAGE2 == "tip_adapter_f":
                raise ConfigError(
                    "MODEL.INIT_RUN starts SHIP's per-target cross-dataset run, which needs TRAINER.SHIP.XD_PROTOCOL "
                    f"per_target (is {node.XD_PROTOCOL}), DATASET.SUBSAMPLE_CLASSES all (is {mode}) and STAGE2 coop "
                    f"or clip_adapter (is {node.STAGE2}: a Tip-Adapter cache holds the source's classes).")
        if node.SYN_PER_REAL < 0:
            raise ValueError(f"TRAINER.SHIP.SYN_PER_REAL must be >= 0, got {node.SYN_PER_REAL}")

    # ----- the label space of training --------------------------------------------------------------
    def stage2_label_space(self):
        """(class names of stage 2, indices of the label-only classes among them).

        base / gzsl: the base (seen) classes carry the training images with labels 0..m-1, and the new
        (unseen) classes, named by the dataset, follow as label-only classes m..m+k-1.
        all (cross-dataset source, few-shot): the training label space as it is; its classes without
        training images (none in CoOp's datasets) are the label-only ones. With none, SHIP is CoOp.
        A per-target cross-dataset run (MODEL.INIT_RUN): every class of the target is label-only.
        """
        mode = self.cfg.DATASET.SUBSAMPLE_CLASSES
        if self.is_target_run:
            return self.train_classnames, list(range(len(self.train_classnames)))
        if mode in ("base", "gzsl"):
            base, new = self.base_classnames, self.new_classnames
            if self.train_classnames != base:
                raise RuntimeError(f"SHIP expects the training labels 0..{len(base) - 1} to be the dataset's base "
                                   f"classes in {mode} mode; the dataset gives {self.train_classnames[:3]}...")
            return base + new, list(range(len(base), len(base) + len(new)))
        names = self.train_classnames
        with_images = {d.label for d in self.dataset.train_x}
        return names, [i for i in range(len(names)) if i not in with_images]

    @property
    def is_target_run(self):
        """A per-target cross-dataset run: it starts from the source run and sees no image of its own."""
        return bool(self.cfg.MODEL.INIT_RUN)

    def reads_training_features(self):
        return not self.is_target_run and super().reads_training_features()

    @property
    def trains_generator_for_targets(self):
        """A per-target cross-dataset source: nothing to synthesize here, but the targets need the generator."""
        node = self.method_cfg
        return (node.XD_PROTOCOL == "per_target" and not self.is_target_run
                and self.cfg.DATASET.SUBSAMPLE_CLASSES == "all")

    # ----- model -------------------------------------------------------------------------------------
    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        self.stage2_classnames, label_only = self.stage2_label_space()
        self.label_only = torch.tensor(label_only, dtype=torch.long, device=self.device)
        self.synthesizes = (node.SYN_PER_REAL > 0 or self.is_target_run) and len(label_only) > 0
        n_real = len(self.stage2_classnames) - len(label_only)
        print(f"SHIP: {len(self.stage2_classnames)} classes in training, {n_real} with images and "
              f"{len(label_only)} label-only (synthetic features)")

        # Stage 2 first: Dassl prints the learning rate of the first registered model.
        self.head = self.build_head()
        if node.STAGE2 == "tip_adapter_f":  # Tip-Adapter-F's optimiser and per-iteration cosine
            self.optim, self.sched = released_optimizer(self.head.module.parameters(), self.cfg.OPTIM,
                                                        len(self.train_loader_x))
        else:
            self.optim = build_optimizer(self.head.module, self.cfg.OPTIM)
            self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(self.head.name, self.head.module, self.optim, self.sched)

        class_features = self.prompt_weights(self.stage2_classnames) if node.GENERATOR == "mlp" else None
        self.vae = PromptVAE(self.text_encoder, self.tokenizer, self.stage2_classnames, self.embed_dim,
                             n_ctx=node.N_CTX_VAE, enc_hidden=node.ENC_HIDDEN, gen_hidden=node.GEN_HIDDEN,
                             latent=node.LATENT, leaky_slope=node.GEN_LEAKY_SLOPE, init_std=node.INIT_STD,
                             generator=node.GENERATOR, global_prompt=node.GLOBAL_PROMPT, bias=node.BIAS,
                             class_features=class_features).to(self.device)
        learned = [p for p in self.vae.parameters() if p.requires_grad]
        self.vae_optim = torch.optim.AdamW(learned, lr=node.VAE_LR, weight_decay=node.VAE_WEIGHT_DECAY)
        self.register_model("vae", self.vae, self.vae_optim, None)

    def build_head(self):
        node = self.method_cfg
        if node.STAGE2 == "coop":
            return PromptHead(self, self.stage2_classnames, node.COOP_N_CTX, node.COOP_CTX_INIT)
        if node.STAGE2 == "clip_adapter":
            return AdapterHead(self, node.ADAPTER_RATIO, node.ADAPTER_REDUCTION)
        n_keys = len(self.dataset.train_x) + (self.tip_syn_shots * len(self.label_only) if self.synthesizes else 0)
        return CacheHead(self, self.stage2_classnames, n_keys, node.TIP_LOGIT_SCALE or self.logit_scale.item())

    # ----- stage 2 with Tip-Adapter-F: the cache of real and synthesized features ---------------------
    @property
    def tip_syn_shots(self):
        with_images = len(self.stage2_classnames) - len(self.label_only)
        return self.method_cfg.TIP_SYN_SHOTS or max(1, round(len(self.dataset.train_x) / max(with_images, 1)))

    @property
    def tip_hparams(self):
        node = self.method_cfg
        alpha = node.TIP_INIT_ALPHA or released_value(self.cfg.DATASET.NAME, "init_alpha", 1.0)
        return alpha, node.TIP_INIT_BETA

    def build_cache(self):
        """Keys: the real training features averaged over TIP_AUGMENT_EPOCH views, then TIP_SYN_SHOTS
        synthesized features of each label-only class; values: their labels over the stage-2 classes."""
        node = self.method_cfg
        keys = [cache_keys([self.training_view(v) for v in range(node.TIP_AUGMENT_EPOCH)])]
        labels = [torch.tensor([item.label for item in self.dataset.train_x], device=self.device)]
        if self.synthesizes:
            syn_labels = self.label_only.repeat_interleave(self.tip_syn_shots)
            keys.append(self.synthetic_features(syn_labels))
            labels.append(syn_labels)
        alpha, beta = self.tip_hparams
        print(f"SHIP: the Tip-Adapter cache holds {len(labels[0])} real features (averaged over "
              f"{node.TIP_AUGMENT_EPOCH} views) and {sum(len(x) for x in labels[1:])} synthesized ones "
              f"({self.tip_syn_shots} per label-only class); alpha {alpha:g}, beta {beta:g}")
        self.head.module.fill(torch.cat(keys), cache_values(torch.cat(labels), len(self.stage2_classnames)),
                              alpha, beta)

    # ----- stage 2 model: class weights and logits (the head's) ---------------------------------------
    def set_classnames(self, classnames):
        """Point the stage-2 classifier at `classnames` (all training classes, or the test label space)."""
        self.head.set_classnames(classnames)

    def text_features(self):
        """(n_cls, D) unit-norm class weights of the current class list."""
        return self.head.class_weights()

    def logits(self, features, text_features):
        return self.head.logits(features, text_features)

    # ----- data: the released code's loaders keep the last partial batch (drop_last=False) ----------
    def build_data_loader(self):
        super().build_data_loader()
        if self.is_target_run:  # labels only: TARGET_SYN_SHOTS per class, features synthesized per batch
            shots = self.method_cfg.TARGET_SYN_SHOTS
            labels = torch.arange(len(self.dm.dataset.classnames)).repeat_interleave(shots)
            self.train_loader_x = torch.utils.data.DataLoader(
                [{"label": int(label)} for label in labels], batch_size=self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                shuffle=True, drop_last=False)
            return
        self.train_loader_x = self.training_loader(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)  # stage 2

    # ----- stage 1: the generator --------------------------------------------------------------------
    def before_train(self):
        super().before_train()  # resumes stage 2 when a checkpoint exists
        if self.start_epoch > 0:
            print(f"SHIP: resuming stage 2 at epoch {self.start_epoch + 1}; the generator comes from the checkpoint")
        elif self.is_target_run:
            self.load_init_run()
            print(f"SHIP: per-target cross-dataset run: the generator and {self.method_cfg.STAGE2} come from the "
                  f"source run; stage 2 fine-tunes on features synthesized for the {len(self.stage2_classnames)} "
                  f"class names of {self.cfg.DATASET.NAME} ({self.method_cfg.TARGET_SYN_SHOTS} per class and epoch). "
                  "The target's class names are used in training; none of its images is")
        elif self.synthesizes or self.trains_generator_for_targets:
            if not self.synthesizes:
                print("SHIP: TRAINER.SHIP.XD_PROTOCOL per_target: the generator trains on this source for the target "
                      "runs; nothing is synthesized here (every class has images), so stage 2 is "
                      f"{self.method_cfg.STAGE2} over the {len(self.stage2_classnames)} training classes")
            self.train_generator()
        else:
            why = ("TRAINER.SHIP.SYN_PER_REAL is 0" if self.label_only.numel() else
                   f"DATASET.SUBSAMPLE_CLASSES {self.cfg.DATASET.SUBSAMPLE_CLASSES} leaves no label-only classes")
            print(f"SHIP: {why}, so the generator is not trained and nothing is synthesized: stage 2 is plain "
                  f"{self.method_cfg.STAGE2} over the {len(self.stage2_classnames)} training classes")
        if self.start_epoch == 0 and isinstance(self.head, CacheHead):
            self.build_cache()

    def train_generator(self):
        node = self.method_cfg
        dataset = self.dataset.train_x
        loader = self.training_loader(node.VAE_BATCH_SIZE)
        print(f"SHIP stage 1: training the generator for {node.VAE_EPOCHS} epochs on {len(dataset)} base-class "
              f"images ({len(loader)} batches of {node.VAE_BATCH_SIZE})")
        self.vae.train()
        for vae_epoch in range(node.VAE_EPOCHS):
            self.epoch = vae_epoch  # generator epoch e sees augmented view e, as stage-2 epoch e does
            meter = MetricMeter()
            for batch in loader:
                feats, label = self.parse_batch_train(batch)
                x = self.normalize(feats)
                with self.autocast():
                    recon, mean, log_var = self.vae(x, label)
                loss, rec, kld = vae_loss(recon, x, mean.float(), log_var.float(), node.KL_WEIGHT)
                self.model_backward_and_update(loss, "vae")
                meter.update({"loss": loss.item(), "rec": rec.item(), "kld": kld.item()})
            print(f"generator epoch [{vae_epoch + 1}/{node.VAE_EPOCHS}] {meter}")
        self.epoch = 0

    # ----- stage 2: fine-tuning on real + synthetic features ----------------------------------------
    def before_epoch(self):
        self.set_classnames(self.stage2_classnames)

    def synthetic_features(self, labels):
        """(n, D) unit-norm synthetic features of the classes `labels`, z ~ N(0, I)."""
        with self.autocast():
            return self.vae.synthesize(labels).float()

    def synthetic_batch(self, n):
        """n synthetic features (n, D) and their labels, drawn uniformly from the label-only classes."""
        labels = self.label_only[torch.randint(len(self.label_only), (n,), device=self.device)]
        return self.synthetic_features(labels), labels

    def forward_backward(self, batch):
        if self.is_target_run:  # synthetic features of the batch's labels, nothing real
            label = batch["label"].to(self.device)
            feats, n_real = self.synthetic_features(label), 0
            return self.update_stage2(feats, label, n_real)
        feats, label = self.parse_batch_train(batch)
        n_real = len(label)
        if self.synthesizes:
            n_syn = int(round(n_real * self.method_cfg.SYN_PER_REAL))
            syn_feats, syn_label = self.synthetic_batch(n_syn)
            feats = torch.cat([self.normalize(feats), syn_feats])
            label = torch.cat([label, syn_label])
        return self.update_stage2(feats, label, n_real)

    def update_stage2(self, feats, label, n_real):
        """One stage-2 step on features (the first n_real real, the rest synthetic) and their labels."""
        output = self.logits(feats, self.text_features())  # (n_real + n_syn, n_base + n_new)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss, self.head.name)
        if isinstance(self.head, CacheHead):
            self.sched.step()  # Tip-Adapter-F's cosine steps per iteration
        else:
            self.end_of_epoch_lr_step()
        correct = (output.argmax(1) == label).float()
        summary = {"loss": loss.item()}
        if n_real:
            summary["acc"] = correct[:n_real].mean().item() * 100
        if len(label) > n_real:
            summary["acc_syn"] = correct[n_real:].mean().item() * 100
        return summary

    # ----- checkpoints: a Tip-Adapter cache belongs to the label space it was built over ---------------
    def checkpoint_meta(self):
        meta = super().checkpoint_meta()
        if isinstance(getattr(self, "head", None), CacheHead):
            meta["cache_classnames"] = self.head.cache_classnames
        return meta

    def _load_usable(self, fpath, hint=""):
        checkpoint = super()._load_usable(fpath, hint)
        self._loading_meta = checkpoint.get("meta") or {}
        return checkpoint

    def load_state_into(self, name, state_dict, fpath):
        """A test run (base, new or gzsl) rebuilds its cache head to the checkpoint's: its keys and the
        class list its values' columns stand for (the training run's base + new classes)."""
        classnames = self._loading_meta.get("cache_classnames")
        if name == CacheHead.name and classnames and "adapter.weight" in state_dict:
            n_keys = state_dict["adapter.weight"].shape[0]
            if n_keys != self.head.module.adapter.weight.shape[0] or classnames != self.head.cache_classnames:
                self.head = CacheHead(self, classnames, n_keys, self.head.zero_shot_scale)
                self._models[name] = self.head.module
        super().load_state_into(name, state_dict, fpath)

    # ----- evaluation: the stage-2 model over the test label space ----------------------------------
    def prepare_eval(self):
        self.set_classnames(self.classnames)
        self.eval_text_features = self.text_features()

    def model_inference(self, image_features):
        return self.logits(image_features, self.eval_text_features)
