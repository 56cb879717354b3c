"""The one door to CLIP models: CoOp names, open_clip names + tags, built-in names and weight files.

    "ViT-B/16", "RN50", ...      CoOp/OpenAI names -> OpenAI's architecture (open_clip's "-quickgelu"
                                 configs: QuickGELU in every transformer MLP, as OpenAI trained them)
                                 with the "openai" weights, or the file in MODEL.BACKBONE.PRETRAINED_TAG
                                 (OpenAI's TorchScript archive, a state dict, an open_clip checkpoint)
    "ViT-B-16"                   an open_clip arch as open_clip configures it; weights from
                                 MODEL.BACKBONE.PRETRAINED_TAG (a tag such as "laion2b_s34b_b88k", or a
                                 local file). A tag trained with QuickGELU ("openai", ...) builds the
                                 arch's "-quickgelu" config: the architecture follows the weights
    "shapes-clip"                the built-in world's CLIP, shipped with the package (digest-checked)
    "/path/to/file.pt"           this project's checkpoint ({"arch", "state_dict"}), or OpenAI's file of
                                 a CoOp architecture (recognised from its tensor shapes)
MODEL.BACKBONE.PRETRAINED False gives random weights of the real architecture (for tests).

Weight files are read by `weights.read_weights`, which never runs code from a file. The spec of
the loaded backbone carries the image preprocessing its weights expect (`check_input_config`
compares it with the config's INPUT keys).
"""
import contextlib
import hashlib
import logging
import os
import os.path as osp
from dataclasses import asdict, dataclass

import open_clip
import open_clip.pretrained
import torch

from ..backbones import BUILTIN_BACKBONES, COOP_NAMES, builtin_for_arch
from ..weights_identity import file_digest, tensor_digest
from .weights import BackboneError, matches_config, openai_architecture, read_weights

MODEL_CONFIG_DIR = osp.join(osp.dirname(__file__), "model_configs")

PRECISIONS = ("fp32", "fp16", "bf16", "amp")
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".pth.tar", ".bin", ".safetensors", ".ckpt", ".npz")

_added_config_dirs = set()


def register_model_configs():
    """Make our tiny configs and those of the registered built-in backbones known to open_clip (idempotent)."""
    for folder in (MODEL_CONFIG_DIR, *(b.config_dir for b in BUILTIN_BACKBONES.values())):
        if folder not in _added_config_dirs:
            open_clip.add_model_config(folder)
            _added_config_dirs.add(folder)


@dataclass
class BackboneSpec:
    arch: str            # open_clip architecture name
    weights: object      # None (random), an open_clip tag, or a file path
    # What names these weights in feature-cache keys: "<arch>:weights-<tensor digest>" once the
    # weights are read (the tag's name, or the file's path, until then).
    identity: str
    name: str = ""       # MODEL.BACKBONE.NAME as given
    preprocess: dict = None  # mean, std, interpolation, resize_mode the weights expect (None: random weights)


def _quick_gelu_arch(arch, tag):
    """open_clip's "-quickgelu" twin of `arch` when the tag's weights were trained with QuickGELU and
    `arch`'s own config is GELU (open_clip would only warn "QuickGELU mismatch"); else `arch`."""
    twin = f"{arch}-quickgelu"
    tag_cfg = open_clip.get_pretrained_cfg(arch, tag)
    arch_cfg = open_clip.get_model_config(arch) or {}
    if tag_cfg.get("quick_gelu") and not arch_cfg.get("quick_gelu") and open_clip.get_model_config(twin):
        return twin
    return arch


def _looks_like_path(value):
    return os.sep in value or value.startswith(("~", ".")) or value.lower().endswith(WEIGHT_FILE_SUFFIXES)


