"""The built-in world: the procedural Shapes dataset and the tiny CLIP pretrained on it.

Everything here runs at the world's smallest: a few images per class, a pretraining of 2 steps.
"""
import json
import math
import os

import pytest
import torch

from clipadapt import world
from clipadapt.clip.text import TextEncoder
from clipadapt.world import pretrain, shapes

TINY = dict(n_train=2, n_val=1, n_test=1, progress=False)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    return world.generate(str(tmp_path_factory.mktemp("data")), seed=0, **TINY)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return world.ensure_pretrained(cache_dir=str(tmp_path_factory.mktemp("cache")), seed=0, steps=2, progress=False)


def _load_split(dataset_dir):
    with open(os.path.join(dataset_dir, shapes.SPLIT_FILENAME)) as f:
        return json.load(f)


def _tree_bytes(dataset_dir):
    out = {}
    for dirpath, _, files in os.walk(dataset_dir):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, dataset_dir)] = f.read()
    return out


def test_generation_is_deterministic(tmp_path, tiny_dataset):
    other = world.generate(str(tmp_path / "again"), seed=0, **TINY)
    a, b = _tree_bytes(tiny_dataset), _tree_bytes(other)
    assert a.keys() == b.keys()
    assert a == b
    different_seed = world.generate(str(tmp_path / "seed1"), seed=1, **TINY)
    c = _tree_bytes(different_seed)
    assert any(a[k] != c[k] for k in a if k.endswith(".png"))


def test_split_json_is_coop_format(tiny_dataset):
    split = _load_split(tiny_dataset)
    assert set(split) == {"train", "val", "test"}
    counts = {"train": TINY["n_train"], "val": TINY["n_val"], "test": TINY["n_test"]}
    label_to_name = {}
    seen_paths = set()
    for name, items in split.items():
        per_label = {}
        for item in items:
            assert isinstance(item, list) and len(item) == 3
            relpath, label, classname = item
            assert isinstance(relpath, str) and isinstance(label, int) and isinstance(classname, str)
            folder, fname = relpath.split("/")
            assert folder == shapes.class_folder(classname) and " " not in folder
            assert fname.endswith(".png")
            assert os.path.isfile(os.path.join(tiny_dataset, "images", relpath))
            assert relpath not in seen_paths
            seen_paths.add(relpath)
            assert label_to_name.setdefault(label, classname) == classname
            per_label[label] = per_label.get(label, 0) + 1
        assert set(per_label.values()) == {counts[name]}
    n = len(label_to_name)
    assert n >= 40
    assert sorted(label_to_name) == list(range(n))
    assert len(set(label_to_name.values())) == n
    assert [label_to_name[i] for i in range(n)] == list(shapes.CLASSNAMES)


def test_images_are_small_rgb(tiny_dataset):
    from PIL import Image

    relpath = _load_split(tiny_dataset)["test"][0][0]
    img = Image.open(os.path.join(tiny_dataset, "images", relpath))
    assert img.mode == "RGB" and img.size == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)


def test_new_classes_are_named_by_colour_words_no_base_class_uses():
    n = shapes.NUM_CLASSES
    m = math.ceil(n / 2)
    base, new = shapes.CLASSES[:m], shapes.CLASSES[m:]
    assert len(base) == len(new) == 24
    # every shape in both halves; the colour words of the two halves are disjoint
    assert {c["shape"] for c in base} == {c["shape"] for c in new} == set(shapes.SHAPE_NAMES)
    base_colours, new_colours = {c["colour"] for c in base}, {c["colour"] for c in new}
    assert base_colours == set(shapes.BASE_COLOURS) and not base_colours & new_colours
    assert base_colours | new_colours == set(shapes.COLOUR_NAMES)
    # every class name is its attribute words, and every composition occurs once
    assert list(shapes.CLASSNAMES) == [" ".join(c[a] for a in shapes.CLASS_ATTRIBUTES) for c in shapes.CLASSES]
    assert len(set(shapes.CLASSNAMES)) == n
    # pretraining covers all 48 compositions in an order that does not depend on the split
    assert sorted(shapes.CLASSNAMES) == sorted(f"{c['colour']} {c['shape']}" for c in shapes.PRETRAIN_CLASSES)


