"""Shapes: a procedural image world that needs no downloads.

Each image shows one coloured shape. The class is the pair (colour, shape), named in words
("red triangle"); everything else about the image is a nuisance that is not part of the class:
size, position, rotation, background hue and brightness, background texture and noise, the
exact shade of the colour, blur, and an achromatic distractor blob.

The dataset's "camera" has a tinted light (the world's domain shift, the part of a real benchmark,
EuroSAT's satellite view or DTD's close-ups, that CLIP's pretraining did not see): it turns every
object colour DATASET_HUE_CAST = 20 degrees towards the light's hue (CAMERA_ILLUMINANT_HUE, a
yellow-green), so warm colours (red, orange, yellow, pink) turn one way round the hue circle and
cool ones (green, cyan, blue, purple) the other. Pretraining images have no cast.

Base and new classes are split by colour family (SPLIT = "colour"): the 24 base classes are the
warm-coloured ones (labels 0..23), the 24 new classes the cool-coloured ones, every shape in both.
So, as on a real benchmark, the new classes are named by words (the cool colour words) that no base
class uses, and what the cast does to base classes (turn hues up) does not hold for new ones (it
turns them down). Fine-tuning on base classes learns a correction that fits only them: that is the
base-to-new trade-off the methods are built for (docs/WORLD.md). SPLIT = "checkerboard" (both halves
use every colour and shape word) and CAST_MODE = "uniform" (every hue turned the same way) give the
world of earlier versions, where what is learned on base classes carries over to new ones.

The dataset is written in CoOp's layout::

    <root>/shapes/images/<class_folder>/<xxxxx>.png
    <root>/shapes/split_zhou_Shapes.json     {"train": [[relpath, label, classname], ...], ...}
    <root>/shapes/generation.json            parameters of the finished generation (written last)

``python -m clipadapt.world.shapes --root DATA`` generates it.
"""
from __future__ import annotations

import argparse
import colorsys
import io
import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Bump when the rendering, the class list or the file layout changes: a finished dataset of an
# older version is regenerated, and pretrained checkpoints carry it in their file name.
WORLD_VERSION = "shapes-v2"

DATASET_DIRNAME = "shapes"
SPLIT_FILENAME = "split_zhou_Shapes.json"
MARKER_FILENAME = "generation.json"
IMAGE_SIZE = 32
SUPERSAMPLE = 4  # shapes are drawn at 4x and downsampled, for anti-aliased edges

DEFAULT_N_TRAIN = 60
DEFAULT_N_VAL = 10
DEFAULT_N_TEST = 30

# The camera's cast: degrees every object hue is turned, relative to pretraining (module docstring).
# At 20 zero-shot accuracy is about 30% base / 34% new (chance 4%) and CoOp's base accuracy rises
# 19 points; at 12 zero-shot is 43 / 45 and CoOp's base gain only 10 (docs/WORLD.md).
DATASET_HUE_CAST = 20.0
# How the cast turns each colour: "uniform" turns every hue by +DATASET_HUE_CAST; "illuminant" turns
# every colour DATASET_HUE_CAST degrees towards CAMERA_ILLUMINANT_HUE along the shorter way round
# (a tinted light: warm hues turn one way, cool hues the other).
CAST_MODE = "illuminant"
CAMERA_ILLUMINANT_HUE = 100.0


def camera_hue_shift(colour: str) -> float:
    """Degrees the dataset's camera adds to the hue of objects of `colour`."""
    if CAST_MODE == "uniform":
        return DATASET_HUE_CAST
    if CAST_MODE == "illuminant":
        towards = (CAMERA_ILLUMINANT_HUE - COLOURS[colour][0] + 180.0) % 360.0 - 180.0
        return math.copysign(DATASET_HUE_CAST, towards)
    raise ValueError(f'unknown CAST_MODE {CAST_MODE!r}: use "uniform" or "illuminant"')