def resolve_backbone(name, pretrained=True, pretrained_tag=""):
    register_model_configs()
    if not name:
        raise BackboneError("MODEL.BACKBONE.NAME is empty: set it in the trainer config or with --backbone "
                            '(e.g. "ViT-B/16", "RN50", "shapes-clip").')
    if osp.isfile(name):
        return BackboneSpec(arch=None, weights=osp.abspath(name), identity=f"file:{osp.abspath(name)}", name=name)
    if name in COOP_NAMES:
        arch, default_tag = COOP_NAMES[name], "openai"
    elif name in BUILTIN_BACKBONES:
        arch, default_tag = BUILTIN_BACKBONES[name].arch, "builtin"
    elif name in open_clip.list_models():
        arch, default_tag = name, ""
    else:
        import difflib
        known = list(COOP_NAMES) + list(BUILTIN_BACKBONES) + open_clip.list_models()
        close = difflib.get_close_matches(name, known, n=3)
        where = ("; no such file either" if _looks_like_path(name) else "")
        raise BackboneError(f'Unknown backbone "{name}"{where}. ' + (f"Did you mean {close}? " if close else "")
                            + "Use a CoOp name (ViT-B/16, RN50, ...), an open_clip model name, "
                              "a built-in name (shapes-clip) or a checkpoint file path.")
    if not pretrained:
        return BackboneSpec(arch, None, f"{arch}:random", name=name)
    tag = pretrained_tag or default_tag
    if not tag:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise BackboneError(f'Backbone "{name}" needs MODEL.BACKBONE.PRETRAINED_TAG (one of {tags}, or a local '
                            "file), or MODEL.BACKBONE.PRETRAINED False for random weights.")
    tag_path = osp.expanduser(tag)
    if osp.isfile(tag_path):
        preprocess = _tag_preprocess(arch, "openai") if name in COOP_NAMES else None  # else: read from the file
        return BackboneSpec(arch, osp.abspath(tag_path), f"{arch}:file:{osp.abspath(tag_path)}", name, preprocess)
    builtin = BUILTIN_BACKBONES.get(name) or builtin_for_arch(arch)
    if tag == "builtin" and builtin is not None:
        path = builtin.checkpoint()
        return BackboneSpec(arch, path, f"{arch}:file:{path}", name)
    if not open_clip.get_pretrained_cfg(arch, tag):
        if _looks_like_path(tag):
            default_cfg = open_clip.get_pretrained_cfg(arch, default_tag) if default_tag else {}
            what = f"copy {_weights_source(default_cfg)[0]}" if default_cfg else "copy the weights file"
            raise BackboneError(f'Weights file "{tag}" (MODEL.BACKBONE.PRETRAINED_TAG) does not exist: {what} '
                                "there, or point MODEL.BACKBONE.PRETRAINED_TAG at where it is.")
        tags = open_clip.list_pretrained_tags_by_model(arch)
        plain = arch[:-len("-quickgelu")] if arch.endswith("-quickgelu") else ""
        hint = (f' It is a tag of open_clip\'s "{plain}" (GELU): set MODEL.BACKBONE.NAME {plain} for those weights.'
                if plain and open_clip.get_pretrained_cfg(plain, tag) else "")
        raise BackboneError(f'MODEL.BACKBONE.PRETRAINED_TAG "{tag}" is neither a pretrained tag of {arch} '
                            f"({tags or 'it has none'}) nor an existing file.{hint}")
    if name not in COOP_NAMES:
        arch = _quick_gelu_arch(arch, tag)
    return BackboneSpec(arch, tag, f"{arch}:{tag}", name, _tag_preprocess(arch, tag))


