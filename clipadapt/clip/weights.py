"""Reading CLIP weight files without running code from them.

A weights file is one of:

- a TorchScript archive, OpenAI's format (what `clip.load` downloads and CoOp uses): read by
  `read_torchscript_archive`, which opens the zip and unpickles `data.pkl` with a restricted
  unpickler. The archive's classes (`__torch__.*`) become inert records, tensors are rebuilt from
  the stored bytes, and which attributes are parameters or buffers is read from the
  `__parameters__` / `__buffers__` lists of the archive's code files, parsed as literals. Nothing
  from the archive is imported, compiled or run (`torch.jit.load` would compile its code);
- a torch pickle (a plain state dict with OpenAI/open_clip key names, an open_clip checkpoint
  `{"state_dict": ...}`, this project's `{"arch", "state_dict", "meta"}`), read with
  `torch.load(weights_only=True)`, which refuses any object other than tensors and containers;
- a safetensors file.

Anything else (a pickle that names other objects, a damaged file) gets a one-line `BackboneError`.
"""
import ast
import io
import os.path as osp
import pickle
import re
import zipfile

import torch

# Entries of OpenAI's TorchScript archives that are not weights (OpenAI's build_model drops them too).
OPENAI_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
# TorchScript pickles typed lists through these helpers; rebuilding a list needs no code from them.
_LIST_BUILDERS = {"build_intlist", "build_tensorlist", "build_doublelist", "build_boollist", "build_genericlist"}


class BackboneError(ValueError):
    """A backbone that cannot be built as asked: unreadable or unavailable weights, a config that does
    not fit them. The message is one line that names the file or key and the fix; train.py prints it
    without a traceback."""


class _ScriptObject:
    """Inert stand-in for an archive class (`__torch__.model.CLIP`, ...): keeps its pickled state.
    Made per class name by `_record_class`; pickle creates instances with `cls.__new__` only."""
    qualified_name = ""
    state = {}

    def __setstate__(self, state):
        self.state = state if isinstance(state, dict) else {"__state__": state}


def _record_class(qualified_name):
    return type(qualified_name.rsplit(".", 1)[-1], (_ScriptObject,), {"qualified_name": qualified_name})


class _StorageType:
    def __init__(self, dtype):
        self.dtype = dtype


class _ArchiveUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript `data.pkl`: archive classes become records, tensors come from `read_storage`."""

    def __init__(self, data, read_storage):
        super().__init__(io.BytesIO(data))
        self._read_storage = read_storage

    def find_class(self, module, name):
        if module.startswith("__torch__"):
            return _record_class(f"{module}.{name}")
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "torch.jit._pickle" and name in _LIST_BUILDERS:
            return list
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a TorchScript weights archive does not hold")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"has an unexpected storage reference {pid!r}")
        _, storage_type, key, _location, numel = pid
        return self._read_storage(str(key), storage_type.dtype, int(numel))


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, *hooks):
    # `storage` is a flat tensor of the storage's dtype; a view of it with the pickled geometry.
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def is_torchscript_archive(path):
    """True for a zip whose records include TorchScript's `constants.pkl` (as torch.load decides)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 1)[-1] == "constants.pkl" for n in archive.namelist())


_CLASS_DECL = re.compile(r"^class (\w+)\(Module\):\n  __parameters__ = (\[.*?\])\n  __buffers__ = (\[.*?\])", re.M)


def _state_names(archive, prefix):
    """{qualified class name: set of parameter and buffer names}, from the archive's code files as text."""
    names = {}
    code_root = f"{prefix}code/"
    for entry in archive.namelist():
        if not (entry.startswith(code_root) and entry.endswith(".py")):
            continue
        module = entry[len(code_root):-len(".py")].replace("/", ".")
        text = archive.read(entry).decode("utf-8", errors="replace")
        for cls, params, buffers in _CLASS_DECL.findall(text):
            names[f"{module}.{cls}"] = set(ast.literal_eval(params)) | set(ast.literal_eval(buffers))
    return names


def _collect(obj, prefix, names, out):
    """State-dict entries (parameters and buffers) of a record tree, keyed as nn.Module.state_dict does."""
    declared = names.get(obj.qualified_name)
    for attr, value in obj.state.items():
        if isinstance(value, _ScriptObject):
            _collect(value, f"{prefix}{attr}.", names, out)
        elif isinstance(value, torch.Tensor) and (declared is None or attr in declared):
            out[f"{prefix}{attr}"] = value


