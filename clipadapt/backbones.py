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

# CoOp/OpenAI CLIP names -> open_clip configs of OpenAI's architecture (all with the "openai" weights).
COOP_NAMES = {
    "RN50": "RN50-quickgelu", "RN101": "RN101-quickgelu", "RN50x4": "RN50x4-quickgelu",
    "RN50x16": "RN50x16-quickgelu", "RN50x64": "RN50x64-quickgelu", "ViT-B/32": "ViT-B-32-quickgelu",
    "ViT-B/16": "ViT-B-16-quickgelu", "ViT-L/14": "ViT-L-14-quickgelu", "ViT-L/14@336px": "ViT-L-14-336-quickgelu",
}
# sha256 of OpenAI's own .pt file of each CoOp name, as its download URL (in open_clip's registry of
# the "openai" tag) carries it; tests/test_weights_identity.py checks them against open_clip's.
OPENAI_FILE_SHA256 = {
    "RN50": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    "RN101": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
    "RN50x4": "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd",
    "RN50x16": "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa",
    "RN50x64": "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c",
    "ViT-B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
    "ViT-B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    "ViT-L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    "ViT-L/14@336px": "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
}


def register_builtin_backbone(name, arch, config_dir, checkpoint):
    """Make MODEL.BACKBONE.NAME `name` load `arch` with the weights `checkpoint()` returns."""
    BUILTIN_BACKBONES[name] = BuiltinBackbone(arch, config_dir, checkpoint)


def builtin_for_arch(arch):
    """The registered backbone of open_clip architecture `arch`, or None."""
    return next((b for b in BUILTIN_BACKBONES.values() if b.arch == arch), None)
