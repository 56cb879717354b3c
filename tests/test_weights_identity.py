"""Weights are identified by their content: two namings of one file, a copy and a moved file share one
feature-cache entry and one run folder; another file of the same name and size does not."""
import json
import os
import shutil

import torch

from clipadapt import weights_identity
from clipadapt.backbones import COOP_NAMES, OPENAI_FILE_SHA256
from clipadapt.clip.loader import build_clip
from clipadapt.runs import config_overrides, identity_config, override_tag
from helpers import COOP_CFG, coop_args, make_cfg

ARCH = "tiny-vit"


def tiny_weights(path, seed=0, dtype=torch.float32, fmt="pt"):
    """A project-format weights file of the tiny ViT (random values from `seed`)."""
    torch.manual_seed(seed)
    model, _, _ = build_clip(ARCH, pretrained=False)
    state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"arch": ARCH, "state_dict": state}, str(path))
    return str(path)


def test_openai_file_digests_are_those_in_open_clip_s_download_urls():
    import open_clip
    for coop_name, arch in COOP_NAMES.items():
        url = open_clip.get_pretrained_cfg(arch, "openai")["url"]
        assert url.split("/")[-2] == OPENAI_FILE_SHA256[coop_name], coop_name


def test_file_digest_is_the_sha256_of_the_bytes_and_survives_a_copy(tmp_path):
    import hashlib
    first = tiny_weights(tmp_path / "a.pt")
    copy = tmp_path / "elsewhere" / "renamed.pt"
    copy.parent.mkdir()
    shutil.copyfile(first, copy)  # no -p: a new mtime
    os.utime(copy, (1, 1))
    expected = hashlib.sha256(open(first, "rb").read()).hexdigest()
    assert weights_identity.file_digest(first) == weights_identity.file_digest(str(copy)) == expected
    index = json.loads(open(os.path.join(os.environ["CLIPADAPT_CACHE"], weights_identity.INDEX_NAME)).read())
    assert index[os.path.realpath(copy)]["sha256"] == expected  # remembered, keyed by path + size + mtime


def test_another_file_of_the_same_name_and_size_is_other_weights(tmp_path):
    (tmp_path / "one").mkdir(), (tmp_path / "two").mkdir()
    a = tiny_weights(tmp_path / "one" / "w.pt", seed=0)
    b = tiny_weights(tmp_path / "two" / "w.pt", seed=1)
    os.utime(a, (5, 5)), os.utime(b, (5, 5))
    assert os.path.getsize(a) == os.path.getsize(b)
    assert weights_identity.canonical_backbone(ARCH, a) != weights_identity.canonical_backbone(ARCH, b)
    assert build_clip(ARCH, True, a)[2].identity != build_clip(ARCH, True, b)[2].identity


def test_a_file_rewritten_in_place_is_digested_again(tmp_path):
    path = tiny_weights(tmp_path / "w.pt", seed=0)
    before = weights_identity.file_digest(path)
    tiny_weights(path, seed=1)
    assert weights_identity.file_digest(path) != before


def test_the_same_tensors_in_another_format_are_one_backbone(tmp_path):
    """fp16 tensors in a .pt and the same values as fp32 in a safetensors file: the "openai" tag's
    download (open_clip's format) and OpenAI's own file hold the same weights this way."""
    half = tiny_weights(tmp_path / "w.pt", dtype=torch.float16)
    state = torch.load(half, weights_only=True)["state_dict"]
    from safetensors.torch import save_file
    full = str(tmp_path / "w.safetensors")
    save_file({k: v.float().contiguous() if v.is_floating_point() else v for k, v in state.items()}, full)
    assert build_clip(ARCH, True, half)[2].identity == build_clip(ARCH, True, full)[2].identity
    assert build_clip(ARCH, True, half)[2].identity.startswith(f"{ARCH}:weights-")