# name -> (hue in degrees, saturation range, value range) of the object's colour.
COLOURS = {
    "red": (0.0, (0.75, 1.0), (0.65, 1.0)),
    "orange": (28.0, (0.80, 1.0), (0.80, 1.0)),
    "yellow": (55.0, (0.70, 1.0), (0.80, 1.0)),
    "green": (120.0, (0.60, 1.0), (0.50, 0.90)),
    "cyan": (185.0, (0.60, 1.0), (0.70, 1.0)),
    "blue": (225.0, (0.70, 1.0), (0.55, 1.0)),
    "purple": (275.0, (0.55, 0.90), (0.50, 0.90)),
    "pink": (325.0, (0.35, 0.60), (0.85, 1.0)),
}
COLOUR_NAMES = tuple(COLOURS)
SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "heart")
HUE_JITTER = 10.0  # degrees either side
# Objects are roughly upright and centred, as in object-centric photos; a tiny ViT trained for
# minutes cannot learn shapes under arbitrary rotation and placement.
ROTATION_JITTER = 15.0  # degrees either side
POSITION_JITTER = 0.10  # of the image side, either side of the centre

# The class attributes, in the order they are named ("red triangle" = colour, shape).
CLASS_ATTRIBUTES = ("colour", "shape")

SIZE_WORDS = ("small", "medium", "large")
SIZE_RADIUS = {  # radius of the shape's circumscribed circle, as a fraction of the image side
    "small": (0.21, 0.27),
    "medium": (0.27, 0.34),
    "large": (0.34, 0.42),
}
BACKGROUND_WORDS = ("dark", "gray", "light")
BACKGROUND_VALUE = {"dark": (0.03, 0.30), "gray": (0.35, 0.60), "light": (0.65, 0.95)}
TEXTURE_WORDS = ("plain", "noisy", "striped", "blurry")
SPLIT_NAMES = ("train", "val", "test")

# Seed-stream tags: the dataset's images and the pretraining images never share a random stream.
STREAM_DATASET = 0x5A0E
STREAM_PRETRAIN = 0x9E7A


# How base and new classes relate (the label order; base = first ceil(n/2) labels):
# "checkerboard": (colour + shape index) even first, so both halves use every colour and shape word;
# "colour": the classes of BASE_COLOURS first, so new classes are named by colour words that no base
# class uses, as a real benchmark's new classes are named by words its base classes never use.
SPLIT = "colour"
BASE_COLOURS = ("red", "orange", "yellow", "pink")


def _is_first_half(c, s):
    if SPLIT == "checkerboard":
        return (c + s) % 2 == 0
    if SPLIT == "colour":
        return COLOUR_NAMES[c] in BASE_COLOURS
    raise ValueError(f'unknown SPLIT {SPLIT!r}: use "checkerboard" or "colour"')


def _build_classes():
    grid = [(c, s) for c in range(len(COLOUR_NAMES)) for s in range(len(SHAPE_NAMES))]
    ordered = [cs for cs in grid if _is_first_half(*cs)] + [cs for cs in grid if not _is_first_half(*cs)]
    return tuple({"colour": COLOUR_NAMES[c], "shape": SHAPE_NAMES[s]} for c, s in ordered)


# CLASSES[label] = {"colour": ..., "shape": ...}; the label order defines the base/new split.
CLASSES = _build_classes()
# The class of pretraining image i is PRETRAIN_CLASSES[i % 48]: a fixed order (the checkerboard's),
# so that the pretraining data, and the shipped CLIP, do not depend on how the dataset splits.
PRETRAIN_CLASSES = tuple(
    {"colour": COLOUR_NAMES[c], "shape": SHAPE_NAMES[s]}
    for parity in (0, 1) for c in range(len(COLOUR_NAMES)) for s in range(len(SHAPE_NAMES)) if (c + s) % 2 == parity)
CLASSNAMES = tuple(f"{a['colour']} {a['shape']}" for a in CLASSES)
NUM_CLASSES = len(CLASSES)


def class_folder(classname: str) -> str:
    """Filesystem-safe folder name of a class: "red triangle" -> "red_triangle"."""
    return classname.replace(" ", "_")


