"""CLIP loading, the cut text encoder and prompt construction."""
import glob
import os
import os.path as osp
import pickle
import sys
import zipfile
from pathlib import Path

import open_clip
import open_clip.pretrained
import pytest
import torch

from clipadapt.clip import (COOP_NAMES, BackboneError, PromptLearner, TextEncoder, check_input_config, input_size,
                            load_clip, register_model_configs, resolve_backbone)
from clipadapt.clip.weights import read_torchscript_archive, read_weights
from helpers import REPO


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer, spec = load_clip("tiny-vit", pretrained=False)
    return model, tokenizer, TextEncoder(model)


def test_cut_text_encoder_matches_full(tiny):
    model, tokenizer, encoder = tiny
    tokens = tokenizer(["a photo of a cat.", "a very small red triangle on a dark background.", "x"])
    full = model.encode_text(tokens)  # open_clip's own 77-token path
    cut = encoder(encoder.embed(tokens), tokens)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-5)
    no_cut = TextEncoder(model, cut=False)
    torch.testing.assert_close(no_cut(encoder.embed(tokens), tokens), full, rtol=1e-5, atol=1e-5)


def test_prompt_learner_with_init_equals_handcrafted_prompt(tiny):
    model, tokenizer, encoder = tiny
    names = ["cat", "big dog"]
    learner = PromptLearner(encoder, tokenizer, names, ctx_init="a photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, 64)
    expected = model.encode_text(tokenizer([f"a photo of a {n}." for n in names]))
    torch.testing.assert_close(encoder(*learner()), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", ["middle", "front"])
def test_class_token_positions_place_the_name(tiny, position):
    model, tokenizer, encoder = tiny
    learner = PromptLearner(encoder, tokenizer, ["red fox"], n_ctx=4, position=position)
    prompts, tokenized = learner()
    name_emb = encoder.embed(tokenizer(["red fox"]))[0, 1:3]
    start = 1 + (2 if position == "middle" else 0)
    torch.testing.assert_close(prompts[0, start:start + 2], name_emb)
    torch.testing.assert_close(prompts[0, start + 2 + (2 if position == "middle" else 4)],
                               encoder.embed(tokenizer(["."]))[0, 1])


def test_ctx_shift_reaches_every_context_token_and_classnames_swap(tiny):
    _, tokenizer, encoder = tiny
    learner = PromptLearner(encoder, tokenizer, ["a", "b", "c"], n_ctx=3)
    shift = torch.randn(2, 64)
    prompts, _ = learner(class_idx=torch.tensor([0, 2]), ctx_shift=shift)
    torch.testing.assert_close(prompts[:, 1:4], learner.ctx.unsqueeze(0) + shift.unsqueeze(1))
    state = learner.state_dict()
    assert list(state) == ["ctx"]  # class-dependent buffers are never saved
    learner.set_classnames(["d", "e"])
    assert learner()[0].shape[0] == 2


def test_backbone_names_resolve():
    # CoOp names build open_clip's config of OpenAI's architecture (QuickGELU), with the "openai" weights
    assert resolve_backbone("ViT-B/16").arch == "ViT-B-16-quickgelu"
    assert resolve_backbone("ViT-B/16").weights == "openai"
    assert resolve_backbone("RN50", pretrained=False).weights is None
    # open_clip names keep open_clip's config; a tag trained with QuickGELU builds the "-quickgelu" twin
    assert resolve_backbone("ViT-B-16", pretrained_tag="laion2b_s34b_b88k").arch == "ViT-B-16"
    assert resolve_backbone("ViT-B-16", pretrained_tag="openai").arch == "ViT-B-16-quickgelu"
    assert resolve_backbone("ViT-B-16", pretrained_tag="openai").identity == resolve_backbone("ViT-B/16").identity
    assert resolve_backbone("ViT-B-32", pretrained_tag="laion400m_e32").arch == "ViT-B-32-quickgelu"
    with pytest.raises(ValueError, match="Did you mean"):
        resolve_backbone("ViT-B/61")


def _activations(model):
    blocks = list(model.transformer.resblocks)
    blocks += list(getattr(getattr(model.visual, "transformer", None), "resblocks", []))
    return [b.mlp.gelu for b in blocks]


@pytest.mark.parametrize("name,dim,n_blocks", [("ViT-B/16", 512, 24), ("RN50", 1024, 12), ("ViT-B/32", 512, 24)])
def test_coop_names_build_openai_architecture_with_quick_gelu(name, dim, n_blocks):
    model, tokenizer, spec = load_clip(name, pretrained=False)
    assert model.visual.output_dim == dim and spec.weights is None
    acts = _activations(model)
    assert len(acts) == n_blocks  # text transformer, and the vision transformer for ViTs (RN50's has none)
    x = torch.linspace(-4, 4, 101)
    for act in acts:  # OpenAI's QuickGELU: x * sigmoid(1.702 x), not GELU
        torch.testing.assert_close(act(x), x * torch.sigmoid(1.702 * x))
    encoder = TextEncoder(model)
    tokens = tokenizer(["a photo of a dog."])
    torch.testing.assert_close(encoder(encoder.embed(tokens), tokens), model.encode_text(tokens), rtol=1e-4, atol=1e-4)


def test_open_clip_name_keeps_gelu():
    model, _, _ = load_clip("ViT-B-32", pretrained=False)
    x = torch.linspace(-4, 4, 101)
    for act in _activations(model):
        torch.testing.assert_close(act(x), torch.nn.functional.gelu(x))


# ----- preprocessing follows the weights ---------------------------------------------------------

TRAINER_CONFIGS = sorted(glob.glob(osp.join(REPO, "configs", "trainers", "*", "*.yaml")))


@pytest.fixture(scope="module")
def world_weights(tmp_path_factory):
    """A file in the format of the built-in world's checkpoint (random values, the world's meta)."""
    from clipadapt.world import ARCH, pretrain
    register_model_configs()
    path = tmp_path_factory.mktemp("world") / "shapes-clip.pt"
    model = open_clip.create_model(ARCH, pretrained=None)
    torch.save({"arch": ARCH, "state_dict": model.state_dict(),
                "meta": {"mean": list(pretrain.CLIP_MEAN), "std": list(pretrain.CLIP_STD)}}, path)
    return str(path)


@pytest.mark.parametrize("path", TRAINER_CONFIGS, ids=lambda p: osp.relpath(p, osp.join(REPO, "configs", "trainers")))
def test_shipped_configs_preprocess_as_their_weights_expect(path, world_weights, monkeypatch):
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    import clipadapt.world
    from clipadapt.config import build_config
    monkeypatch.setattr(clipadapt.world, "shipped_checkpoint", lambda: world_weights)
    trainer = osp.basename(osp.dirname(path))
    cfg = build_config(trainer, osp.join(REPO, "configs", "datasets", "shapes.yaml"), path)
    name = cfg.MODEL.BACKBONE.NAME
    if name in COOP_NAMES:  # no weights here: what the "openai" weights expect, from open_clip's tables
        spec = resolve_backbone(name)
        size = open_clip.get_model_config(spec.arch)["vision_cfg"]["image_size"]
        size = (size, size)
    else:
        model, _, spec = load_clip(name)
        size = input_size(model)
    assert spec.preprocess["mean"] and spec.preprocess["interpolation"] == "bicubic"
    check_input_config(cfg.INPUT, spec, size)


def _input(**changes):
    from yacs.config import CfgNode
    node = CfgNode({"SIZE": (224, 224), "INTERPOLATION": "bicubic", "PIXEL_MEAN": [0.48145466, 0.4578275, 0.40821073],
                    "PIXEL_STD": [0.26862954, 0.26130258, 0.27577711], "TRANSFORMS": ["random_flip", "normalize"]})
    node.update(changes)
    return node


def test_config_that_preprocesses_otherwise_is_refused_naming_both_values():
    spec = resolve_backbone("ViT-B/16")
    assert spec.preprocess["mean"] == open_clip.OPENAI_DATASET_MEAN
    check_input_config(_input(), spec, (224, 224))
    with pytest.raises(BackboneError) as exc:  # Dassl's defaults: ImageNet statistics, bilinear
        check_input_config(_input(PIXEL_MEAN=[0.485, 0.456, 0.406], INTERPOLATION="bilinear"), spec, (224, 224))
    msg = str(exc.value)
    assert "\n" not in msg and "INPUT.PIXEL_MEAN [0.485, 0.456, 0.406]" in msg
    assert "[0.48145466, 0.4578275, 0.40821073]" in msg
    assert 'INPUT.INTERPOLATION "bilinear"' in msg and '"bicubic"' in msg and "PIXEL_STD" not in msg
    with pytest.raises(BackboneError, match=r"INPUT.SIZE \(224, 224\) is not the backbone's input size \(336, 336\)"):
        check_input_config(_input(), spec, (336, 336))
    # a tag with other statistics: open_clip's pretrained config of that tag decides
    siglip = resolve_backbone("ViT-B-16-SigLIP", pretrained_tag="webli")
    assert tuple(siglip.preprocess["mean"]) == (0.5, 0.5, 0.5)
    with pytest.raises(BackboneError, match=r"INPUT.PIXEL_STD .* is not the std the weights expect \[0.5, 0.5, 0.5\]"):
        check_input_config(_input(), siglip, (224, 224))
    with pytest.raises(BackboneError, match=r"INPUT.TRANSFORMS \['random_flip'\] lacks \"normalize\""):
        check_input_config(_input(TRANSFORMS=["random_flip"]), spec, (224, 224))
    # random weights expect nothing
    check_input_config(_input(PIXEL_MEAN=[0.1, 0.2, 0.3]), resolve_backbone("RN50", pretrained=False), (224, 224))


# ----- weight files: what can be had, and one-line errors for the rest ----------------------------

def test_offline_default_weights_give_one_line_naming_the_file_and_key(monkeypatch):
    def offline(cfg, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection.")
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    with pytest.raises(BackboneError) as exc:
        load_clip("ViT-B/16")
    msg = str(exc.value)
    assert "\n" not in msg and "couldn't connect" in msg
    assert "ViT-B-16.pt" in msg and "MODEL.BACKBONE.PRETRAINED_TAG /path/to/ViT-B-16.pt" in msg


def test_missing_weights_file_names_it_and_the_key():
    with pytest.raises(BackboneError) as exc:
        resolve_backbone("RN50", pretrained_tag="/nowhere/RN50.pt")
    msg = str(exc.value)
    assert '"/nowhere/RN50.pt"' in msg and "MODEL.BACKBONE.PRETRAINED_TAG" in msg
    assert "copy RN50.pt (OpenAI's file, https://openaipublic" in msg
    with pytest.raises(BackboneError, match='"no-such-tag" is neither a pretrained tag of RN50-quickgelu'):
        resolve_backbone("RN50", pretrained_tag="no-such-tag")
    gelu_tag = 'tag of open_clip\'s "ViT-B-16" \\(GELU\\): set MODEL.BACKBONE.NAME ViT-B-16'
    with pytest.raises(BackboneError, match=gelu_tag):
        resolve_backbone("ViT-B/16", pretrained_tag="laion2b_s34b_b88k")


class _RunsCode:
    """Unpickling this creates a folder: proof that a load ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_code_pickle_and_damaged_files_are_refused_in_one_line(tmp_path):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "evil.pt"
    torch.save({"visual.proj": torch.zeros(2), "payload": _RunsCode(marker)}, evil)
    plain = tmp_path / "plain.pkl"
    with open(plain, "wb") as f:
        pickle.dump({"payload": _RunsCode(marker)}, f, protocol=2)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a weights file" * 10)
    truncated = tmp_path / "truncated.pt"
    torch.save({"w": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"a": 1}, not_tensors)
    for path, expect in ((evil, "its pickle refers to posix.mkdir"), (plain, "its pickle refers to posix.mkdir"),
                         (garbage, "damaged or not a weights file"), (truncated, "damaged or not a weights file"),
                         (not_tensors, "not a state dict of tensors")):
        with pytest.raises(BackboneError) as exc:
            load_clip("ViT-B/32", pretrained_tag=str(path))
        msg = str(exc.value)
        assert expect in msg and str(path) in msg and "\n" not in msg, msg
        assert "weights_only" not in msg  # no advice to load it unsafely
    assert not marker.exists()


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)
        self.bn = torch.nn.BatchNorm1d(4)
        self.scale = torch.nn.Parameter(torch.tensor([2.0, 3.0]).half())
        self.not_state = torch.ones(3)  # a plain tensor attribute: in the archive, not in the state dict

    def forward(self, x):
        return self.bn(self.fc(x + self.not_state)) * self.scale.float().sum()


def test_torchscript_reader_matches_torch_jit_load_and_runs_nothing(tmp_path):
    torch.manual_seed(0)
    module = _Small()
    module.bn.running_mean.normal_()
    path = str(tmp_path / "small.pt")
    torch.jit.script(module).save(path)
    ours = read_torchscript_archive(path)
    theirs = torch.jit.load(path).state_dict()
    assert list(ours) == list(theirs) == list(module.state_dict())
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key

    # the same archive with a data.pkl that would run code: refused, nothing runs
    marker = tmp_path / "code_ran"
    planted = str(tmp_path / "planted.pt")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(planted, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_RunsCode(marker), protocol=2)
            dst.writestr(item, data)
    with pytest.raises(BackboneError, match=r"not a readable TorchScript weights archive: refers to posix.mkdir"):
        read_weights(planted)
    assert not marker.exists()


def test_file_of_another_architecture_is_named_and_openai_file_as_name_is_recognised(tmp_path):
    torch.manual_seed(0)
    rn50 = open_clip.create_model("RN50-quickgelu", pretrained=None)
    path = tmp_path / "RN50.pt"
    as_released = {k: v.half() if v.is_floating_point() else v for k, v in rn50.state_dict().items()}
    torch.save(as_released, path)  # OpenAI's key names and dtype
    with pytest.raises(BackboneError, match="it holds RN50 weights: set MODEL.BACKBONE.NAME RN50"):
        load_clip("ViT-B/16", pretrained_tag=str(path))
    model, _, spec = load_clip(str(path))  # a CoOp user's MODEL.BACKBONE.NAME /path/RN50.pt
    assert spec.arch == "RN50-quickgelu" and spec.preprocess["interpolation"] == "bicubic"
    for key, value in as_released.items():
        assert torch.equal(model.state_dict()[key], value.to(model.state_dict()[key].dtype)), key


def test_every_coop_architecture_is_recognised_from_its_tensor_shapes():
    """What lets MODEL.BACKBONE.NAME be OpenAI's file, and names the architecture a wrong file holds."""
    from clipadapt.clip.loader import _coop_name_of
    for name, arch in COOP_NAMES.items():
        with torch.device("meta"):  # shapes only, no memory
            model = open_clip.create_model(arch, pretrained=None, device="meta")
        assert _coop_name_of(model.state_dict()) == name
    assert _coop_name_of({"visual.proj": torch.zeros(2, 2)}) is None


def test_open_clip_and_project_checkpoints_read_to_the_plain_state_dict(tmp_path):
    torch.manual_seed(0)
    register_model_configs()
    model = open_clip.create_model("tiny-vit", pretrained=None)
    state = model.state_dict()
    files = {"plain": state,  # open_clip's training script: DDP keys, optimizer beside
             "open_clip": {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()},
                           "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}},
             "project": {"arch": "tiny-vit", "state_dict": state, "meta": {"mean": [0.5] * 3, "std": [0.25] * 3}}}
    for kind, content in files.items():
        torch.save(content, tmp_path / f"{kind}.pt")
        read, arch, meta = read_weights(str(tmp_path / f"{kind}.pt"))
        assert list(read) == list(state) and all(torch.equal(read[k], v) for k, v in state.items()), kind
        assert (arch, meta.get("mean")) == (("tiny-vit", [0.5] * 3) if kind == "project" else (None, None))
        loaded, _, spec = load_clip("tiny-vit", pretrained_tag=str(tmp_path / f"{kind}.pt"))
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items()), kind
        # a project checkpoint's meta decides the preprocessing it expects; other files get open_clip's defaults
        expected_mean = [0.5] * 3 if kind == "project" else open_clip.OPENAI_DATASET_MEAN
        assert spec.preprocess["mean"] == expected_mean and spec.preprocess["interpolation"] == "bicubic"
    _, _, spec = load_clip(str(tmp_path / "project.pt"))
    assert spec.arch == "tiny-vit" and spec.preprocess["std"] == [0.25] * 3


def test_offline_error_through_train_py_is_one_line(shapes_root, tmp_path, monkeypatch, capsys):
    import train
    monkeypatch.setattr(train, "collect_env_info", lambda: "(not collected in tests)")
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained",
                        lambda cfg, **kw: (_ for _ in ()).throw(ConnectionError("no route to host")))
    args = ["--root", shapes_root, "--trainer", "ZeroshotCLIP", "--dataset-config-file",
            osp.join(REPO, "configs/datasets/shapes.yaml"), "--config-file",
            osp.join(REPO, "configs/trainers/ZeroshotCLIP/vit_b16.yaml"), "--output-dir", str(tmp_path / "out"),
            "--eval-only", "INPUT.SIZE", "(224, 224)", "DATALOADER.NUM_WORKERS", "0"]
    console = sys.stdout
    try:
        with pytest.raises(SystemExit) as exc:
            train.main(train.parse_args(args))
    finally:
        if sys.stdout is not console:  # setup_logger teed stdout into the run's log.txt
            sys.stdout.close()
            sys.stdout = console
    msg = exc.value.code
    assert isinstance(msg, str) and msg.startswith("error: Cannot get the \"openai\" weights of ViT-B/16")
    assert "\n" not in msg and "MODEL.BACKBONE.PRETRAINED_TAG /path/to/ViT-B-16.pt" in msg


def test_the_backend_imports_nothing_above_it_and_resolves_registered_builtins(tmp_path):
    import ast
    from clipadapt.backbones import BUILTIN_BACKBONES, register_builtin_backbone
    clip_dir = Path(REPO) / "clipadapt" / "clip"
    for source in clip_dir.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any("world" in n for n in names), f"{source.name} imports {names}"
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"weights")  # resolving names the file; loading it is not tested here
    register_builtin_backbone("my-clip", "shapes-clip-tiny", str(tmp_path), lambda: str(weights))
    try:
        spec = resolve_backbone("my-clip")
        assert (spec.arch, spec.weights, spec.name) == ("shapes-clip-tiny", str(weights), "my-clip")
    finally:
        del BUILTIN_BACKBONES["my-clip"]
    with pytest.raises(BackboneError, match='Unknown backbone "my-clip"'):
        resolve_backbone("my-clip")
