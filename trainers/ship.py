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

from clipadapt.adapters import AdaptedClassifier
from clipadapt.clip import PromptLearner
from clipadapt.config import choice_error
from clipadapt.engine import TRAINER_REGISTRY, MetricMeter, build_lr_scheduler, build_optimizer
from clipadapt.trainer import ClipTrainer

STAGE2_CHOICES = ("coop", "clip_adapter")


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


class BiasGenerator(nn.Module):
    """z (B, latent) -> local bias (B, ctx_dim) added to every context token of the prompt."""

    def __init__(self, latent, hidden, ctx_dim, leaky_slope=0.0):
        super().__init__()
        act = nn.LeakyReLU(leaky_slope, inplace=True) if leaky_slope > 0 else nn.ReLU(inplace=True)
        self.net = nn.Sequential(nn.Linear(latent, hidden), act, nn.Linear(hidden, ctx_dim))

    def forward(self, z):
        return self.net(z)


def vae_loss(recon, x, mean, log_var, kl_weight=1.0):
    """(loss, rec, kld): squared L2 summed over dims, KL to N(0, I) summed over latent dims; both
    averaged over the batch."""
    rec = (recon - x).pow(2).sum(dim=1).mean()
    kld = -0.5 * (1 + log_var - mean.pow(2) - log_var.exp()).sum(dim=1).mean()
    return rec + kl_weight * kld, rec, kld


class PromptVAE(nn.Module):
    """Encoder, generator and the VAE's own context (N_CTX_VAE tokens, N(0, 0.02)); the decoder is
    the frozen text encoder, held by reference so it stays out of this module's state dict."""

    def __init__(self, text_encoder, tokenizer, classnames, feat_dim, n_ctx=4, enc_hidden=2048, gen_hidden=4096,
                 latent=512, leaky_slope=0.0, init_std=0.02):
        super().__init__()
        object.__setattr__(self, "text_encoder", text_encoder)
        self.latent = latent
        self.prompt_learner = PromptLearner(text_encoder, tokenizer, classnames, n_ctx=n_ctx, ctx_init="",
                                            init_std=init_std)
        ctx_dim = self.prompt_learner.ctx.shape[-1]
        self.encoder = FeatureEncoder(feat_dim, enc_hidden, latent)
        self.generator = BiasGenerator(latent, gen_hidden, ctx_dim, leaky_slope)
        init_weights(self.encoder, init_std)
        init_weights(self.generator, init_std)

    def decode(self, z, class_idx):
        """Unit-norm text features (B, D) of the prompts of classes `class_idx` shifted by G(z)."""
        bias = self.generator(z)  # (B, ctx_dim)
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
        z = torch.randn(len(class_idx), self.latent, device=self.prompt_learner.ctx.device)
        return self.decode(z, class_idx)


# ----- trainer -------------------------------------------------------------------------------------