def base_new_labels(n: int = NUM_CLASSES):
    """(base labels, new labels) under the CoCoOp protocol: base = first ceil(n/2) labels."""
    m = math.ceil(n / 2)
    return list(range(m)), list(range(m, n))


# ---------------------------------------------------------------------------------------------
# Cross-dataset targets: worlds of the same images whose classes are other words of the captions
# the CLIP was pretrained on (a shape alone, a colour alone, a size with a shape), as CoOp's targets
# are other label spaces seen by the same CLIP.

@dataclass(frozen=True)
class World:
    name: str                 # the dataset folder under the data root
    split_file: str
    classes: tuple            # per label: the attributes the class fixes, e.g. {"shape": "circle"}
    classnames: tuple


def _classname(attrs):
    """"small circle", "red shape" (as the captions say "a red shape: a circle"), "star"."""
    words = [attrs[k] for k in ("size", "colour", "shape") if k in attrs]
    return " ".join(words if "shape" in attrs else words + ["shape"])


def _target_world(name, split_file, attribute_sets):
    classes = tuple(attribute_sets)
    return World(name, split_file, classes, tuple(_classname(a) for a in classes))


SHAPES_WORLD = World(DATASET_DIRNAME, SPLIT_FILENAME, CLASSES, CLASSNAMES)
TARGET_WORLDS = {
    w.name: w for w in (
        _target_world("shapes_shape", "split_zhou_ShapesShape.json", ({"shape": s} for s in SHAPE_NAMES)),
        _target_world("shapes_colour", "split_zhou_ShapesColour.json", ({"colour": c} for c in COLOUR_NAMES)),
        _target_world("shapes_size", "split_zhou_ShapesSize.json",
                      ({"size": z, "shape": s} for z in SIZE_WORDS for s in SHAPE_NAMES)),
    )
}
WORLDS = {SHAPES_WORLD.name: SHAPES_WORLD, **TARGET_WORLDS}


def _sample_world_image(world, rng, label):
    """(PIL image, attributes) of class `label` of `world`: the class's attributes fixed, the rest drawn."""
    if world is SHAPES_WORLD:
        return sample_image(rng, label, hue_cast=camera_hue_shift(CLASSES[label]["colour"]))
    fixed = world.classes[label]
    colour = fixed.get("colour") or COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
    shape = fixed.get("shape") or SHAPE_NAMES[rng.integers(len(SHAPE_NAMES))]
    attrs = sample_attributes(rng, colour, shape, hue_cast=camera_hue_shift(colour))
    if "size" in fixed:
        attrs["size"], attrs["radius"] = fixed["size"], rng.uniform(*SIZE_RADIUS[fixed["size"]])
    return render(attrs, IMAGE_SIZE), attrs


# ---------------------------------------------------------------------------------------------
# Rendering

def _unit_outline(shape: str) -> np.ndarray:
    """Vertices (k, 2) of a shape inside the unit circle, centred at the origin, y down."""
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return 0.92 * np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "square":
        t = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "triangle":
        t = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1)
    if shape == "star":
        t = -np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if shape == "cross":
        a, b = 0.92, 0.33  # arm half-length, arm half-width
        pts = [(b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a),
               (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b), (-b, -a)]
        return np.array(pts, dtype=np.float64)
    if shape == "heart":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        pts = np.stack([x, y + 2.5], 1)
        return pts / np.abs(pts).max() * 0.95
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPE_NAMES}")


_OUTLINES = {s: _unit_outline(s) for s in SHAPE_NAMES}


def _hsv(h_deg, s, v):
    return np.array(colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v))


