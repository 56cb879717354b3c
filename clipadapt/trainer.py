"""ClipTrainer: what every CLIP trainer shares, so a trainer file holds only its method.

- a frozen open_clip CLIP (`self.clip_model`, `self.text_encoder`, `self.tokenizer`), in the
  precision of the trainer's PREC key;
- image features instead of images: `parse_batch_train` / `parse_batch_test` return
  (features, labels). With FEATURES.CACHE on they come from the on-disk cache (one augmented view
  per epoch, test features once); otherwise the frozen encoder runs on each batch;
- the class-name spaces of the protocols (`classnames` = test label space, `train_classnames`,
  `base_classnames`, `new_classnames`);
- checkpoints that name their trainer and backbone, and a `prepare_eval()` hook that runs once per
  evaluation (for text features that do not change between batches).
"""
from functools import partial

import torch
import torch.nn.functional as F

from .checkpoints import (CheckpointError, check_weights, last_saved_epoch, load_checkpoint, load_state_without_derived,
                          model_files, weights_fingerprint)
from .config import ConfigError, choice_error
from .clip.prompts import POSITIONS
from .clip import (PRECISIONS, TextEncoder, check_input_config, compute_dtype, embed_dim, input_size,
                   load_clip_from_cfg, precision_dtype, precision_key, prompts_for, state_dict_digest)
from .engine import CheckpointMixin, TrainerX, build_data_loader, build_transform
from .evaluation import GZSLClassification
from .features import FeatureCache, encode_images, feature_key, image_list_digest
from .loading import IndexDataset
from .weights_identity import backbone_name


# Our checkpoint logic on top of either engine (the built-in TrainerX already has it).
_BASES = (TrainerX,) if issubclass(TrainerX, CheckpointMixin) else (CheckpointMixin, TrainerX)




