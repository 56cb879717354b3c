"""The built-in world: a procedural dataset (Shapes) and a tiny CLIP pretrained on its captions.

Lets every method run end-to-end on a CPU with no downloads and give meaningful numbers::

    from clipadapt.world import generate, ensure_pretrained
    dataset_dir = generate("DATA")            # DATA/shapes, CoOp layout, seconds
    ckpt = ensure_pretrained()                # cached tiny CLIP, minutes the first time

or ``python -m clipadapt.world.pretrain --root DATA``.

Names are resolved lazily so that ``python -m clipadapt.world.shapes`` and importing the package
stay light (no torch / open_clip import until a model is needed).
"""
import os

ARCH = "shapes-clip-tiny"
MODEL_CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model_configs")

_LAZY = {
    "generate": "shapes",
    "caption": "shapes",
    "CLASSNAMES": "shapes",
    "ensure_pretrained": "pretrain",
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