@TRAINER_REGISTRY.register()
class SHIP(ClipTrainer):
    CONFIG_NODE = "SHIP"

    @staticmethod
    def config_defaults(node):
        node.STAGE2 = "coop"  # "coop" or "clip_adapter": the model fine-tuned on real + synthetic
        node.PREC = "fp32"  # the released code runs the text encoder in fp32 (.float())
        # Stage 1: the generator (released code, main_coop_vae.py; ImageNet values in vit_b16_imagenet.yaml)
        node.N_CTX_VAE = 4  # the VAE prompt's learnable context tokens
        node.ENC_HIDDEN = 2048  # encoder hidden units (4096 on ImageNet)
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

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node = cfg.TRAINER.SHIP
        if node.STAGE2 not in STAGE2_CHOICES:
            raise choice_error("TRAINER.SHIP.STAGE2", node.STAGE2, STAGE2_CHOICES)
        if node.SYN_PER_REAL < 0:
            raise ValueError(f"TRAINER.SHIP.SYN_PER_REAL must be >= 0, got {node.SYN_PER_REAL}")

    # ----- the label space of training --------------------------------------------------------------
    def stage2_label_space(self):
        """(class names of stage 2, indices of the label-only classes among them).

        base / gzsl: the base (seen) classes carry the training images with labels 0..m-1, and the new
        (unseen) classes, named by the dataset, follow as label-only classes m..m+k-1.
        all (cross-dataset source, few-shot): the training label space as it is; its classes without
        training images (none in CoOp's datasets) are the label-only ones. With none, SHIP is CoOp.
        """
        mode = self.cfg.DATASET.SUBSAMPLE_CLASSES
        if mode in ("base", "gzsl"):
            base, new = self.base_classnames, self.new_classnames
            if self.train_classnames != base:
                raise RuntimeError(f"SHIP expects the training labels 0..{len(base) - 1} to be the dataset's base "
                                   f"classes in {mode} mode; the dataset gives {self.train_classnames[:3]}...")
            return base + new, list(range(len(base), len(base) + len(new)))
        names = self.train_classnames
        with_images = {d.label for d in self.dataset.train_x}
        return names, [i for i in range(len(names)) if i not in with_images]

    # ----- model -------------------------------------------------------------------------------------
    def build_model(self):
        node = self.method_cfg
        self.load_clip()
        self.stage2_classnames, label_only = self.stage2_label_space()
        self.label_only = torch.tensor(label_only, dtype=torch.long, device=self.device)
        self.synthesizes = node.SYN_PER_REAL > 0 and len(label_only) > 0
        n_real = len(self.stage2_classnames) - len(label_only)
        print(f"SHIP: {len(self.stage2_classnames)} classes in training, {n_real} with images and "
              f"{len(label_only)} label-only (synthetic features)")

        # Stage 2 first: Dassl prints the learning rate of the first registered model.
        if node.STAGE2 == "coop":
            self.prompt_learner = PromptLearner(self.text_encoder, self.tokenizer, self.stage2_classnames,
                                                n_ctx=node.COOP_N_CTX, ctx_init=node.COOP_CTX_INIT)
            self.stage2_name, stage2 = "prompt_learner", self.prompt_learner
        else:
            self.build_adapter()
            self.stage2_name, stage2 = "clip_adapter", self.adapter
        self.optim = build_optimizer(stage2, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model(self.stage2_name, stage2, self.optim, self.sched)

        self.vae = PromptVAE(self.text_encoder, self.tokenizer, self.stage2_classnames, self.embed_dim,
                             n_ctx=node.N_CTX_VAE, enc_hidden=node.ENC_HIDDEN, gen_hidden=node.GEN_HIDDEN,
                             latent=node.LATENT, leaky_slope=node.GEN_LEAKY_SLOPE,
                             init_std=node.INIT_STD).to(self.device)
        self.vae_optim = torch.optim.AdamW(self.vae.parameters(), lr=node.VAE_LR, weight_decay=node.VAE_WEIGHT_DECAY)
        self.register_model("vae", self.vae, self.vae_optim, None)

    def build_adapter(self):
        node = self.method_cfg
        self.adapter = AdaptedClassifier(self.embed_dim, ratio=node.ADAPTER_RATIO,
                                         reduction=node.ADAPTER_REDUCTION).to(self.device)

    # ----- stage 2 model: class weights and logits ---------------------------------------------------
    def set_classnames(self, classnames):
        """Point the stage-2 classifier at `classnames` (all training classes, or the test label space)."""
        if self.method_cfg.STAGE2 == "coop":
            self.prompt_learner.set_classnames(classnames)
        else:
            self._fixed_text = self.prompt_weights(classnames)

    def text_features(self):
        """(n_cls, D) unit-norm class weights of the current class list."""
        if self.method_cfg.STAGE2 == "coop":
            prompts, tokenized = self.prompt_learner()
            with self.autocast():
                return self.normalize(self.text_encoder(prompts, tokenized).float())
        return self._fixed_text

    def logits(self, features, text_features):
        if self.method_cfg.STAGE2 == "clip_adapter":
            return self.adapter(features, text_features, self.logit_scale)
        return self.logit_scale * self.normalize(features) @ text_features.t()

    # ----- data: the released code's loaders keep the last partial batch (drop_last=False) ----------
    def build_data_loader(self):
        super().build_data_loader()
        self.train_loader_x = self.training_loader(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)  # stage 2

    # ----- stage 1: the generator --------------------------------------------------------------------
    def before_train(self):
        super().before_train()  # resumes stage 2 when a checkpoint exists
        if self.start_epoch > 0:
            print(f"SHIP: resuming stage 2 at epoch {self.start_epoch + 1}; the generator comes from the checkpoint")
        elif self.synthesizes:
            self.train_generator()
        else:
            why = ("TRAINER.SHIP.SYN_PER_REAL is 0" if self.label_only.numel() else
                   f"DATASET.SUBSAMPLE_CLASSES {self.cfg.DATASET.SUBSAMPLE_CLASSES} leaves no label-only classes")
            print(f"SHIP: {why}, so the generator is not trained and nothing is synthesized: stage 2 is plain "
                  f"{self.method_cfg.STAGE2} over the {len(self.stage2_classnames)} training classes")

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

    def synthetic_batch(self, n):
        """n synthetic features (n, D) and their labels, drawn uniformly from the label-only classes."""
        labels = self.label_only[torch.randint(len(self.label_only), (n,), device=self.device)]
        with self.autocast():
            feats = self.vae.synthesize(labels)
        return feats.float(), labels

    def forward_backward(self, batch):
        feats, label = self.parse_batch_train(batch)
        n_real = len(label)
        if self.synthesizes:
            n_syn = int(round(n_real * self.method_cfg.SYN_PER_REAL))
            syn_feats, syn_label = self.synthetic_batch(n_syn)
            feats = torch.cat([self.normalize(feats), syn_feats])
            label = torch.cat([label, syn_label])
        output = self.logits(feats, self.text_features())  # (n_real + n_syn, n_base + n_new)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss, self.stage2_name)
        self.end_of_epoch_lr_step()
        correct = (output.argmax(1) == label).float()
        summary = {"loss": loss.item(), "acc": correct[:n_real].mean().item() * 100}
        if len(label) > n_real:
            summary["acc_syn"] = correct[n_real:].mean().item() * 100
        return summary

    # ----- evaluation: the stage-2 model over the test label space ----------------------------------
    def prepare_eval(self):
        self.set_classnames(self.classnames)
        self.eval_text_features = self.text_features()

    def model_inference(self, image_features):
        return self.logits(image_features, self.eval_text_features)
