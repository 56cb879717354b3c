"""The built-in world: a procedural dataset (Shapes) and a tiny CLIP pretrained on its captions.

Lets every method run end-to-end on a CPU with no downloads and give meaningful numbers::

    from clipadapt.world import generate, shipped_checkpoint
    dataset_dir = generate("DATA")            # DATA/shapes, CoOp layout, seconds
    ckpt = shipped_checkpoint()               # the CLIP shipped with the package, digest-checked

``python -m clipadapt.world.pretrain --root DATA`` checks it and prints its zero-shot accuracy;
``--force`` pretrains a new one (`ensure_pretrained`) and ships it.

Names are resolved lazily so that ``python -m clipadapt.world.shapes`` and importing the package
stay light (no torch / open_clip import until a model is needed).
"""
import os

from ..backbones import register_builtin_backbone

ARCH = "shapes-clip-tiny"
MODEL_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")

_LAZY = {
    "generate": "shapes",
    "caption": "shapes",
    "CLASSNAMES": "shapes",
    "ensure_pretrained": "pretrain",
    "shipped_checkpoint": "pretrain",
    "load_pretrained": "pretrain",
    "zero_shot_accuracy": "pretrain",
    "register_model_configs": "pretrain",
}

__all__ = ["ARCH", "MODEL_CONFIG_DIR", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _shipped_checkpoint():
    return __getattr__("shipped_checkpoint")()


# MODEL.BACKBONE.NAME shapes-clip: the CLIP shipped with the package.
register_builtin_backbone("shapes-clip", ARCH, MODEL_CONFIG_DIR, _shipped_checkpoint)