def read_torchscript_archive(path):
    """The state dict of a TorchScript module archive, without running anything from it."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.namelist()
            data_pkl = [n for n in entries if n.split("/", 1)[-1] == "data.pkl"]
            if not data_pkl:
                raise BackboneError(f'"{path}" is a zip archive without data.pkl: not a TorchScript module archive.')
            prefix = data_pkl[0][:-len("data.pkl")]
            byteorder = f"{prefix}byteorder"
            if byteorder in entries and archive.read(byteorder).decode().strip() != "little":
                raise BackboneError(f'"{path}" was written on a big-endian machine; convert it to a state dict there.')

            def read_storage(key, dtype, numel):
                raw = bytearray(archive.read(f"{prefix}data/{key}"))
                flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                if flat.numel() < numel:
                    raise BackboneError(f'"{path}" is damaged: storage {key} holds {flat.numel()} values, not {numel}.')
                return flat

            root = _ArchiveUnpickler(archive.read(data_pkl[0]), read_storage).load()
            names = _state_names(archive, prefix)
    except BackboneError:
        raise
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, ValueError, RuntimeError) as exc:
        raise BackboneError(f'"{path}" is not a readable TorchScript weights archive: {_first_line(exc)}') from None
    if not isinstance(root, _ScriptObject):
        raise BackboneError(f'"{path}" holds no TorchScript module (data.pkl is a {type(root).__name__}).')
    state = {}
    _collect(root, "", names, state)
    return {k: v.clone() for k, v in state.items()}  # own memory, not views of the file's bytes


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _torch_reason(exc):
    """The informative line of torch's weights-only error (not its advice to turn the check off)."""
    boilerplate = ("weights only", "weights_only", "please file", "check the documentation", "trusted source")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not any(b in line.lower() for b in boilerplate)]
    return (useful or [type(exc).__name__])[0].rstrip(":")


def read_weights(path):
    """(state_dict, arch, meta) of a weights file. `arch` and `meta` are set only for this project's
    checkpoints ({"arch", "state_dict", "meta"}); keys are normalised (no "module." prefix, no
    OpenAI non-weight entries)."""
    if not osp.isfile(path):
        raise BackboneError(f'Weights file "{path}" does not exist.')
    arch, meta = None, {}
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        try:
            state = load_file(path, device="cpu")
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise BackboneError(f'"{path}" is not a readable safetensors file: {_first_line(exc)}') from None
    elif is_torchscript_archive(path):
        state = read_torchscript_archive(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # torch's message advises weights_only=False, which would run the file's code: not for a weights file.
            found = _UNSAFE_GLOBAL.search(str(exc))
            if found:
                raise BackboneError(
                    f'"{path}" is not a weights file: its pickle refers to {found.group(1)}, which a state dict, an '
                    "open_clip checkpoint or an OpenAI TorchScript archive never does; it was not loaded.") from None
            raise BackboneError(f'"{path}" is damaged or not a weights file ({_torch_reason(exc)}).') from None
        except Exception as exc:  # a damaged or foreign file: torch raises RuntimeError, EOFError, ...
            raise BackboneError(f'"{path}" is damaged or not a weights file ({type(exc).__name__}: '
                               f"{_first_line(exc)}).") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        arch = state.get("arch") if isinstance(state.get("arch"), str) else None
        meta = state.get("meta") if isinstance(state.get("meta"), dict) else {}
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise BackboneError(f'"{path}" holds a {type(state).__name__}, not a state dict of tensors.')
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k not in OPENAI_NON_WEIGHT_KEYS}
    return state, arch, meta


def _count_blocks(state, prefix, suffix):
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix) and k.endswith(suffix)})


def openai_architecture(state):
    """The dimensions of an OpenAI-layout CLIP state dict, in open_clip's config terms (None if the
    keys are not OpenAI's layout). Read from tensor shapes, as OpenAI's build_model reads them."""
    try:
        text = {"context_length": state["positional_embedding"].shape[0],
                "vocab_size": state["token_embedding.weight"].shape[0],
                "width": state["ln_final.weight"].shape[0],
                "layers": _count_blocks(state, "transformer.resblocks.", ".attn.in_proj_weight")}
        embed_dim = state["text_projection"].shape[1]
        if "visual.proj" in state:
            patch = state["visual.conv1.weight"].shape[-1]
            grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = {"layers": _count_blocks(state, "visual.transformer.resblocks.", ".attn.in_proj_weight"),
                      "width": state["visual.conv1.weight"].shape[0], "patch_size": patch, "image_size": patch * grid}
        else:
            grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = {"layers": [_count_blocks(state, f"visual.layer{i}.", ".conv1.weight") for i in (1, 2, 3, 4)],
                      "width": state["visual.layer1.0.conv1.weight"].shape[0], "image_size": grid * 32}
    except (KeyError, IndexError, AttributeError):
        return None
    return {"embed_dim": embed_dim, "vision_cfg": vision, "text_cfg": text}


def matches_config(arch_dims, model_cfg):
    """Whether dimensions from `openai_architecture` are those of an open_clip model config."""
    if arch_dims is None or model_cfg.get("embed_dim") != arch_dims["embed_dim"]:
        return False
    vision, text = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
    for key, value in arch_dims["vision_cfg"].items():
        want = vision.get(key)
        if key == "layers" and isinstance(want, (list, tuple)):
            want = list(want)
        if want != value:
            return False
    return all(text.get(key, default) == arch_dims["text_cfg"][key]
               for key, default in (("context_length", 77), ("vocab_size", 49408), ("width", 512), ("layers", 12)))