def test_interrupted_generation_is_redone(tmp_path):
    root = str(tmp_path)
    dataset_dir = world.generate(root, **TINY)
    reference = _tree_bytes(dataset_dir)
    split_file = os.path.join(dataset_dir, shapes.SPLIT_FILENAME)
    marker = os.path.join(dataset_dir, shapes.MARKER_FILENAME)

    # a finished generation with the same parameters is reused, not rewritten
    sentinel = os.path.join(dataset_dir, "images", "sentinel.txt")
    open(sentinel, "w").close()
    world.generate(root, **TINY)
    assert os.path.exists(sentinel)

    # json missing: redone from scratch (the stray file is gone)
    os.remove(split_file)
    world.generate(root, **TINY)
    assert not os.path.exists(sentinel)
    assert _tree_bytes(dataset_dir) == reference

    # marker missing, or written for other parameters / another version: redone
    os.remove(marker)
    world.generate(root, **TINY)
    assert _tree_bytes(dataset_dir) == reference
    with open(marker) as f:
        params = json.load(f)
    params["version"] = "shapes-v0"
    with open(marker, "w") as f:
        json.dump(params, f)
    world.generate(root, **TINY)
    assert _tree_bytes(dataset_dir) == reference

    # other parameters: the dataset is replaced
    world.generate(root, n_train=3, n_val=1, n_test=1, progress=False)
    assert len(_load_split(dataset_dir)["train"]) == 3 * shapes.NUM_CLASSES
    # no temporary directories left behind
    assert sorted(os.listdir(root)) == [shapes.DATASET_DIRNAME]


def test_the_camera_turns_base_and_new_colours_opposite_ways(tmp_path, monkeypatch):
    import colorsys
    import numpy as np

    def hue(attrs):
        return 360.0 * colorsys.rgb_to_hsv(*attrs["rgb"])[0]

    def towards_light(colour):  # +1 if the light's hue is reached by turning the hue up, by hand
        up = (shapes.CAMERA_ILLUMINANT_HUE - shapes.COLOURS[colour][0]) % 360.0
        return 1 if up < 180.0 else -1

    m = math.ceil(shapes.NUM_CLASSES / 2)
    signs = []
    for label in range(shapes.NUM_CLASSES):  # same random stream: only the hue differs, by the cast
        colour = shapes.CLASSES[label]["colour"]
        shift = shapes.camera_hue_shift(colour)
        assert shift == towards_light(colour) * shapes.DATASET_HUE_CAST
        plain = shapes.sample_image(np.random.default_rng(label), label)[1]
        cast = shapes.sample_image(np.random.default_rng(label), label, hue_cast=shift)[1]
        assert (hue(cast) - hue(plain) - shift) % 360.0 == pytest.approx(0.0, abs=1e-6) or \
            (hue(cast) - hue(plain) - shift) % 360.0 == pytest.approx(360.0, abs=1e-6)
        assert {k: np.asarray(v).tolist() for k, v in cast.items() if k != "rgb"} == \
            {k: np.asarray(v).tolist() for k, v in plain.items() if k != "rgb"}
        signs.append(shift > 0)
    # the cast's direction holds within each half and flips between them
    assert set(signs[:m]) == {True} and set(signs[m:]) == {False}

    # the generated dataset uses the cast, and records it: another cast means another dataset
    dataset_dir = world.generate(str(tmp_path), **TINY)
    with open(os.path.join(dataset_dir, shapes.MARKER_FILENAME)) as f:
        marker = json.load(f)
    assert marker["hue_cast"] == shapes.DATASET_HUE_CAST and marker["cast_mode"] == "illuminant"
    monkeypatch.setattr(shapes, "CAST_MODE", "uniform")
    assert not shapes.is_generated(dataset_dir, 0, TINY["n_train"], TINY["n_val"], TINY["n_test"])
    assert shapes.camera_hue_shift("blue") == shapes.DATASET_HUE_CAST


