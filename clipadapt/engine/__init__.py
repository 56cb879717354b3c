"""Dassl's API in one place: the one switch between the real `dassl` package and the built-in engine.

Trainers and datasets import everything Dassl-shaped from here. When `dassl` imports, the registries,
`TrainerX`, `DataManager`, `Datum` and `DatasetBase` are Dassl's own, so our trainers and datasets
register into Dassl; the optimizer/scheduler builders, checkpoint I/O and evaluator stay ours, which
is the shim for Dassl's faults on current torch (schedulers passing `verbose`, checkpoints that
pickle a scheduler object and so fail `torch.load(weights_only=True)`, `load_model` crashing on a
`None` val_result). The shim rebinds the names in every loaded dassl module, since Dassl's modules
import them by name (`dassl.engine.trainer` and each of its da/dg/ssl trainers).
Set CLIPADAPT_ENGINE=builtin to force the built-in engine (or =dassl to require
Dassl).
"""
import os
import sys

from .builtin.config import get_cfg_default as _builtin_cfg_default
from .builtin.data_manager import build_data_loader
from .builtin.evaluator import Classification, EvaluatorBase
from .builtin.optim import build_lr_scheduler, build_optimizer
from .builtin.registry import Registry, check_availability, unknown_name_message
from ..checkpoints import CheckpointMixin
from .builtin.utils import (AverageMeter, MetricMeter, atomic_torch_save, collect_env_info, count_num_param,
                            load_checkpoint, mkdir_if_missing, set_random_seed, setup_logger)

_choice = os.environ.get("CLIPADAPT_ENGINE", "auto").lower()
if _choice not in ("auto", "builtin", "dassl"):
    raise ValueError(f'CLIPADAPT_ENGINE="{_choice}" is not one of auto, builtin, dassl')


def patch_bound_names(package, replacements):
    """Rebind, in every loaded module of `package`, each attribute that is (identically) a key of
    `replacements` to its value; returns the "module.name" strings patched."""
    patched = []
    by_id = {id(old): new for old, new in replacements.items()}
    for mod_name, module in list(sys.modules.items()):
        if module is None or not (mod_name == package or mod_name.startswith(package + ".")):
            continue
        for attr, value in list(vars(module).items()):
            if id(value) in by_id and any(value is old for old in replacements):
                setattr(module, attr, by_id[id(value)])
                patched.append(f"{mod_name}.{attr}")
    return patched


ENGINE = "builtin"
if _choice != "builtin":
    try:
        import dassl  # noqa: F401
        ENGINE = "dassl"
    except ImportError:
        if _choice == "dassl":
            raise ImportError("CLIPADAPT_ENGINE=dassl, but the dassl package is not importable. "
                              "Install Dassl.pytorch or unset CLIPADAPT_ENGINE.")

if ENGINE == "dassl":
    from dassl.config import get_cfg_default as _dassl_cfg_default
    from dassl.data import DataManager
    from dassl.data.transforms import build_transform
    from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum
    from dassl.engine import TRAINER_REGISTRY, SimpleTrainer, TrainerX
    from dassl.evaluation import EVALUATOR_REGISTRY
    import dassl.optim.lr_scheduler
    import dassl.utils.torchtools

    # Shims: our warmup schedulers (no `verbose`, plain-data state) and our safe loader. Dassl's
    # modules bound the old functions by name at import (`from dassl.optim import build_lr_scheduler`
    # in dassl.engine.trainer and every da/dg/ssl trainer), so every loaded dassl module that holds
    # one of them gets ours; modules imported later read the patched package attributes.
    patch_bound_names("dassl", {dassl.optim.lr_scheduler.build_lr_scheduler: build_lr_scheduler,
                                dassl.utils.torchtools.load_checkpoint: load_checkpoint})

    def get_cfg_default():
        """Dassl's defaults plus the keys our built-in config adds (feature cache, subsampling)."""
        cfg = _dassl_cfg_default()
        ours = _builtin_cfg_default()
        cfg.set_new_allowed(True)
        for key in ("FEATURES",):
            cfg[key] = ours[key].clone()
        cfg.DATASET.SUBSAMPLE_CLASSES = ours.DATASET.SUBSAMPLE_CLASSES
        cfg.DATASET.SKIP_UNREADABLE = ours.DATASET.SKIP_UNREADABLE
        cfg.DATASET.VERIFY_MANIFEST = ours.DATASET.VERIFY_MANIFEST
        cfg.MODEL.BACKBONE.PRETRAINED_TAG = ours.MODEL.BACKBONE.PRETRAINED_TAG
        cfg.OPTIM.EPS = ours.OPTIM.EPS
        cfg.MODEL.CUT_TEXT_TOKENS = ours.MODEL.CUT_TEXT_TOKENS
        cfg.MODEL.COMPILE_IMAGE_ENCODER = ours.MODEL.COMPILE_IMAGE_ENCODER
        cfg.MODEL.INIT_RUN = ours.MODEL.INIT_RUN
        cfg.MODEL.INIT_RUN_EPOCH = ours.MODEL.INIT_RUN_EPOCH
        cfg.set_new_allowed(False)
        return cfg
else:
    from .builtin.data_manager import DataManager
    from .builtin.transforms import build_transform
    from .builtin.dataset_base import DatasetBase, Datum
    from .builtin.trainer import SimpleTrainer, TrainerX

    DATASET_REGISTRY = Registry("dataset")
    TRAINER_REGISTRY = Registry("trainer")
    EVALUATOR_REGISTRY = Registry("evaluator")
    get_cfg_default = _builtin_cfg_default

if "Classification" not in EVALUATOR_REGISTRY.registered_names():
    EVALUATOR_REGISTRY.register(Classification)


def build_trainer(cfg):
    if cfg.VERBOSE:
        print(f"Loading trainer: {cfg.TRAINER.NAME}")
    return TRAINER_REGISTRY.get(cfg.TRAINER.NAME)(cfg)


def build_dataset(cfg):
    if cfg.VERBOSE:
        print(f"Loading dataset: {cfg.DATASET.NAME}")
    return DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)


def build_evaluator(cfg, **kwargs):
    return EVALUATOR_REGISTRY.get(cfg.TEST.EVALUATOR)(cfg, **kwargs)
