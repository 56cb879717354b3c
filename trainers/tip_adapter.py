"""Tip-Adapter and Tip-Adapter-F (Zhang et al., ECCV 2022): a cache of the few-shot training features as
keys and their one-hot labels as values, added to CLIP's zero-shot logits (clipadapt/cache_model.py
holds the math). CLIP stays frozen.

- `TipAdapter` is training-free: the cache is built once (one "epoch") and alpha and beta are searched
  on the validation split.
- `TipAdapterF` fine-tunes the keys (AdamW, cosine schedule stepped per iteration, as released) with
  alpha and beta at their initial values, then searches them on the validation split at every epoch
  whose model is saved or compared, so each checkpoint holds the alpha and beta it deploys.

What differs from the released code, and why (docs/TipAdapter.md):
- The model is never chosen on the test set (the released Tip-Adapter-F keeps its best test epoch,
  Tip-Adapter#11): the last epoch, or TEST.FINAL_MODEL best_val.
- Where the validation split is the test set (CoOp's ImageNet) or missing, alpha and beta stay at
  their initial values (the released main_imagenet.py searches on the test set).
- The validation split is CoOp's few-shot one (min(shots, 4) per class); the released code searches
  on the whole val split.
- The augmented training views come from the feature cache (view e of a seed is the same in every
  run), so the cache's views 0..AUGMENT_EPOCH-1 are also the first epochs' training views.
"""
import torch
import torch.nn.functional as F

from clipadapt.cache_model import (TipCache, cache_keys, cache_values, released_optimizer, released_value,
                                   search_alpha_beta)
from clipadapt.clip import IMAGENET_TEMPLATES_SELECT, template_for
from clipadapt.engine import TRAINER_REGISTRY
from clipadapt.trainer import ClipTrainer