def test_a_copy_of_openai_s_file_is_the_openai_tag(tmp_path, monkeypatch):
    """OpenAI's file (recognised by its sha256) named as NAME or as PRETRAINED_TAG is the default
    weights of its CoOp name: the identity (hence the folder) of a run that downloads the tag."""
    path = tiny_weights(tmp_path / "ViT-B-32.pt")
    monkeypatch.setattr(weights_identity, "_OPENAI_FILES", {weights_identity.file_digest(path): "ViT-B/32"})
    assert weights_identity.canonical_backbone(path, "") == ("ViT-B/32", "")
    assert weights_identity.canonical_backbone("ViT-B/32", path) == ("ViT-B/32", "")
    assert weights_identity.canonical_backbone("ViT-B/32", "openai") == ("ViT-B/32", "")
    assert weights_identity.canonical_backbone("ViT-B-32", path) == ("ViT-B-32", "openai")
    assert weights_identity.canonical_backbone("ViT-B/16", path)[1].startswith("sha256-")  # not its weights


def test_where_the_file_lives_is_not_in_the_folder_tag(tmp_path, shapes_root):
    (tmp_path / "deep" / "folder").mkdir(parents=True)
    path = tiny_weights(tmp_path / "deep" / "folder" / "w.pt")

    def cfg(*opts):
        return make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path, opts)
    base = cfg()
    as_tag = cfg("MODEL.BACKBONE.PRETRAINED", "True", "MODEL.BACKBONE.PRETRAINED_TAG", path)
    as_name = cfg("MODEL.BACKBONE.PRETRAINED", "True", "MODEL.BACKBONE.NAME", path)
    tag = override_tag(config_overrides(base, as_tag))
    assert "deep" not in tag and "folder" not in tag and "sha256-" in tag
    assert identity_config(as_tag) == identity_config(as_name)


def test_two_namings_and_a_moved_copy_share_one_cache_entry_and_one_run_folder(tmp_path, shapes_root, train_main):
    """CoOp names the file with PRETRAINED_TAG, the next run with NAME (CoOp's habit), a third
    a copy elsewhere: one run identity, and the second and third extract no features."""
    weights = tiny_weights(tmp_path / "w.pt")
    moved = tmp_path / "moved" / "w-copy.pt"
    moved.parent.mkdir()
    shutil.copyfile(weights, moved)
    cache = tmp_path / "features"
    namings = [["MODEL.BACKBONE.PRETRAINED_TAG", weights], ["MODEL.BACKBONE.NAME", weights],
               ["MODEL.BACKBONE.PRETRAINED_TAG", str(moved)]]
    records, entries = [], []
    for i, naming in enumerate(namings):
        out = tmp_path / f"run{i}"
        train_main(coop_args(shapes_root, out, "MODEL.BACKBONE.PRETRAINED", "True", *naming,
                             "OPTIM.MAX_EPOCH", "1", "FEATURES.CACHE_DIR", str(cache)))
        records.append(json.loads((out / "run.json").read_text()))
        entries.append(sorted(p.name for p in cache.rglob("*.pt")))
    assert len({r["config_digest"] for r in records}) == 1 and len({r["tag"] for r in records}) == 1
    assert entries[0] and entries[0] == entries[1] == entries[2]
    # the checkpoint of the PRETRAINED_TAG naming evaluates under the NAME naming of the moved copy
    train_main(coop_args(shapes_root, tmp_path / "eval", "MODEL.BACKBONE.PRETRAINED", "True",
                         "MODEL.BACKBONE.NAME", str(moved), "OPTIM.MAX_EPOCH", "1", "FEATURES.CACHE_DIR", str(cache),
                         flags=["--eval-only", "--model-dir", str(tmp_path / "run0"), "--load-epoch", "1"]))
    assert "* accuracy:" in (tmp_path / "eval" / "log.txt").read_text()
    other = tiny_weights(tmp_path / "other.pt", seed=3)  # another file: its own entries
    train_main(coop_args(shapes_root, tmp_path / "run3", "MODEL.BACKBONE.PRETRAINED", "True",
                         "MODEL.BACKBONE.PRETRAINED_TAG", other, "OPTIM.MAX_EPOCH", "1",
                         "FEATURES.CACHE_DIR", str(cache)))
    after = sorted(p.name for p in cache.rglob("*.pt"))
    assert len(after) == 2 * len(entries[0]) and set(entries[0]) < set(after)
    assert json.loads((tmp_path / "run3" / "run.json").read_text())["config_digest"] != records[0]["config_digest"]