class ClipTrainer(*_BASES):
    CONFIG_NODE = None  # the trainer's node under cfg.TRAINER, e.g. "COOP"
    # A trainer that prompts the image encoder (MaPLe, IVLP) gets images in its batches, never cached
    # features: its image features change with every step.
    PROMPTS_IMAGE_ENCODER = False
    LEARNS = True  # False: nothing is trained (zero-shot), so --eval-only needs no --model-dir
    # True: the learned weights hold one entry per training class (a linear probe, a cache of labelled
    # features), so they evaluate on those classes only: the checkpoint names them, and loading it for
    # another class list is refused.
    CLASS_BOUND = False
    # True: MODEL.INIT_RUN may name a trained run whose models this run starts from (SHIP's
    # per-target cross-dataset fine-tuning); other trainers refuse the key.
    STARTS_FROM_RUN = False

    @classmethod
    def add_config(cls, cfg):
        """Add the trainer's own node cfg.TRAINER.<CONFIG_NODE>, filled by `config_defaults` (called
        by build_config for the requested trainer only, so other methods' keys stay unknown)."""
        if cls.CONFIG_NODE:
            from yacs.config import CfgNode
            cfg.TRAINER[cls.CONFIG_NODE] = CfgNode()
            cls.config_defaults(cfg.TRAINER[cls.CONFIG_NODE])

    @staticmethod
    def config_defaults(node):
        """Set the method's keys and their defaults on `node` (each trainer's own)."""

    def __init__(self, cfg):
        super().__init__(cfg)  # the engine calls check_cfg first
        if cfg.DATASET.SUBSAMPLE_CLASSES == "gzsl":
            self.evaluator = GZSLClassification(cfg, lab2cname=self.lab2cname, num_seen=len(self.base_classnames))

    # ----- config --------------------------------------------------------------------------------
    @classmethod
    def check_cfg(cls, cfg):
        """Refuse a config the method cannot run (train.py calls it before the run folder is touched, the
        engine again when the trainer is built). A classmethod: it reads only `cfg`. Here the keys many
        trainer nodes share (PREC, CLASS_TOKEN_POSITION); a trainer adds its own and calls super()."""
        cls.check_init_run(cfg)
        node = cfg.TRAINER[cls.CONFIG_NODE] if cls.CONFIG_NODE else None
        if node is None:
            return
        key = f"TRAINER.{cls.CONFIG_NODE}"
        if "PREC" in node and node.PREC not in PRECISIONS:
            raise choice_error(f"{key}.PREC", node.PREC, PRECISIONS)
        if "CLASS_TOKEN_POSITION" in node and node.CLASS_TOKEN_POSITION not in POSITIONS:
            raise choice_error(f"{key}.CLASS_TOKEN_POSITION", node.CLASS_TOKEN_POSITION, POSITIONS)

    @property
    def method_cfg(self):
        return self.cfg.TRAINER[self.CONFIG_NODE] if self.CONFIG_NODE else None

    @property
    def prec(self):
        node = self.method_cfg
        return node.PREC if node is not None and "PREC" in node else "fp32"

    @property
    def head_dtype(self):
        """The dtype of a learned prompt context and of the head's arithmetic (normalisation, logits,
        loss). CoOp's PREC fp16 runs its whole CustomCLIP in fp16 (fp16 context updated by fp16 SGD,
        fp16 logits and cross-entropy), so fp16 on a GPU is fp16. Everything else is fp32: amp gets its
        fp16 matmuls from autocast, and bf16 (ours, not CoOp's) keeps the head in fp32, where SGD steps
        are not lost to bf16's 8-bit mantissa."""
        dtype, _ = precision_dtype(self.prec, self.device)
        return torch.float16 if dtype == torch.float16 else torch.float32

    @property
    def use_amp(self):
        return precision_dtype(self.prec, self.device)[1]

    def autocast(self, enabled=True):
        """fp16 autocast under PREC amp, else a no-op. As in Dassl's trainers (CoOp's amp), only the
        training step runs under it: evaluation calls the model without it, so the image features of
        val/test and the evaluation head are fp32 (enabled=False)."""
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp and enabled)

    # ----- data: image features in place of images -------------------------------------------------
    def build_data_loader(self):
        super().build_data_loader()
        self.use_feature_cache = bool(self.cfg.FEATURES.CACHE) and not self.PROMPTS_IMAGE_ENCODER
        if self.cfg.FEATURES.CACHE and self.PROMPTS_IMAGE_ENCODER:
            print(f"Feature cache not used: {type(self).__name__} prompts the image encoder, so images are encoded "
                  "at every step")
        self._split_data = {"train_x": self.dm.dataset.train_x, "val": self.dm.dataset.val,
                            "test": self.dm.dataset.test}
        self._features = {}
        self._eval_split = "test"
        if self.use_feature_cache:
            # Same sampler, batch size and drop_last as the image loaders; no image decoding.
            cfg = self.cfg
            self.train_loader_x = build_data_loader(
                cfg, cfg.DATALOADER.TRAIN_X.SAMPLER, self.dm.dataset.train_x, cfg.DATALOADER.TRAIN_X.BATCH_SIZE,
                is_train=True, dataset_wrapper=_index_wrapper)
            if self.val_loader is not None:
                self.val_loader = build_data_loader(
                    cfg, "SequentialSampler", self.dm.dataset.val, cfg.DATALOADER.TEST.BATCH_SIZE,
                    is_train=False, dataset_wrapper=_index_wrapper)
            self.test_loader = build_data_loader(
                cfg, "SequentialSampler", self.dm.dataset.test, cfg.DATALOADER.TEST.BATCH_SIZE,
                is_train=False, dataset_wrapper=_index_wrapper)

    def training_loader(self, batch_size):
        """Shuffled training images (their cached-feature indices with FEATURES.CACHE) in batches of
        `batch_size`, the last partial batch kept, as the loaders of SHIP's and Tip-Adapter's released
        code are (Dassl's drops it)."""
        if self.use_feature_cache:
            return build_data_loader(self.cfg, "RandomSampler", self.dataset.train_x, batch_size, is_train=True,
                                     dataset_wrapper=_index_wrapper, drop_last=False)
        return build_data_loader(self.cfg, "RandomSampler", self.dataset.train_x, batch_size,
                                 tfm=self.transform_train, is_train=True, drop_last=False)

    @property
    def transform_train(self):
        # Dassl's DataManager does not keep its transforms; both engines build them the same way.
        if getattr(self.dm, "tfm_train", None) is None:
            self.dm.tfm_train = build_transform(self.cfg, is_train=True)
        return self.dm.tfm_train

    @property
    def transform_test(self):
        if getattr(self.dm, "tfm_test", None) is None:
            self.dm.tfm_test = build_transform(self.cfg, is_train=False)
        return self.dm.tfm_test

    @property
    def dataset(self):
        return self.dm.dataset

    @property
    def classnames(self):
        """Names of the test label space, in label order."""
        return list(self.dm.dataset.classnames)

    @property
    def train_classnames(self):
        """Names of the classes training images can have: the base classes in GZSL, else `classnames`."""
        if self.cfg.DATASET.SUBSAMPLE_CLASSES == "gzsl":
            return list(self.dm.dataset.base_classnames)
        return self.classnames

    @property
    def base_classnames(self):
        return list(getattr(self.dm.dataset, "base_classnames", self.classnames))

    @property
    def new_classnames(self):
        return list(getattr(self.dm.dataset, "new_classnames", []))

    # ----- CLIP ------------------------------------------------------------------------------------
    def load_clip(self):
        """Load the frozen CLIP of MODEL.BACKBONE; sets clip_model, tokenizer, text_encoder, backbone."""
        print(f"Loading CLIP (backbone: {self.cfg.MODEL.BACKBONE.NAME})")
        self.clip_model, self.tokenizer, self.backbone = load_clip_from_cfg(self.cfg, device=self.device, prec=self.prec)
        weights = self.backbone.weights
        print(f"Loaded CLIP {self.backbone.arch} with "
              + ("random weights (MODEL.BACKBONE.PRETRAINED False)" if weights is None else f"weights {weights}"))
        check_input_config(self.cfg.INPUT, self.backbone, input_size(self.clip_model))
        self.text_encoder = TextEncoder(self.clip_model, cut=self.cfg.MODEL.CUT_TEXT_TOKENS)
        self._image_encoder = self.clip_model.encode_image
        if self.cfg.MODEL.COMPILE_IMAGE_ENCODER:
            self._image_encoder = torch.compile(self.clip_model.visual)
        if self.backbone.weights is None:  # random weights: name them by their values
            self.backbone.identity += ":" + state_dict_digest(self.clip_model.visual)
        return self.clip_model

    @classmethod
    def check_init_run(cls, cfg):
        """MODEL.INIT_RUN: only for a trainer that starts from another run, and only a run with checkpoints."""
        directory = cfg.MODEL.INIT_RUN
        if not directory:
            return
        if not cls.STARTS_FROM_RUN:
            raise ConfigError(f"MODEL.INIT_RUN ({directory}) starts a run from another run's models, which "
                              f"{cls.__name__} does not do (SHIP's per-target cross-dataset runs do). Drop the key.")
        try:
            model_files(directory, cfg.MODEL.INIT_RUN_EPOCH or last_saved_epoch(directory))
        except CheckpointError as exc:
            raise ConfigError(f"MODEL.INIT_RUN: {exc}") from None

    def load_init_run(self):
        """Load the models of MODEL.INIT_RUN (at MODEL.INIT_RUN_EPOCH, 0 = its last epoch) into this run's."""
        directory = self.cfg.MODEL.INIT_RUN
        epoch = self.cfg.MODEL.INIT_RUN_EPOCH or last_saved_epoch(directory)
        print(f"Starting from the models of {directory} at epoch {epoch}")
        self.load_model(directory, epoch)

    def load_init_weights(self, module, name):
        """Load MODEL.INIT_WEIGHTS (if set) into `module`: safe loader and the buffer-dropping of
        --model-dir, so a CoOp-format checkpoint (with token_prefix/token_suffix) loads too."""
        fpath = self.cfg.MODEL.INIT_WEIGHTS
        if not fpath:
            return
        try:
            state = load_checkpoint(fpath)
        except (FileNotFoundError, RuntimeError) as exc:
            raise CheckpointError(f"MODEL.INIT_WEIGHTS: {exc}") from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        load_state_without_derived(module, state, fpath, name)

    @property
    def embed_dim(self):
        """D, the dimension CLIP's image and text features share (read from the model)."""
        return embed_dim(self.clip_model)

    @property
    def logit_scale(self):
        return self.clip_model.logit_scale.exp().float()

    def encode_images(self, images, train=True):
        """Features of a batch of images; `train` False for evaluation (no autocast under amp)."""
        with torch.no_grad(), self.autocast(enabled=train):
            return self._image_encoder(images.to(compute_dtype(self.clip_model.visual))).float()

    def encode_texts(self, texts, dtype=torch.float32):
        """Unit-norm features of fixed prompts (computed once by the caller, never per step), cast to
        `dtype` before they are normalised."""
        tokenized = self.tokenizer(texts).to(self.device)
        with self.autocast():
            return self.text_encoder.encode_tokenized(tokenized, dtype=dtype)

    def ensemble_weights(self, classnames, templates, dtype=torch.float32):
        """(n_cls, D) unit-norm mean of the unit-norm features of several templates per class (CoOp's
        ZeroshotCLIP2, Tip-Adapter's ImageNet classifier), summed one template at a time in `dtype`
        as CoOp's fp16 rounding does."""
        print(f"Prompt ensembling (n={len(templates)})")
        total = 0
        for template in templates:
            total = total + self.encode_texts([template.format(c.replace("_", " ")) for c in classnames], dtype)
        return self.normalize(total / len(templates))

    def prompt_weights(self, classnames, template=""):
        """(n_cls, D) float32 unit-norm features of one hand-crafted prompt per class (`template`: "" =
        the dataset's CoOp template): fixed class weights, encoded once per class list and template."""
        cache = self.__dict__.setdefault("_prompt_weights", {})
        key = (tuple(classnames), template)
        if key not in cache:
            prompts = prompts_for(classnames, self.cfg.DATASET.NAME, template)
            print(f"Prompts: {prompts[:3]}{' ...' if len(prompts) > 3 else ''}")
            cache[key] = self.encode_texts(prompts).float()
        return cache[key]

    def split_features(self, split):
        """(N, D) image features of a whole split under the test transform: from the cache, or (FEATURES.CACHE
        False) from the frozen encoder now, written nowhere."""
        if self.use_feature_cache:
            return self.cached_features(split)
        return self._encode_split(split).to(self.device)

    def training_view(self, view):
        """(N, D) raw features of the training images under augmented view `view` (cached, or computed now)."""
        if self.use_feature_cache:
            return self.cached_features("train_x", view)
        return self._encode_split("train_x", view).to(self.device)

    def _encode_split(self, split, view=None):
        """The frozen encoder over a whole split; `view` selects an augmented training view (its own seed)."""
        train = view is not None
        what = f"{split} view {view}" if train else split
        return encode_images(partial(self.encode_images, train=train), self._split_data[split],
                             self.transform_train if train else self.transform_test,
                             view_seed=self._view_seed(view), batch_size=self.cfg.DATALOADER.TEST.BATCH_SIZE,
                             num_workers=self.cfg.DATALOADER.NUM_WORKERS, device=self.device,
                             desc=f"Image features ({what})")

    def _view_seed(self, view):
        return None if view is None else max(self.cfg.SEED, 0) * 10_007 + view

    def cached_features(self, split, view=None):
        """(N, D) features of a split from the feature cache; `view` selects an augmented training view."""
        cache_id = (split, view)
        if cache_id in self._features:
            return self._features[cache_id]
        self._features = {k: v for k, v in self._features.items() if k[1] is None}  # keep one train view
        data = self._split_data[split]
        transform = self.transform_train if view is not None else self.transform_test
        train = view is not None
        prec = self.prec if train or self.prec != "amp" else "fp32"  # amp evaluates without autocast
        key = feature_key(
            dataset=self.cfg.DATASET.NAME, split=split, images=image_list_digest(data, self.cfg.DATASET.ROOT),
            backbone=self.backbone.identity, transform=repr(transform), view_seed=self._view_seed(view),
            prec=precision_key(prec, self.device),
        )
        cache = FeatureCache(self.cfg.FEATURES.CACHE_DIR)
        # A cache miss draws from the global RNG (the extraction DataLoader seeds itself from it) and
        # a hit does not; forking keeps the sampler order of later epochs the same either way, so a
        # resumed run (whose views are cached) trains exactly as an uninterrupted one.
        with torch.random.fork_rng(devices=[]):
            feats = cache.get_or_compute(
                key, lambda: self._encode_split(split, view),
                meta={"dataset": self.cfg.DATASET.NAME, "split": split, "view": view,
                      "backbone": self.backbone.identity},
            )
        feats = feats.to(self.device)
        self._features[cache_id] = feats
        return feats

    # Whether an epoch's batches read cached features of the training images (False for a run that
    # trains on no image of its own, e.g. SHIP's per-target cross-dataset runs).
    def reads_training_features(self):
        return self.use_feature_cache and not self.PROMPTS_IMAGE_ENCODER

    def run_epoch(self):
        """The epoch's augmented view is extracted (or loaded) first, under its own progress bar and
        rate, so that the training lines' time and ETA are those of training alone."""
        if self.reads_training_features():
            self.cached_features("train_x", self.train_view_index(self.epoch))
        super().run_epoch()

    def train_view_index(self, epoch):
        n_views = self.cfg.FEATURES.TRAIN_VIEWS
        return epoch % n_views if n_views > 0 else epoch

    def parse_batch_images(self, batch):
        """(images in the image encoder's dtype, labels), for a trainer that runs the encoder itself."""
        return batch["img"].to(self.device, compute_dtype(self.clip_model.visual)), batch["label"].to(self.device)

    def parse_batch_train(self, batch):
        if self.PROMPTS_IMAGE_ENCODER:
            return self.parse_batch_images(batch)
        label = batch["label"].to(self.device)
        if self.use_feature_cache:
            feats = self.cached_features("train_x", self.train_view_index(self.epoch))[batch["index"].to(self.device)]
        else:
            feats = self.encode_images(batch["img"].to(self.device))
        return feats, label

    def parse_batch_test(self, batch):
        if self.PROMPTS_IMAGE_ENCODER:
            return self.parse_batch_images(batch)
        label = batch["label"].to(self.device)
        if self.use_feature_cache:
            return self.cached_features(self._eval_split)[batch["index"].to(self.device)], label
        return self.encode_images(batch["img"].to(self.device), train=False), label

    def model_backward_and_update(self, loss, names=None):
        """Dassl's update, with a gradient scaler (CoOp's GradScaler(), its defaults) when PREC is amp."""
        if self.use_amp:
            if getattr(self, "_scaler", None) is None:
                self._scaler = torch.amp.GradScaler(self.device.type)
            self.detect_anomaly(loss)
            self.model_zero_grad(names)
            self._scaler.scale(loss).backward()
            for name in self.get_model_names(names):
                if self._optims[name] is not None:
                    self._scaler.step(self._optims[name])
            self._scaler.update()
        else:
            super().model_backward_and_update(loss, names)

    def finish_step(self, loss, output, label, **terms):
        """The end of every training step: backward and update, Dassl's per-epoch scheduler step, and the
        summary Dassl logs (loss, the method's own loss terms under their names, accuracy in %)."""
        self.model_backward_and_update(loss)
        self.end_of_epoch_lr_step()
        return {"loss": loss.item(), **{name: term.item() for name, term in terms.items()},
                "acc": (output.argmax(1) == label).float().mean().item() * 100}

    def end_of_epoch_lr_step(self):
        """Dassl steps schedulers per epoch from inside forward_backward, after the last batch."""
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()

    # ----- evaluation ------------------------------------------------------------------------------
    def before_train(self):
        self.check_model_selection()
        super().before_train()

    def check_model_selection(self):
        """TEST.FINAL_MODEL best_val picks the epoch on the validation split: refuse it, before training,
        where that split is missing or is the test set (the model would be chosen on the test set)."""
        if self.cfg.TEST.FINAL_MODEL != "best_val" or self.cfg.TEST.NO_TEST:
            return
        dataset = self.dm.dataset
        if not dataset.val or getattr(dataset, "val_is_test", False):
            what = "no validation split" if not dataset.val else "its test split as its validation split"
            raise ConfigError(f"TEST.FINAL_MODEL best_val selects the model on the validation split, and "
                              f"{self.cfg.DATASET.NAME} has {what}: the model would be chosen on the test set. Use "
                              "TEST.FINAL_MODEL last_step.")

    def prepare_eval(self):
        """Runs once before each evaluation pass: compute what does not change between batches."""

    @torch.no_grad()
    def test(self, split=None):
        split = split or self.cfg.TEST.SPLIT
        self._eval_split = "val" if split == "val" and self.val_loader is not None else "test"
        self.set_model_mode("eval")
        if self.use_feature_cache:
            self.cached_features(self._eval_split)  # extract (or load) before the evaluation bar starts
        self.prepare_eval()
        return super().test(split)

    # ----- checkpoints -----------------------------------------------------------------------------
    def after_epoch(self):
        """Stop at the end of an epoch whose weights diverged, before they are evaluated or saved."""
        for name in self.get_model_names():
            check_weights(self._models[name].state_dict(), name, self.epoch, "training stopped")
        super().after_epoch()

    def epoch_is_saved_or_compared(self):
        """True when the engine's after_epoch will save this epoch's model or evaluate it on val (what a
        model derives from its weights, e.g. PVA's router or Tip-Adapter's alpha and beta, must be set first)."""
        freq = self.cfg.TRAIN.CHECKPOINT_FREQ
        saves = (self.epoch + 1 == self.max_epoch) or (freq > 0 and (self.epoch + 1) % freq == 0)
        return saves or (not self.cfg.TEST.NO_TEST and self.cfg.TEST.FINAL_MODEL == "best_val")

    def checkpoint_meta(self):
        import open_clip
        meta = super().checkpoint_meta()
        meta["backbone"] = backbone_name(self.cfg)
        # Which weights, not only which name. Random weights (PRETRAINED False, for tests) are left out:
        # they differ with the RNG state at build time, and no result of them means anything anyway.
        if getattr(self, "clip_model", None) is not None and self.backbone.weights is not None:
            if getattr(self, "_backbone_fingerprint", None) is None:
                self._backbone_fingerprint = weights_fingerprint(self.clip_model)
            meta["backbone_weights"] = self._backbone_fingerprint
        meta["open_clip"] = open_clip.__version__
        meta["config"] = self.cfg.dump()
        if self.CLASS_BOUND:
            meta["classnames"] = self.train_classnames
        return meta

    def _load_usable(self, fpath, hint=""):
        checkpoint = super()._load_usable(fpath, hint)
        fitted_on = (checkpoint.get("meta") or {}).get("classnames") if self.CLASS_BOUND else None
        if fitted_on is not None and list(fitted_on) != self.classnames:
            raise CheckpointError(
                f'Checkpoint "{fpath}" is a {type(self).__name__} of {len(fitted_on)} classes ({", ".join(fitted_on[:3])}, '
                f"...); this run classifies {len(self.classnames)} others ({', '.join(self.classnames[:3])}, ...). Its "
                "weights exist only for the classes it was trained on: evaluate it on the same classes.")
        return checkpoint

    @staticmethod
    def normalize(x):
        return F.normalize(x, dim=-1)


def _index_wrapper(cfg, data_source, transform=None, is_train=False):
    return IndexDataset(data_source)
