"""The one door to CLIP models: CoOp names, open_clip names + tags, built-in names and checkpoint files.

    "ViT-B/16", "RN50", ...      CoOp/OpenAI names -> open_clip arch + the "openai" weights
    "ViT-B-16"                   an open_clip arch; weights from MODEL.BACKBONE.PRETRAINED_TAG
                                 (a tag such as "laion2b_s34b_b88k", or a local file)
    "shapes-clip"                the built-in world's CLIP, pretrained here on first use
    "/path/to/model.pt"          a checkpoint written by this project ({"arch", "state_dict"})
MODEL.BACKBONE.PRETRAINED False gives random weights of the real architecture (for tests).
"""
import contextlib
import hashlib
import logging
import os
import os.path as osp
from dataclasses import dataclass

import open_clip
import torch

MODEL_CONFIG_DIR = osp.join(osp.dirname(__file__), "model_configs")

# CoOp/OpenAI CLIP names -> open_clip architecture names (all with the "openai" weights).
COOP_NAMES = {
    "RN50": "RN50", "RN101": "RN101", "RN50x4": "RN50x4", "RN50x16": "RN50x16", "RN50x64": "RN50x64",
    "ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14", "ViT-L/14@336px": "ViT-L-14-336",
}
BUILTIN_NAMES = {"shapes-clip": "shapes-clip-tiny"}
PRECISIONS = ("fp32", "fp16", "bf16", "amp")

_registered = False


def register_model_configs():
    """Make our tiny and built-in configs known to open_clip (idempotent)."""
    global _registered
    if _registered:
        return
    open_clip.add_model_config(MODEL_CONFIG_DIR)
    try:
        from clipadapt.world import MODEL_CONFIG_DIR as world_dir
        open_clip.add_model_config(world_dir)
    except ImportError:
        pass
    _registered = True


@dataclass
class BackboneSpec:
    arch: str            # open_clip architecture name
    weights: object      # None (random), an open_clip tag, or a file path
    identity: str        # what names these weights: goes into checkpoints and cache keys


def resolve_backbone(name, pretrained=True, pretrained_tag=""):
    register_model_configs()
    if not name:
        raise ValueError("MODEL.BACKBONE.NAME is empty: set it in the trainer config or with --backbone "
                         '(e.g. "ViT-B/16", "RN50", "shapes-clip").')
    if osp.isfile(name):
        return BackboneSpec(arch=None, weights=osp.abspath(name), identity=f"file:{_file_identity(name)}")
    if name in COOP_NAMES:
        arch, default_tag = COOP_NAMES[name], "openai"
    elif name in BUILTIN_NAMES:
        arch, default_tag = BUILTIN_NAMES[name], "builtin"
    elif name in open_clip.list_models():
        arch, default_tag = name, ""
    else:
        import difflib
        known = list(COOP_NAMES) + list(BUILTIN_NAMES) + open_clip.list_models()
        close = difflib.get_close_matches(name, known, n=3)
        raise ValueError(f'Unknown backbone "{name}". ' + (f"Did you mean {close}? " if close else "")
                         + "Use a CoOp name (ViT-B/16, RN50, ...), an open_clip model name, "
                           "a built-in name (shapes-clip) or a checkpoint file path.")
    if not pretrained:
        return BackboneSpec(arch, None, f"{arch}:random")
    tag = pretrained_tag or default_tag
    if not tag:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ValueError(f'Backbone "{name}" needs MODEL.BACKBONE.PRETRAINED_TAG (one of {tags}, or a local '
                         "file), or MODEL.BACKBONE.PRETRAINED False for random weights.")
    if osp.isfile(tag):
        return BackboneSpec(arch, osp.abspath(tag), f"{arch}:file:{_file_identity(tag)}")
    if tag == "builtin":
        from clipadapt.world import ensure_pretrained
        path = ensure_pretrained()
        return BackboneSpec(arch, path, f"{arch}:file:{_file_identity(path)}")
    return BackboneSpec(arch, tag, f"{arch}:{tag}")


def _file_identity(path):
    stat = os.stat(path)
    return f"{osp.basename(path)}:{stat.st_size}:{int(stat.st_mtime)}"


@contextlib.contextmanager
def quiet_open_clip():
    """open_clip warns "No pretrained weights loaded" when we build a model to load our own weights."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _create(spec):
    if spec.weights is None:
        return open_clip.create_model(spec.arch, pretrained=None), spec.arch
    if osp.isfile(str(spec.weights)):
        state = torch.load(spec.weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "arch" in state and "state_dict" in state:
            arch = spec.arch or state["arch"]
            with quiet_open_clip():
                model = open_clip.create_model(arch, pretrained=None)
            model.load_state_dict(state["state_dict"])
            return model, arch
        if spec.arch is None:
            raise ValueError(f'Checkpoint "{spec.weights}" has no "arch" entry: set MODEL.BACKBONE.NAME to its '
                             "open_clip architecture and MODEL.BACKBONE.PRETRAINED_TAG to the file.")
        return open_clip.create_model(spec.arch, pretrained=spec.weights), spec.arch
    try:
        return open_clip.create_model(spec.arch, pretrained=spec.weights), spec.arch
    except Exception as exc:
        raise RuntimeError(
            f'Could not load the "{spec.weights}" weights of {spec.arch}: {exc}. Without internet access, '
            "download them elsewhere and pass the file as MODEL.BACKBONE.PRETRAINED_TAG."
        ) from exc


def precision_dtype(prec, device):
    """The dtype frozen CLIP weights are kept in, and whether autocast runs around them."""
    if prec not in PRECISIONS:
        raise ValueError(f'Precision "{prec}" is not one of {PRECISIONS}')
    if torch.device(device).type != "cuda" and prec in ("fp16", "amp"):
        return torch.float32, False  # half precision on CPU is slow and lossy; CoOp's fp16 means GPU
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}[prec], prec == "amp"


def load_clip(name, pretrained=True, pretrained_tag="", device="cpu", prec="fp32"):
    """Returns (model, tokenizer, spec): a frozen open_clip CLIP in eval mode on `device`."""
    spec = resolve_backbone(name, pretrained, pretrained_tag)
    model, arch = _create(spec)
    spec.arch = arch
    dtype, _ = precision_dtype(prec, device)
    model = model.to(device=device, dtype=dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(arch)
    return model, tokenizer, spec


def embed_dim(clip_model):
    """D of a CLIP's joint embedding space (512 for ViT-B/16, 1024 for RN50), read from the model."""
    dim = getattr(clip_model.visual, "output_dim", None)
    if dim is None:
        proj = clip_model.text_projection
        dim = proj.out_features if isinstance(proj, torch.nn.Linear) else proj.shape[1]
    return int(dim)


def load_clip_from_cfg(cfg, device="cpu", prec="fp32"):
    bb = cfg.MODEL.BACKBONE
    return load_clip(bb.NAME, bb.PRETRAINED, bb.get("PRETRAINED_TAG", ""), device=device, prec=prec)


def state_dict_digest(module):
    """A short hash of a module's weights: the identity of random or in-memory weights."""
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