def test_caption_names_the_class_words():
    import numpy as np

    rng = np.random.default_rng(0)
    captions = set()
    for label in range(shapes.NUM_CLASSES):
        _, attrs = shapes.sample_image(rng, label)
        for _ in range(5):
            text = shapes.caption(attrs, rng)
            assert attrs["colour"] in text and attrs["shape"] in text
            captions.add(text)
    assert len(captions) > 100


def test_model_config_and_tokenizer():
    import open_clip

    world.register_model_configs()
    world.register_model_configs()  # idempotent
    assert world.ARCH in open_clip.list_models()
    cfg = open_clip.get_model_config(world.ARCH)
    assert cfg["text_cfg"]["vocab_size"] == 49408 and cfg["vision_cfg"]["image_size"] == shapes.IMAGE_SIZE
    tokens = open_clip.get_tokenizer(world.ARCH)(["a photo of a red triangle.", "pink heart"])
    assert tokens.shape == (2, cfg["text_cfg"]["context_length"])
    model = open_clip.create_model(world.ARCH, pretrained=None)
    assert type(model) is open_clip.model.CLIP
    assert model.text_pool_type == "argmax" and model.transformer.batch_first
    for name in ("token_embedding", "positional_embedding", "attn_mask", "ln_final", "text_projection"):
        assert getattr(model, name) is not None
    with torch.no_grad():
        full = model.encode_text(tokens)
        text_encoder = TextEncoder(model)  # what pretraining encodes captions with
        cut = text_encoder(text_encoder.embed(tokens), tokens)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-5)