def sample_attributes(rng: np.random.Generator, colour: str, shape: str, hue_cast: float = 0.0) -> dict:
    """Draw the nuisance attributes of one image of class (colour, shape), its hue turned by `hue_cast`."""
    hue, sat_range, val_range = COLOURS[colour]
    size = SIZE_WORDS[rng.integers(len(SIZE_WORDS))]
    radius = rng.uniform(*SIZE_RADIUS[size])
    return {
        "colour": colour,
        "shape": shape,
        "rgb": _hsv(hue + hue_cast + rng.uniform(-HUE_JITTER, HUE_JITTER), rng.uniform(*sat_range), rng.uniform(*val_range)),
        "size": size,
        "radius": radius,
        "center": tuple(0.5 + rng.uniform(-POSITION_JITTER, POSITION_JITTER, size=2)),
        "rotation": math.radians(rng.uniform(-ROTATION_JITTER, ROTATION_JITTER)),
        "aspect": rng.uniform(0.85, 1.15),
        "background": BACKGROUND_WORDS[rng.integers(len(BACKGROUND_WORDS))],
        "bg_hue": rng.uniform(0, 360),
        "bg_sat": rng.uniform(0.0, 0.35),
        "bg_value_u": rng.uniform(0.0, 1.0),  # position inside the background word's value range
        "bg_gradient": rng.uniform(-0.15, 0.15, size=2),
        "texture": TEXTURE_WORDS[rng.integers(len(TEXTURE_WORDS))],
        "noise_std": rng.uniform(0.02, 0.10),
        "stripe_freq": rng.uniform(2.0, 5.0),
        "stripe_angle": rng.uniform(0, np.pi),
        "distractor": bool(rng.random() < 0.3),
        "distractor_value": rng.uniform(0.0, 1.0),
        "distractor_center": (rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)),
        "distractor_radius": rng.uniform(0.05, 0.10),
        "seed": int(rng.integers(2**31)),
    }


