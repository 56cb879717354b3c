"""Built-in backbones: models a part of the package ships (the world's CLIP), registered here by that
part, so the CLIP backend (clipadapt/clip) resolves their names without importing what lies above it.
Like open_clip's `add_model_config`, a registration names an open_clip config folder; it also names
the function that returns the weights file. No torch import here."""
from dataclasses import dataclass
from typing import Callable, Dict


@dataclass(frozen=True)
class BuiltinBackbone:
    arch: str                    # the open_clip architecture of the weights
    config_dir: str              # folder of its open_clip model config (json)
    checkpoint: Callable[[], str]  # returns the weights file's path (checked, built on first use)


BUILTIN_BACKBONES: Dict[str, BuiltinBackbone] = {}


def register_builtin_backbone(name, arch, config_dir, checkpoint):
    """Make MODEL.BACKBONE.NAME `name` load `arch` with the weights `checkpoint()` returns."""
    BUILTIN_BACKBONES[name] = BuiltinBackbone(arch, config_dir, checkpoint)


def builtin_for_arch(arch):
    """The registered backbone of open_clip architecture `arch`, or None."""
    return next((b for b in BUILTIN_BACKBONES.values() if b.arch == arch), None)