def test_pretraining_is_deterministic(tmp_path, tiny_checkpoint):
    again = world.ensure_pretrained(cache_dir=str(tmp_path), seed=0, steps=2, progress=False)
    a = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(again, weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_loads_into_open_clip_model(tiny_checkpoint):
    import open_clip

    ckpt = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == world.ARCH
    assert ckpt["meta"]["steps"] == 2 and ckpt["meta"]["seed"] == 0
    world.register_model_configs()
    model = open_clip.create_model(ckpt["arch"], pretrained=None)
    model.load_state_dict(ckpt["state_dict"])  # strict
    fresh = open_clip.create_model(ckpt["arch"], pretrained=None)
    assert not torch.equal(model.visual.conv1.weight, fresh.visual.conv1.weight)


def test_ensure_pretrained_reuses_its_cache(tmp_path, tiny_checkpoint, monkeypatch):
    mtime = os.stat(tiny_checkpoint).st_mtime_ns
    path = world.ensure_pretrained(cache_dir=os.path.dirname(tiny_checkpoint), seed=0, steps=2, progress=False)
    assert path == tiny_checkpoint and os.stat(path).st_mtime_ns == mtime
    name = os.path.basename(path)
    assert world.ARCH in name and "seed0" in name and "steps2" in name and shapes.WORLD_VERSION in name
    assert os.path.basename(pretrain.checkpoint_path(seed=1, steps=2)) != name
    assert not [f for f in os.listdir(os.path.dirname(path)) if ".tmp" in f]

    monkeypatch.setenv("CLIPADAPT_CACHE", str(tmp_path / "env"))
    assert pretrain.checkpoint_path(seed=0, steps=2) == str(tmp_path / "env" / name)
    monkeypatch.delenv("CLIPADAPT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrain.checkpoint_path(seed=0, steps=2) == str(tmp_path / "xdg" / "clipadapt" / name)


def test_zero_shot_accuracy_is_cocoops_base_to_new_split_counted_by_hand(tiny_dataset, tiny_checkpoint):
    """"all" among every class; "base" (the first ceil(n/2) labels) and "new" each among their own classes
    only; "hm" their harmonic mean: counted image by image from the same features."""
    from PIL import Image

    model = world.load_pretrained(tiny_checkpoint)
    acc = world.zero_shot_accuracy(model, tiny_dataset, split="test")
    items = _load_split(tiny_dataset)["test"]
    classnames = dict((label, name) for _, label, name in items)
    n_cls = len(classnames)
    text = TextEncoder(model).encode_tokenized(pretrain.get_tokenizer()(
        [f"a photo of a {classnames[i]}." for i in range(n_cls)]))
    transform = pretrain.test_transform(shapes.IMAGE_SIZE)
    m = math.ceil(n_cls / 2)
    hits = {"all": [], "base": [], "new": []}
    with torch.no_grad():
        for path, label, _ in items:
            image = transform(Image.open(os.path.join(tiny_dataset, "images", path)).convert("RGB"))
            scores = (torch.nn.functional.normalize(model.encode_image(image[None]), dim=-1) @ text.T)[0].tolist()
            hits["all"].append(max(range(n_cls), key=scores.__getitem__) == label)
            own = range(m) if label < m else range(m, n_cls)
            hits["base" if label < m else "new"].append(max(own, key=scores.__getitem__) == label)
    want = {key: 100.0 * sum(h) / len(h) for key, h in hits.items()}
    want["hm"] = 2 * want["base"] * want["new"] / (want["base"] + want["new"]) if want["base"] + want["new"] else 0.0
    assert len(hits["base"]) + len(hits["new"]) == len(items) and n_cls == 48
    assert acc == pytest.approx(want, abs=1e-4)  # float32 means; one image is 100/24 points


def test_vocabulary_holds_every_caption_token():
    import numpy as np

    tokenizer = pretrain.get_tokenizer()
    vocabulary = set(pretrain.vocabulary_token_ids())
    rng = np.random.default_rng(1)
    captions = []
    for label in range(shapes.NUM_CLASSES):
        attrs = shapes.sample_attributes(rng, shapes.CLASSES[label]["colour"], shapes.CLASSES[label]["shape"])
        attrs["distractor"] = True  # allow the template that mentions the blob
        captions += [shapes.caption(attrs, rng) for _ in range(20)]
    tokens = tokenizer(captions)
    assert set(tokens[tokens > 0].tolist()) <= vocabulary
    assert len(vocabulary) < 100  # a few dozen of the 49408 rows: what makes the shipped file small


def test_shipped_format_round_trips_and_checks_its_digest(tmp_path, tiny_checkpoint):
    card = pretrain.export_shipped(tiny_checkpoint, {"base": 1.0, "new": 2.0, "all": 0.5, "hm": 1.33},
                                   str(tmp_path / "weights"))
    assert card["kept_token_rows"] == len(pretrain.vocabulary_token_ids())
    assert card["recipe"]["steps"] == 2 and card["zero_shot_test"]["new"] == 2.0
    full = pretrain.shipped_checkpoint(str(tmp_path / "cache"), str(tmp_path / "weights"))
    original = torch.load(tiny_checkpoint, weights_only=True)["state_dict"]
    rebuilt = torch.load(full, weights_only=True)["state_dict"]
    assert original.keys() == rebuilt.keys()
    ids = pretrain.vocabulary_token_ids()
    for key in original:
        if key == pretrain.TOKEN_TABLE:
            assert torch.equal(rebuilt[key][ids], original[key][ids])
            others = torch.ones(len(rebuilt[key]), dtype=torch.bool)
            others[ids] = False
            assert not rebuilt[key][others].any()  # rows outside the vocabulary: zero
        else:
            assert torch.equal(rebuilt[key], original[key]), key
    # a damaged file is refused, with the file named and the way out
    pt = tmp_path / "weights" / card["file"]
    data = bytearray(pt.read_bytes())
    data[-1] ^= 1
    pt.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=r"shapes-clip-tiny\.pt has sha256 .* reinstall"):
        pretrain.shipped_checkpoint(str(tmp_path / "cache2"), str(tmp_path / "weights"))


def test_shipped_clip_is_small_and_gives_its_card_numbers(tmp_path):
    """The committed weights: under 2 MB, digest as carded, and the card's zero-shot numbers on the
    default dataset's test split (test images do not depend on the train/val counts)."""
    from clipadapt.clip.loader import load_clip

    card = pretrain.shipped_card()
    assert os.path.getsize(pretrain.SHIPPED_WEIGHTS) == card["bytes"] < 2 * 1024 * 1024
    model, _, spec = load_clip("shapes-clip")
    from clipadapt.clip.weights import read_weights
    from clipadapt.weights_identity import state_digest
    assert spec.identity == f"{spec.arch}:weights-{state_digest(read_weights(spec.weights)[0])[:16]}"
    dataset_dir = world.generate(str(tmp_path), seed=card["recipe"]["seed"], n_train=1, n_val=1, progress=False)
    acc = world.zero_shot_accuracy(model, dataset_dir, split="test")
    for key, value in card["zero_shot_test"].items():
        assert acc[key] == pytest.approx(value, abs=0.01), key


@pytest.mark.parametrize("name", list(shapes.TARGET_WORLDS))
def test_cross_dataset_target_worlds_fix_their_class_words_and_load_as_datasets(tmp_path, name):
    """Each target world: its classes fix the words they are named by (a shape, a colour, a size and a
    shape) and draw the rest; it is a registered dataset with a config and a template, and one of the
    world's xd targets."""
    import numpy as np

    from clipadapt.clip.templates import CUSTOM_TEMPLATES
    from clipadapt.protocols import WORLD_XD_TARGETS
    import datasets  # noqa: F401  (registers the datasets)
    from helpers import REPO, build_dataset
    spec = shapes.TARGET_WORLDS[name]
    assert tuple(shapes.TARGET_WORLDS) == WORLD_XD_TARGETS
    rng = np.random.default_rng(0)
    for label, fixed in enumerate(spec.classes):
        drawn = [shapes._sample_world_image(spec, rng, label)[1] for _ in range(6)]
        for attrs in drawn:
            assert all(attrs[k] == v for k, v in fixed.items())
            if "size" in fixed:
                assert shapes.SIZE_RADIUS[fixed["size"]][0] <= attrs["radius"] <= shapes.SIZE_RADIUS[fixed["size"]][1]
        free = [k for k in ("colour", "shape") if k not in fixed]
        assert all(len({a[k] for a in drawn}) > 1 for k in free)  # the other words vary
    dataset_dir = shapes.generate(str(tmp_path), n_train=2, n_val=1, n_test=1, progress=False, world=name)
    assert os.path.basename(dataset_dir) == name and shapes.is_generated(dataset_dir, 0, 2, 1, 1, spec)
    assert not shapes.is_generated(dataset_dir, 0, 2, 1, 1)  # not the Shapes world's marker
    config = open(os.path.join(REPO, "configs", "datasets", f"{name}.yaml")).read()
    dataset_name = config.split('NAME: "')[1].split('"')[0]
    assert dataset_name in CUSTOM_TEMPLATES
    data = build_dataset(str(tmp_path), dataset_name)
    assert data.classnames == list(spec.classnames) and len(data.test) == len(spec.classnames)


def test_the_xd_protocol_of_the_world_source_is_its_target_worlds(capsys):
    """run_protocol.sh asks `python -m clipadapt.protocols datasets xd --source $SOURCE` for its datasets."""
    from clipadapt import protocols
    assert protocols.main(["datasets", "xd", "--source", "shapes"]) == 0
    assert capsys.readouterr().out.split() == list(shapes.TARGET_WORLDS)
    assert protocols.main(["datasets", "xd"]) == 0
    assert capsys.readouterr().out.split() == list(protocols.XD_TARGETS)