@TRAINER_REGISTRY.register()
class TipAdapter(ClipTrainer):
    CONFIG_NODE = "TIP_ADAPTER"
    CLASS_BOUND = True  # the cache holds the training classes only
    LEARNABLE_KEYS = False

    @staticmethod
    def config_defaults(node):
        node.AUGMENT_EPOCH = 10  # augmented views averaged into the cache keys
        node.INIT_BETA = 1.0  # the sharpness
        node.INIT_ALPHA = 0.0  # the residual ratio; 0 = the released config's value for the dataset
        node.SEARCH_HP = True  # search alpha and beta on the validation split
        node.SEARCH_SCALE = []  # [beta max, alpha max]; [] = the released config's for the dataset
        node.SEARCH_STEP = [200, 20]  # grid points for beta, alpha
        node.LOGIT_SCALE = 100.0  # the zero-shot logits' scale (the released code's 100); 0 = the model's own
        node.PREC = "fp16"  # the released code runs OpenAI's fp16 CLIP

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        node, name = cfg.TRAINER.TIP_ADAPTER, cls.__name__
        if cfg.DATASET.SUBSAMPLE_CLASSES in ("new", "gzsl"):
            raise ValueError(
                f"{name} cannot evaluate DATASET.SUBSAMPLE_CLASSES {cfg.DATASET.SUBSAMPLE_CLASSES}: its cache holds "
                "only the classes it was built on. SHIP with TRAINER.SHIP.STAGE2 tip_adapter_f adds synthesized "
                "features of the new classes to the cache.")
        if node.AUGMENT_EPOCH < 1:
            raise ValueError(f"TRAINER.TIP_ADAPTER.AUGMENT_EPOCH = {node.AUGMENT_EPOCH} must be >= 1")
        if len(node.SEARCH_STEP) != 2 or min(node.SEARCH_STEP) < 1:
            raise ValueError(f"TRAINER.TIP_ADAPTER.SEARCH_STEP = {list(node.SEARCH_STEP)} must be two counts >= 1 "
                             "(beta, alpha)")
        if len(node.SEARCH_SCALE) not in (0, 2):
            raise ValueError(f"TRAINER.TIP_ADAPTER.SEARCH_SCALE = {list(node.SEARCH_SCALE)} must be [beta max, "
                             "alpha max], or [] for the released config's values")
        for key, released in (("INIT_ALPHA", "init_alpha"), ("SEARCH_SCALE", "search_scale")):
            if not node[key] and released_value(cfg.DATASET.NAME, released) is None and (key == "INIT_ALPHA" or node.SEARCH_HP):
                raise ValueError(f"TRAINER.TIP_ADAPTER.{key} is unset and the released code has no config for "
                                 f"{cfg.DATASET.NAME}: set it (the released values per dataset are in "
                                 "clipadapt/cache_model.py)")
        if not cls.LEARNABLE_KEYS and cfg.OPTIM.MAX_EPOCH != 1:
            raise ValueError(f"OPTIM.MAX_EPOCH = {cfg.OPTIM.MAX_EPOCH}: TipAdapter builds its cache once; set it to 1 "
                             "(the test scripts load checkpoint model.pth.tar-1)")

    @property
    def init_alpha(self):
        return self.method_cfg.INIT_ALPHA or released_value(self.cfg.DATASET.NAME, "init_alpha")

    @property
    def search_scale(self):
        return tuple(self.method_cfg.SEARCH_SCALE) or released_value(self.cfg.DATASET.NAME, "search_scale")

    @property
    def zero_shot_scale(self):
        return self.method_cfg.LOGIT_SCALE or self.logit_scale.item()

    # ----- model -----------------------------------------------------------------------------------
    def build_model(self):
        self.load_clip()
        self.cache = TipCache(len(self.dataset.train_x), self.embed_dim, len(self.train_classnames),
                              learnable=self.LEARNABLE_KEYS, dtype=self.head_dtype).to(self.device)
        self.build_optimizer()
        self.register_model("tip_adapter", self.cache, getattr(self, "optim", None), getattr(self, "sched", None))

    def build_optimizer(self):
        """None: nothing trains."""

    def clip_weights(self, classnames):
        """(n_cls, D) the zero-shot classifier: the dataset's template (its CoOp template, which the released
        datasets/*.py copy), the 7-template ensemble on ImageNet, as released."""
        if self.cfg.DATASET.NAME == "ImageNet":
            return self.ensemble_weights(classnames, IMAGENET_TEMPLATES_SELECT, self.head_dtype)
        return self.prompt_weights(classnames, template_for(self.cfg.DATASET.NAME)).to(self.head_dtype)

    def zero_shot_logits(self, features, weights):
        return self.zero_shot_scale * features @ weights.t()

    def tip_logits(self, features, weights, alpha=None, beta=None):
        """Zero-shot logits + the cache's, of raw image features (normalised here)."""
        features = self.normalize(features.to(self.head_dtype))
        return self.zero_shot_logits(features, weights) + self.cache(features, alpha, beta)

    # ----- the cache -------------------------------------------------------------------------------
    def build_cache(self):
        node = self.method_cfg
        print(f"Constructing the cache from {len(self.dataset.train_x)} training images averaged over "
              f"{node.AUGMENT_EPOCH} augmented views")
        keys = cache_keys([self.training_view(v) for v in range(node.AUGMENT_EPOCH)])
        labels = torch.tensor([item.label for item in self.dataset.train_x], device=self.device)
        self.cache.fill(keys, cache_values(labels, len(self.train_classnames)), self.init_alpha, node.INIT_BETA)

    def search(self):
        """alpha and beta on the validation split (the grid of the released `search_hp`), set on the cache."""
        node = self.method_cfg
        if not node.SEARCH_HP:
            print(f"alpha {self.cache.alpha.item():g}, beta {self.cache.beta.item():g} (TRAINER.TIP_ADAPTER."
                  "SEARCH_HP False)")
            return
        dataset = self.dataset
        if not dataset.val or getattr(dataset, "val_is_test", False):
            what = "no validation split" if not dataset.val else "its test split as its validation split"
            print(f"Note: {self.cfg.DATASET.NAME} has {what}, so alpha and beta are not searched (that would tune "
                  f"on the test set): they stay at alpha {self.init_alpha:g}, beta {node.INIT_BETA:g}")
            self.cache.set_hparams(self.init_alpha, node.INIT_BETA)
            return
        print("Searching alpha and beta on the val set")
        with torch.no_grad():
            features = self.normalize(self.split_features("val").to(self.head_dtype))
            labels = torch.tensor([item.label for item in dataset.val], device=self.device)
            clip_logits = self.zero_shot_logits(features, self.clip_weights(self.train_classnames))
            affinity = self.cache.affinity(features)
            beta, alpha, acc = search_alpha_beta(affinity, self.cache.values.to(affinity.dtype), clip_logits,
                                                 labels, self.search_scale, tuple(node.SEARCH_STEP))
        print(f"After searching, the best val accuracy: {acc:.2f} (beta {beta:.2f}, alpha {alpha:.2f})")
        self.cache.set_hparams(alpha, beta)

    def run_epoch(self):
        self.build_cache()
        self.search()
        print("epoch [1/1] the cache built, alpha and beta set")

    # ----- evaluation ------------------------------------------------------------------------------
    def prepare_eval(self):
        self.eval_weights = self.clip_weights(self.classnames)

    def model_inference(self, image_features):
        return self.tip_logits(image_features, self.eval_weights).float()


@TRAINER_REGISTRY.register()
class TipAdapterF(TipAdapter):
    """Tip-Adapter-F: the cache keys fine-tuned with cross-entropy on the zero-shot + cache logits."""
    LEARNABLE_KEYS = True

    def build_optimizer(self):
        self.optim, self.sched = released_optimizer(self.cache.parameters(), self.cfg.OPTIM, len(self.train_loader_x))

    def build_data_loader(self):
        super().build_data_loader()
        self.train_loader_x = self.training_loader(self.cfg.DATALOADER.TRAIN_X.BATCH_SIZE)

    def before_train(self):
        super().before_train()  # resumes the keys from a checkpoint when there is one
        if self.start_epoch == 0:
            self.build_cache()
        self.train_weights = self.clip_weights(self.train_classnames)

    def run_epoch(self):
        return super(TipAdapter, self).run_epoch()  # Dassl's epoch over the training batches

    def forward_backward(self, batch):
        features, label = self.parse_batch_train(batch)
        output = self.tip_logits(features, self.train_weights, self.init_alpha, self.method_cfg.INIT_BETA)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        self.sched.step()  # per iteration
        return {"loss": loss.item(), "acc": (output.argmax(1) == label).float().mean().item() * 100}

    def after_epoch(self):
        if self.epoch_is_saved_or_compared():
            self.search()
        super().after_epoch()