def _tag_preprocess(arch, tag):
    """Preprocessing of open_clip's pretrained config for (arch, tag), over open_clip's defaults."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict
    merged = merge_preprocess_dict(PreprocessCfg(), open_clip.get_pretrained_cfg(arch, tag))
    return {k: merged[k] for k in ("mean", "std", "interpolation", "resize_mode")}


def _file_preprocess(meta):
    """A weights file's preprocessing: open_clip's defaults for a file (OpenAI's), with the mean and
    std a project checkpoint records in its meta (the built-in world's CLIP does)."""
    from open_clip.transform import PreprocessCfg
    defaults = asdict(PreprocessCfg())
    out = {k: defaults[k] for k in ("mean", "std", "interpolation", "resize_mode")}
    out.update({k: meta[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in meta})
    return out


@contextlib.contextmanager
def quiet_open_clip():
    """open_clip warns "No pretrained weights loaded" when we build a model to load our own weights."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


# open_clip's precision names for the dtypes frozen weights are kept in.
OPEN_CLIP_PRECISION = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _new_model(arch, dtype=torch.float32):
    """open_clip's `arch` with random weights, fp32 or in OpenAI's mixed low-precision layout.

    fp16/bf16 is open_clip's precision "fp16"/"bf16", which is the layout OpenAI's `convert_weights`
    gives (CoOp's default PREC fp16): conv, linear and attention weights and biases and the text and
    image projections in `dtype`; LayerNorm (LayerNormFp32: computes in fp32 and casts back),
    embeddings, BatchNorm and logit_scale in fp32.
    """
    with quiet_open_clip():
        return open_clip.create_model(arch, pretrained=None, precision=OPEN_CLIP_PRECISION[dtype])


def _download(spec):
    """Local path of a tag's weights (open_clip's cache, or its download); one-line error offline."""
    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.weights)
    try:
        with quiet_open_clip():
            path = open_clip.pretrained.download_pretrained(cfg)
    except Exception as exc:  # network and hub errors come in many types; all mean "not here"
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        path, reason = "", f"{type(exc).__name__}: {reason}"
    else:
        reason = "open_clip found no file for it"
    if path and osp.isfile(path):
        return path
    source, filename = _weights_source(cfg)
    raise BackboneError(
        f'Cannot get the "{spec.weights}" weights of {spec.name or spec.arch} ({_clip(reason)}). Without internet '
        f"access: copy {source} to this machine and set MODEL.BACKBONE.PRETRAINED_TAG /path/to/{filename}.")


def _clip(text, limit=300):
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _weights_source(cfg):
    """(where a tag's weights come from, the file name) for messages that say what to copy."""
    url, hub = cfg.get("url", ""), cfg.get("hf_hub", "")
    if url:
        filename = osp.basename(url)
        return (f"{filename} (OpenAI's file, {url})" if "openaipublic" in url else f"{filename} ({url})"), filename
    return f"open_clip_model.safetensors from https://huggingface.co/{hub.rstrip('/')}", "open_clip_model.safetensors"


def _load_state(model, state, path, arch, name):
    """Load a state dict strictly; a mismatch names what the file holds when it can tell."""
    if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
        state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        from open_clip.model import convert_to_custom_text_state_dict
        state = convert_to_custom_text_state_dict(state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        held = _coop_name_of(state)
        if held and COOP_NAMES[held] != arch:
            hint = f"it holds {held} weights: set MODEL.BACKBONE.NAME {held}"
        else:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            hint = "; ".join(lines[1:3])[:300] or lines[0][:300]
        raise BackboneError(f'"{path}" does not hold weights of {name or arch} ({arch}): {hint}.') from None


def _coop_name_of(state):
    """The CoOp name whose architecture an OpenAI-layout state dict has, if any."""
    dims = openai_architecture(state)
    for coop_name, arch in COOP_NAMES.items():
        if matches_config(dims, open_clip.get_model_config(arch) or {}):
            return coop_name
    return None


def _create(spec, dtype=torch.float32):
    """(model, arch, preprocess, identity) for a spec; fills in what a weights file says about itself."""
    if spec.weights is None:
        return _new_model(spec.arch, dtype), spec.arch, None, spec.identity
    path = spec.weights if osp.isfile(str(spec.weights)) else _download(spec)
    if path.endswith((".npz", ".npy")):  # big_vision (SigLIP) weights: open_clip's own converter reads them
        model = _new_model(spec.arch, dtype)
        open_clip.load_checkpoint(model, path)
        return model, spec.arch, spec.preprocess or _file_preprocess({}), f"{spec.arch}:file-{file_digest(path)[:16]}"
    state, file_arch, meta = read_weights(path)
    weights_id = f"weights-{tensor_digest(path, state)[:16]}"  # before loading: the file's tensors as written
    arch, name = spec.arch or file_arch, spec.name
    if arch is None:
        name = _coop_name_of(state)
        if name is None:
            raise BackboneError(f'"{path}" has no "arch" entry and is not OpenAI CLIP weights of a known size: '
                                "set MODEL.BACKBONE.NAME to its architecture and MODEL.BACKBONE.PRETRAINED_TAG "
                                "to the file.")
        arch = COOP_NAMES[name]
    elif arch in COOP_NAMES.values():  # a file of another OpenAI architecture: say so before building the model
        held = _coop_name_of(state)
        if held and COOP_NAMES[held] != arch:
            raise BackboneError(f'"{path}" does not hold weights of {name or arch} ({arch}): it holds {held} '
                                f"weights: set MODEL.BACKBONE.NAME {held}.")
    model = _new_model(arch, dtype)
    _load_state(model, state, path, arch, name)  # rounds to the low-precision weights as OpenAI's build_model does
    if spec.preprocess:
        preprocess = spec.preprocess
    elif name in COOP_NAMES:
        preprocess = _tag_preprocess(arch, "openai")
    else:
        preprocess = _file_preprocess(meta)
    return model, arch, preprocess, f"{arch}:{weights_id}"


# PREC fp16 and amp run in fp32 on a CPU: half kernels there are slow, and CoOp's fp16 means a GPU.
# Tests turn this on to check the arithmetic itself (CoOp's fp16 head and SGD, its amp step) without
# a GPU: fp16 and amp then mean on a CPU what they mean on CUDA.
HALF_ON_CPU = False


def precision_dtype(prec, device):
    """(dtype of the frozen CLIP's low-precision weights, whether autocast runs around it) for a PREC.

    As CoOp (which builds OpenAI's CLIP with `convert_weights`): fp16 keeps that model, whose conv,
    linear and attention weights are fp16 and whose LayerNorms compute in fp32; fp32 and amp use the
    model in fp32 (`clip_model.float()`), amp under fp16 autocast. bf16 is the fp16 layout in bf16.
    """
    if prec not in PRECISIONS:
        raise BackboneError(f'Precision "{prec}" is not one of {PRECISIONS}')
    if torch.device(device).type != "cuda" and prec in ("fp16", "amp") and not HALF_ON_CPU:
        return torch.float32, False  # half precision on CPU is slow and lossy; CoOp's fp16 means GPU
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "amp": torch.float32}[prec], prec == "amp"


def precision_key(prec, device):
    """Names the numbers PREC gives on `device` (for feature-cache keys): the weights' dtype, autocast,
    and for fp16/bf16 the layout (LayerNorm in fp32, since this replaced a fully cast model)."""
    dtype, use_amp = precision_dtype(prec, device)
    key = str((dtype, use_amp))
    return key if dtype == torch.float32 else f"{key} openai-mixed"


def compute_dtype(module):
    """The dtype inputs of a CLIP tower are cast to: that of its first convolution or linear weight, as
    OpenAI's CLIP casts images and token embeddings to `clip_model.dtype` (`visual.conv1.weight.dtype`).
    Not that of `positional_embedding` or `logit_scale`, which stay fp32 in the fp16/bf16 layout."""
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Linear)):
            return layer.weight.dtype
    return next(module.parameters()).dtype


def build_clip(name, pretrained=True, pretrained_tag="", dtype=torch.float32):
    """Returns (model, tokenizer, spec): a frozen open_clip CLIP in eval mode on the CPU, in fp32 or in
    OpenAI's fp16/bf16 layout (`dtype`) whatever the device it will run on (`load_clip` picks the
    dtype from PREC and the device; tests build CoOp's fp16 model on a CPU with this)."""
    if dtype not in OPEN_CLIP_PRECISION:
        raise BackboneError(f"CLIP weights dtype {dtype} is not one of {list(OPEN_CLIP_PRECISION)}")
    spec = resolve_backbone(name, pretrained, pretrained_tag)
    model, spec.arch, spec.preprocess, spec.identity = _create(spec, dtype)
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tokenizer = open_clip.get_tokenizer(spec.arch)
    return model, tokenizer, spec


def load_clip(name, pretrained=True, pretrained_tag="", device="cpu", prec="fp32"):
    """Returns (model, tokenizer, spec): a frozen open_clip CLIP in eval mode on `device`, its weights
    as PREC `prec` keeps them there (`precision_dtype`)."""
    dtype, _ = precision_dtype(prec, device)
    model, tokenizer, spec = build_clip(name, pretrained, pretrained_tag, dtype)
    return model.to(device), tokenizer, spec


def input_size(clip_model):
    size = clip_model.visual.image_size
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def _fmt(values):
    return "[" + ", ".join(repr(round(float(v), 8)) for v in values) + "]"  # as a yaml would write them


def check_input_config(input_cfg, spec, size):
    """Refuse a config whose image preprocessing is not the one the backbone's weights expect.

    INPUT.SIZE must be the model's input `size` (H, W); with pretrained weights, INPUT.PIXEL_MEAN,
    INPUT.PIXEL_STD and INPUT.INTERPOLATION must be those of the weights (open_clip's pretrained
    config for a tag, OpenAI's for CoOp names and OpenAI files) and INPUT.TRANSFORMS must normalise.
    All mismatches in one line.
    """
    size = tuple(size)
    problems = []
    if tuple(input_cfg.SIZE) != size:
        problems.append(f"INPUT.SIZE {tuple(input_cfg.SIZE)} is not the backbone's input size {size}")
    want = spec.preprocess
    if want:
        for key, field in (("PIXEL_MEAN", "mean"), ("PIXEL_STD", "std")):
            have = [float(v) for v in input_cfg[key]]
            if len(have) != len(want[field]) or any(abs(a - b) > 1e-6 for a, b in zip(have, want[field])):
                problems.append(f"INPUT.{key} {_fmt(have)} is not the {field} the weights expect {_fmt(want[field])}")
        if "TRANSFORMS" in input_cfg and "normalize" not in input_cfg.TRANSFORMS:
            problems.append(f'INPUT.TRANSFORMS {list(input_cfg.TRANSFORMS)} lacks "normalize", which the weights need')
        if input_cfg.INTERPOLATION != want["interpolation"]:
            problems.append(f'INPUT.INTERPOLATION "{input_cfg.INTERPOLATION}" is not the weights\' '
                            f'"{want["interpolation"]}"')
        if want["resize_mode"] != "shortest":
            # The test transform (Dassl's) resizes the short edge and centre-crops; it has no key to change that.
            print(f'Warning: the {spec.name or spec.arch} weights expect "{want["resize_mode"]}" resizing; '
                  "test images are resized on the short edge and centre-cropped (open_clip's \"shortest\").")
    if problems:
        weights = f'"{spec.weights}"' if spec.weights and not osp.isfile(str(spec.weights)) else "file"
        raise BackboneError(f"The config does not preprocess images as the {spec.name or spec.arch} {weights} weights "
                            f"need: {'; '.join(problems)}. Set these INPUT keys in the trainer config to the "
                            "weights' values.")


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