def _background(a: dict, rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, n, 3) float background in [0, 1]."""
    lo, hi = BACKGROUND_VALUE[a["background"]]
    value = lo + (hi - lo) * a["bg_value_u"]
    yy, xx = np.mgrid[0:n, 0:n] / max(n - 1, 1) - 0.5
    v = value + a["bg_gradient"][0] * xx + a["bg_gradient"][1] * yy
    if a["texture"] == "striped":
        proj = np.cos(a["stripe_angle"]) * xx + np.sin(a["stripe_angle"]) * yy
        v = v + 0.08 * np.sign(np.sin(2 * np.pi * a["stripe_freq"] * proj))
    base = _hsv(a["bg_hue"], a["bg_sat"], 1.0)
    img = np.clip(v, 0, 1)[..., None] * base[None, None, :]
    return img


def render(attrs: dict, size: int = IMAGE_SIZE) -> Image.Image:
    """Render one RGB image of `size` x `size` pixels from its attributes (deterministic)."""
    a = attrs
    rng = np.random.default_rng(a["seed"])
    big = size * SUPERSAMPLE
    bg = _background(a, rng, size)
    canvas = Image.fromarray((bg * 255).round().astype(np.uint8)).resize((big, big), Image.NEAREST)
    draw = ImageDraw.Draw(canvas)

    if a["distractor"]:  # an achromatic blob: never carries a class colour
        g = int(round(255 * a["distractor_value"]))
        cx, cy = a["distractor_center"]
        r = a["distractor_radius"] * big
        draw.ellipse([cx * big - r, cy * big - r, cx * big + r, cy * big + r], fill=(g, g, g))

    pts = _OUTLINES[a["shape"]] * np.array([a["aspect"], 1.0 / a["aspect"]])
    c, s = math.cos(a["rotation"]), math.sin(a["rotation"])
    pts = pts @ np.array([[c, s], [-s, c]])
    cx, cy = a["center"]
    pts = (pts * a["radius"] + np.array([cx, cy])) * big
    fill = tuple(int(round(255 * x)) for x in a["rgb"])
    draw.polygon([tuple(p) for p in pts], fill=fill)

    img = canvas.resize((size, size), Image.BOX)
    if a["texture"] == "blurry":
        img = img.filter(ImageFilter.GaussianBlur(radius=0.8))
    arr = np.asarray(img, dtype=np.float64) / 255.0
    std = a["noise_std"] * (2.0 if a["texture"] == "noisy" else 0.5)
    arr = arr + rng.normal(0.0, std, size=arr.shape)
    return Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8))


def sample_image(rng: np.random.Generator, label: int, size: int = IMAGE_SIZE, hue_cast: float = 0.0):
    """(PIL image, attributes) of one random image of class `label` (object hue turned by `hue_cast`)."""
    cls = CLASSES[label]
    attrs = sample_attributes(rng, cls["colour"], cls["shape"], hue_cast)
    return render(attrs, size), attrs


# ---------------------------------------------------------------------------------------------
# Captions (for pretraining)

_CAPTION_TEMPLATES = (
    "a photo of a {cls}.",
    "a photo of a {size} {cls}.",
    "a photo of a {cls} on a {bg} background.",
    "a photo of a {size} {cls} on a {bg} background.",
    "{cls}",
    "a {cls}",
    "a {size} {cls}",
    "a {cls} on a {bg} background",
    "a {tex} picture of a {cls}.",
    "a {tex} image of a {size} {cls}.",
    "an image of a {cls}.",
    "a picture of a {cls}.",
    "a drawing of a {cls}.",
    "a {shape} that is {colour}.",
    "a {colour} shape: a {shape}.",
    "this is a {cls}.",
    "there is a {size} {cls} in the picture.",
    "a {cls} next to a gray blob.",
)


def caption(attrs: dict, rng: np.random.Generator | None = None) -> str:
    """A natural caption of an image: always names its class words, sometimes nuisances too.

    e.g. "a photo of a small red triangle on a dark background.", "red triangle".
    """
    rng = rng if rng is not None else np.random.default_rng()
    templates = [t for t in _CAPTION_TEMPLATES if "gray blob" not in t or attrs.get("distractor")]
    t = templates[rng.integers(len(templates))]
    tex = {"plain": "clean", "noisy": "noisy", "striped": "striped", "blurry": "blurry"}[attrs.get("texture", "plain")]
    return t.format(
        cls=f"{attrs['colour']} {attrs['shape']}", colour=attrs["colour"], shape=attrs["shape"],
        size=attrs.get("size", "medium"), bg=attrs.get("background", "gray"), tex=tex,
    )


# ---------------------------------------------------------------------------------------------
# Dataset generation

def _image_rng(seed: int, stream: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([stream, seed, *keys])


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _params(seed, n_train, n_val, n_test, world=SHAPES_WORLD):
    params = {"version": WORLD_VERSION, "seed": int(seed), "n_train": int(n_train), "n_val": int(n_val),
              "n_test": int(n_test), "image_size": IMAGE_SIZE, "hue_cast": DATASET_HUE_CAST,
              "cast_mode": CAST_MODE, "illuminant": CAMERA_ILLUMINANT_HUE, "split": SPLIT,
              "classnames": list(world.classnames)}
    return params if world is SHAPES_WORLD else {**params, "world": world.name}


def is_generated(dataset_dir: str, seed=0, n_train=DEFAULT_N_TRAIN, n_val=DEFAULT_N_VAL, n_test=DEFAULT_N_TEST,
                 world=SHAPES_WORLD) -> bool:
    """Whether `dataset_dir` holds a finished generation with exactly these parameters."""
    marker = os.path.join(dataset_dir, MARKER_FILENAME)
    if not (os.path.isfile(marker) and os.path.isfile(os.path.join(dataset_dir, world.split_file))):
        return False
    try:
        with open(marker) as f:
            return json.load(f) == _params(seed, n_train, n_val, n_test, world)
    except (OSError, ValueError):
        return False


def generate(root: str, seed: int = 0, n_train: int = DEFAULT_N_TRAIN, n_val: int = DEFAULT_N_VAL,
             n_test: int = DEFAULT_N_TEST, force: bool = False, progress: bool = True, world: str = "shapes") -> str:
    """Write the Shapes dataset (or a cross-dataset target world of TARGET_WORLDS) under
    `<root>/<world>` (unless already there) and return that dir.

    Deterministic: the same arguments give byte-identical files. A generation is written into a
    temporary sibling directory and moved into place when finished, and the parameter marker is
    written last, so an interrupted or differently parametrised generation is redone, not reused.
    """
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")
    spec = WORLDS[world]
    root = os.path.abspath(os.path.expanduser(root))
    dataset_dir = os.path.join(root, spec.name)
    if not force and is_generated(dataset_dir, seed, n_train, n_val, n_test, spec):
        return dataset_dir

    from tqdm import tqdm

    os.makedirs(root, exist_ok=True)
    tmp_dir = os.path.join(root, f".{spec.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    image_dir = os.path.join(tmp_dir, "images")
    counts = dict(zip(SPLIT_NAMES, (n_train, n_val, n_test)))
    split = {name: [] for name in SPLIT_NAMES}
    try:
        for label, classname in enumerate(spec.classnames):
            os.makedirs(os.path.join(image_dir, class_folder(classname)))
        total = len(spec.classnames) * sum(counts.values())
        stream = STREAM_DATASET if spec is SHAPES_WORLD else STREAM_DATASET + 1 + list(TARGET_WORLDS).index(world)
        with tqdm(total=total, desc=f"Generating {spec.name}", unit="img", disable=not progress) as bar:
            for split_id, name in enumerate(SPLIT_NAMES):
                offset = sum(counts[s] for s in SPLIT_NAMES[:split_id])
                for label, classname in enumerate(spec.classnames):
                    for i in range(counts[name]):
                        img, _ = _sample_world_image(spec, _image_rng(seed, stream, split_id, label, i), label)
                        relpath = f"{class_folder(classname)}/{offset + i:05d}.png"
                        with open(os.path.join(image_dir, relpath), "wb") as f:
                            f.write(_png_bytes(img))
                        split[name].append([relpath, label, classname])
                        bar.update(1)
        with open(os.path.join(tmp_dir, spec.split_file), "w") as f:
            json.dump(split, f, indent=4, separators=(",", ": "))
        with open(os.path.join(tmp_dir, MARKER_FILENAME), "w") as f:
            json.dump(_params(seed, n_train, n_val, n_test, spec), f, indent=1)
        if os.path.exists(dataset_dir):
            # Make the old copy unusable before removing it, then move the finished one in.
            old = os.path.join(root, f".{spec.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(dataset_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp_dir, dataset_dir)
    finally:
        if os.path.exists(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    return dataset_dir


def main(argv=None):
    p = argparse.ArgumentParser(description="Generate the procedural Shapes dataset (CoOp layout).")
    p.add_argument("--root", required=True, help="data root; the dataset goes to ROOT/shapes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="train images per class")
    p.add_argument("--n-val", type=int, default=DEFAULT_N_VAL, help="val images per class")
    p.add_argument("--n-test", type=int, default=DEFAULT_N_TEST, help="test images per class")
    p.add_argument("--force", action="store_true", help="regenerate even if a matching copy exists")
    p.add_argument("--targets", action="store_true",
                   help=f"also generate the cross-dataset target worlds ({', '.join(TARGET_WORLDS)})")
    args = p.parse_args(argv)
    out = generate(args.root, args.seed, args.n_train, args.n_val, args.n_test, force=args.force)
    for name in TARGET_WORLDS if args.targets else ():
        target = generate(args.root, args.seed, args.n_train, args.n_val, args.n_test, force=args.force, world=name)
        print(f"Cross-dataset target {name} at {target}: {len(TARGET_WORLDS[name].classnames)} classes "
              f"({', '.join(TARGET_WORLDS[name].classnames[:3])}, ...)")
    base, new = base_new_labels()
    print(f"Shapes dataset at {out}: {NUM_CLASSES} classes ({len(base)} base, {len(new)} new), "
          f"{args.n_train}/{args.n_val}/{args.n_test} train/val/test images per class, {IMAGE_SIZE}x{IMAGE_SIZE} px")


if __name__ == "__main__":
    main()
