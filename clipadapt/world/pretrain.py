"""The tiny CLIP of the built-in world: pretrained once on captioned renderings of the Shapes world, shipped.

The model (`shapes-clip-tiny`, an `open_clip.model.CLIP` from `model_configs/`) was trained with
CLIP's symmetric contrastive loss and a learnable logit scale on images rendered for the occasion
from a seed stream of their own (never the dataset's), randomly cropped and flipped at every
step, with varied captions of every (colour, shape) combination, including those that serve as
new classes downstream, as web-scale pretraining covers a benchmark's novel classes (recipe p2:
2500 steps of 48 pairs, seed 0, one thread).

It ships with the package (`weights/shapes-clip-tiny.pt`, 1.3 MB: only the 47 token-embedding rows
the world's captions use are stored, the full table is rebuilt at load time) beside a card
(`weights/shapes-clip-tiny.json`) holding its sha256, checked at every load, its recipe and its
zero-shot accuracy on the dataset's test split with "a photo of a {}.": 29.9% base / 34.4% new
(24-way each, chance 4.2%); the dataset's camera casts colours this pretraining never saw.
So every machine uses the same CLIP: results do not depend on a machine's pretraining arithmetic
(float sums depend on how they are split over threads and on the CPU).

``python -m clipadapt.world.pretrain --root DATA`` checks the shipped CLIP and prints its zero-shot
accuracy; ``--force`` pretrains from scratch (cached under ``$CLIPADAPT_CACHE``, else
``$XDG_CACHE_HOME/clipadapt`` or ``~/.cache/clipadapt``) and writes it as the shipped weights and card.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..atomic import atomic_torch_save, atomic_write_text
from ..clip.loader import quiet_open_clip, register_model_configs
from ..clip.text import TextEncoder, eot_positions
from ..metrics import harmonic_mean
from ..paths import cache_root
from . import ARCH, shapes

# Bump when the training recipe changes; it is part of the checkpoint's file name.
PRETRAIN_VERSION = "p2"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DEFAULT_STEPS = 2500
POOL_PER_CLASS = 400  # images rendered once per pretraining; each step sees a fresh crop/flip
LR = 1e-3
WEIGHT_DECAY = 0.1
WARMUP_FRACTION = 0.05
CROP_SCALE = (0.7, 1.0)  # mild: the object stays in view (0.5 halves the shape accuracy reached)
CROP_RATIO = (3 / 4, 4 / 3)

def default_cache_dir() -> str:
    """Where the pretrained checkpoint is cached: the project's cache root (clipadapt.paths)."""
    return cache_root()


def checkpoint_path(cache_dir: str | None = None, seed: int = 0, steps: int | None = None) -> str:
    steps = DEFAULT_STEPS if steps is None else int(steps)
    name = f"{ARCH}_{shapes.WORLD_VERSION}_{PRETRAIN_VERSION}_seed{seed}_steps{steps}.pt"
    return os.path.join(cache_dir or default_cache_dir(), name)


def create_model(seed: int | None = None):
    """A randomly initialised `shapes-clip-tiny` (deterministic when `seed` is given)."""
    import open_clip

    register_model_configs()
    if seed is not None:
        torch.manual_seed(seed)
    with quiet_open_clip():
        return open_clip.create_model(ARCH, pretrained=None)


def get_tokenizer():
    import open_clip

    register_model_configs()
    return open_clip.get_tokenizer(ARCH)


# ---------------------------------------------------------------------------------------------
# Pretraining data: a pool of fresh renderings, cropped and flipped anew at every step

def render_pool(seed: int, n: int, progress: bool = True):
    """(uint8 images (n, H, W, 3), attributes per image), classes balanced, from the pretraining stream."""
    from tqdm import tqdm

    size = shapes.IMAGE_SIZE
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    attrs = []
    for i in tqdm(range(n), desc="Rendering pretraining images", unit="img", disable=not progress):
        cls = shapes.PRETRAIN_CLASSES[i % len(shapes.PRETRAIN_CLASSES)]
        a = shapes.sample_attributes(shapes._image_rng(seed, shapes.STREAM_PRETRAIN, i), cls["colour"], cls["shape"])
        images[i] = np.asarray(shapes.render(a, size))
        attrs.append(a)
    return images, attrs


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random resized crop (mild) + horizontal flip of a float batch (B, 3, H, W), by resampling."""
    b = images.shape[0]
    area = torch.empty(b).uniform_(*CROP_SCALE, generator=gen)
    log_r = torch.empty(b).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]), generator=gen)
    ratio = torch.exp(log_r)
    w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop width / image width
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)  # crop centre in [-1, 1] coordinates
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = w * flip
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _cpu_threads() -> int:
    """Threads for pretraining: $OMP_NUM_THREADS when set, else every core this process may use."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _param_groups(model):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if name == "token_embedding.weight":
            continue  # its own sparse optimizer, see `pretrain`
        if p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]


def pretrain(seed: int = 0, steps: int | None = None, progress: bool = True):
    """Train `shapes-clip-tiny` from scratch; returns (model, meta).

    Each step is one batch holding every class once (a random pool image of it, freshly cropped
    and flipped, with a freshly drawn caption): no two captions of a batch name the same class,
    so the contrastive loss has no false negatives and every class meets every other as a
    negative, including those that differ in shape only.
    """
    from tqdm import tqdm

    steps = DEFAULT_STEPS if steps is None else int(steps)
    n_cls = shapes.NUM_CLASSES
    per_class = max(1, min(POOL_PER_CLASS, steps))
    threads = torch.get_num_threads()
    torch.set_num_threads(_cpu_threads())
    t0, c0 = time.time(), time.process_time()
    try:
        model = create_model(seed)
        model.train()
        tokenizer = get_tokenizer()
        text_encoder = TextEncoder(model)  # cut to the longest EOT: same features, less compute
        pool, pool_attrs = render_pool(seed, per_class * n_cls, progress)
        pool_t = torch.from_numpy(pool).permute(0, 3, 1, 2)  # (n, 3, H, W) uint8

        opt = torch.optim.AdamW(_param_groups(model), lr=LR, betas=(0.9, 0.98), eps=1e-6, foreach=True)
        # Captions use a few dozen of the 49408 token rows: sparse gradients and a lazy Adam on
        # those rows only, instead of a dense update of 3M parameters at every step.
        model.token_embedding.sparse = True
        opt_emb = torch.optim.SparseAdam([model.token_embedding.weight], lr=LR, betas=(0.9, 0.98), eps=1e-6)
        warmup = max(1, int(WARMUP_FRACTION * steps))

        def lr_at(step):
            if step < warmup:
                return LR * (step + 1) / warmup
            return 0.5 * LR * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

        gen = torch.Generator().manual_seed(seed)
        rng = np.random.default_rng([shapes.STREAM_PRETRAIN, seed, 1])
        token_cache: dict[str, torch.Tensor] = {}
        max_log_scale = math.log(100.0)
        target = torch.arange(n_cls)
        losses = []
        bar = tqdm(range(steps), desc="Pretraining shapes-clip-tiny", unit="step", disable=not progress)
        for step in bar:
            # pool image i is of class i % n_cls: one random image of every class
            idx = torch.arange(n_cls) + n_cls * torch.randint(per_class, (n_cls,), generator=gen)
            images = _normalize(augment(pool_t[idx].float() / 255.0, gen))  # (n_cls, 3, H, W)
            texts = [shapes.caption(pool_attrs[i], rng) for i in idx.tolist()]
            missing = sorted(set(texts) - token_cache.keys())
            if missing:
                token_cache.update(zip(missing, tokenizer(missing)))
            tokens = torch.stack([token_cache[t] for t in texts])  # (n_cls, context_length)

            for g in opt.param_groups + opt_emb.param_groups:
                g["lr"] = lr_at(step)
            img_f = F.normalize(model.encode_image(images), dim=-1)
            tokens = tokens[:, :int(eot_positions(tokens).max()) + 1]  # embed only what the encoder reads
            txt_f = F.normalize(text_encoder(text_encoder.embed(tokens), tokens), dim=-1)
            logits = model.logit_scale.exp() * img_f @ txt_f.T  # (n_cls, n_cls)
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            opt.zero_grad(set_to_none=True)
            opt_emb.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            opt_emb.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_log_scale)
            losses.append(loss.item())
            if progress and (step % 50 == 0 or step == steps - 1):
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        bar.close()
    finally:
        torch.set_num_threads(threads)
    model.token_embedding.sparse = False
    model.eval()
    meta = {
        "arch": ARCH, "seed": int(seed), "steps": steps, "batch_size": n_cls, "pool_size": per_class * n_cls,
        "world_version": shapes.WORLD_VERSION, "pretrain_version": PRETRAIN_VERSION,
        "image_size": shapes.IMAGE_SIZE, "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
        "final_loss": float(np.mean(losses[-100:])) if losses else float("nan"),
        "train_seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1),
        "threads": _cpu_threads(), "classnames": list(shapes.CLASSNAMES),
    }
    return model, meta


def ensure_pretrained(cache_dir: str | None = None, seed: int = 0, steps: int | None = None,
                      progress: bool = True) -> str:
    """Path of the pretrained `shapes-clip-tiny` checkpoint; trains it (minutes on a CPU) only if missing.

    The file is ``{"arch": ARCH, "state_dict": ..., "meta": {...}}``, loadable with
    ``torch.load(path, weights_only=True)``, written to a temporary file and moved into place.
    """
    path = checkpoint_path(cache_dir, seed, steps)
    if os.path.isfile(path):
        return path
    model, meta = pretrain(seed=seed, steps=steps, progress=progress)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_torch_save({"arch": ARCH, "state_dict": model.state_dict(), "meta": meta}, path)
    return path


# ---------------------------------------------------------------------------------------------
# The shipped world CLIP: pretrained once, stored compact as package data, expanded at load time

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
SHIPPED_WEIGHTS = os.path.join(WEIGHTS_DIR, f"{ARCH}.pt")
SHIPPED_CARD = os.path.join(WEIGHTS_DIR, f"{ARCH}.json")  # digest, recipe and zero-shot numbers
COMPACT_FORMAT = "clipadapt-compact-token-rows-v1"
TOKEN_TABLE = "token_embedding.weight"


def vocabulary_token_ids() -> list[int]:
    """Sorted ids of every token the world's captions can contain (start and end of text included).

    CLIP's tokenizer splits text into words and punctuation before byte-pair encoding, so the tokens
    of all captions are the tokens of their distinct words: one string of every template with every
    value of every field gives them all.
    """
    words = {"colour": shapes.COLOUR_NAMES, "shape": shapes.SHAPE_NAMES, "size": shapes.SIZE_WORDS,
             "bg": shapes.BACKGROUND_WORDS, "tex": ("clean", "noisy", "striped", "blurry"),
             "cls": [f"{c} {s}" for c in shapes.COLOUR_NAMES for s in shapes.SHAPE_NAMES]}
    text = []
    for template in shapes._CAPTION_TEMPLATES:
        for field, values in words.items():
            template = template.replace("{" + field + "}", " ".join(values))
        text.append(template)
    tokens = get_tokenizer()([" ".join(text)], context_length=4096)[0]
    return sorted(set(tokens[tokens > 0].tolist()))


def _sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def export_shipped(checkpoint: str, zero_shot: dict, out_dir: str = WEIGHTS_DIR) -> dict:
    """Write `checkpoint` (from `ensure_pretrained`) as the shipped weights + card into `out_dir`.

    Only the token-embedding rows of the world's vocabulary are kept: the other rows never receive
    a gradient (pretraining updates the table sparsely), so they are still at their random
    initialisation, which is checked here; at load time they are zero. Returns the card.
    """
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state, meta = dict(ckpt["state_dict"]), ckpt["meta"]
    table = state.pop(TOKEN_TABLE)
    ids = torch.tensor(vocabulary_token_ids())
    untouched = torch.ones(table.shape[0], dtype=torch.bool)
    untouched[ids] = False
    init = create_model(meta["seed"]).state_dict()[TOKEN_TABLE]
    if not torch.equal(table[untouched], init[untouched]):
        changed = (table != init).any(1) & untouched
        raise RuntimeError(f"token rows {changed.nonzero().flatten()[:10].tolist()} changed in pretraining but are not "
                           "in vocabulary_token_ids(): add their words to the caption vocabulary.")
    compact = {"format": COMPACT_FORMAT, "arch": ARCH, "state_dict": state, "token_ids": ids,
               "token_rows": table[ids].clone(), "token_table_shape": list(table.shape), "meta": meta}
    os.makedirs(out_dir, exist_ok=True)
    pt, card_path = os.path.join(out_dir, f"{ARCH}.pt"), os.path.join(out_dir, f"{ARCH}.json")
    atomic_torch_save(compact, pt)
    card = {
        "arch": ARCH, "file": os.path.basename(pt), "sha256": _sha256(pt), "bytes": os.path.getsize(pt),
        "format": COMPACT_FORMAT, "kept_token_rows": len(ids),
        "recipe": {k: meta[k] for k in ("seed", "steps", "batch_size", "pool_size", "world_version",
                                        "pretrain_version", "threads", "train_seconds", "cpu_seconds", "final_loss")},
        "recipe_constants": {"lr": LR, "weight_decay": WEIGHT_DECAY, "warmup_fraction": WARMUP_FRACTION,
                             "crop_scale": list(CROP_SCALE), "pool_per_class": POOL_PER_CLASS},
        "zero_shot_test": {k: round(v, 2) for k, v in zero_shot.items()},
        "reproduce": f"python -m clipadapt.world.pretrain --root DATA --force --seed {meta['seed']} "
                     f"--steps {meta['steps']}  (with OMP_NUM_THREADS={meta['threads']})",
    }
    atomic_write_text(card_path, json.dumps(card, indent=1) + "\n")
    return card


def shipped_card(weights_dir: str = WEIGHTS_DIR) -> dict:
    with open(os.path.join(weights_dir, f"{ARCH}.json")) as f:
        return json.load(f)


def shipped_checkpoint(cache_dir: str | None = None, weights_dir: str = WEIGHTS_DIR) -> str:
    """Path of the shipped world CLIP as a full ``{"arch", "state_dict", "meta"}`` checkpoint.

    Checks the shipped file against the digest in its card, then rebuilds the full token table
    (rows outside the world's vocabulary are zero) into the cache, once per digest.
    """
    pt, card_path = os.path.join(weights_dir, f"{ARCH}.pt"), os.path.join(weights_dir, f"{ARCH}.json")
    if not (os.path.isfile(pt) and os.path.isfile(card_path)):
        raise FileNotFoundError(f"The built-in world's CLIP is missing ({pt} and its card {os.path.basename(card_path)}): "
                                "reinstall clipadapt, or pretrain one with python -m clipadapt.world.pretrain "
                                "--root DATA --force.")
    card = shipped_card(weights_dir)
    digest = _sha256(pt)
    if digest != card["sha256"]:
        raise RuntimeError(f"{pt} has sha256 {digest[:16]}..., its card {card_path} says {card['sha256'][:16]}...: "
                           "the file is damaged or was replaced; reinstall clipadapt (git checkout the file), or "
                           "re-export it with python -m clipadapt.world.pretrain --root DATA --force.")
    path = os.path.join(cache_dir or default_cache_dir(), f"{ARCH}_shipped_{digest[:16]}.pt")
    if os.path.isfile(path):
        return path
    compact = torch.load(pt, map_location="cpu", weights_only=True)
    if compact.get("format") != COMPACT_FORMAT:
        raise ValueError(f"{pt} is not a {COMPACT_FORMAT} file (format {compact.get('format')!r}).")
    state = dict(compact["state_dict"])
    table = torch.zeros(compact["token_table_shape"], dtype=compact["token_rows"].dtype)
    table[compact["token_ids"]] = compact["token_rows"]
    state[TOKEN_TABLE] = table
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_torch_save({"arch": compact["arch"], "state_dict": state, "meta": dict(compact["meta"], sha256=digest)}, path)
    return path


def load_pretrained(path: str):
    """The model of a checkpoint written by `ensure_pretrained`, in eval mode on the CPU."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model()
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Zero-shot evaluation

def test_transform(image_size: int = shapes.IMAGE_SIZE):
    """The downstream test pipeline: resize short edge (bicubic), centre crop, tensor, CLIP normalise."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])


@torch.no_grad()
def zero_shot_accuracy(model, dataset_dir: str, split: str = "test", template: str = "a photo of a {}.",
                       batch_size: int = 512) -> dict:
    """Zero-shot accuracy (%) of `model` on a split of a dataset in CoOp's split format.

    Returns ``{"all", "base", "new", "hm"}``: "all" classifies every image among all classes;
    "base" / "new" follow the CoCoOp base-to-new protocol (base = first ceil(n/2) labels): images
    of base classes among base classes only, images of new classes among new classes only.
    """
    from PIL import Image

    split_file = [f for f in os.listdir(dataset_dir) if f.startswith("split_") and f.endswith(".json")]
    with open(os.path.join(dataset_dir, sorted(split_file)[0])) as f:
        items = json.load(f)[split]
    names = {}
    for _, label, classname in items:
        names[label] = classname
    n_cls = max(names) + 1
    classnames = [names[i] for i in range(n_cls)]

    model.eval()
    tokenizer = get_tokenizer()
    text_f = TextEncoder(model).encode_tokenized(tokenizer([template.format(c) for c in classnames]))

    tf = test_transform(model.visual.image_size[0] if hasattr(model.visual, "image_size") else shapes.IMAGE_SIZE)
    img_root = os.path.join(dataset_dir, "images")
    feats, labels = [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        x = torch.stack([tf(Image.open(os.path.join(img_root, p)).convert("RGB")) for p, _, _ in chunk])
        feats.append(F.normalize(model.encode_image(x), dim=-1))
        labels.extend(label for _, label, _ in chunk)
    logits = torch.cat(feats) @ text_f.T  # (n_images, n_cls)
    labels = torch.tensor(labels)

    m = math.ceil(n_cls / 2)
    is_base = labels < m
    acc_all = (logits.argmax(1) == labels).float().mean().item() * 100
    acc_base = (logits[is_base][:, :m].argmax(1) == labels[is_base]).float().mean().item() * 100
    acc_new = (logits[~is_base][:, m:].argmax(1) + m == labels[~is_base]).float().mean().item() * 100
    hm = harmonic_mean(acc_base, acc_new)
    return {"all": acc_all, "base": acc_base, "new": acc_new, "hm": hm}


def main(argv=None):
    p = argparse.ArgumentParser(
        description="The built-in world's CLIP: check the shipped one (default), or pretrain and ship a new one (--force).")
    p.add_argument("--root", required=True, help="data root; the dataset goes to ROOT/shapes")
    p.add_argument("--force", action="store_true",
                   help="pretrain from scratch (minutes to an hour on a CPU) and write it as the shipped weights")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset and of the pretraining")
    p.add_argument("--steps", type=int, default=None, help=f"pretraining steps (default {DEFAULT_STEPS})")
    p.add_argument("--cache-dir", default=None, help=f"checkpoint cache (default {default_cache_dir()})")
    p.add_argument("--export-dir", default=WEIGHTS_DIR, help="where --force writes the weights and their card "
                   "(default: the package's, replacing the shipped CLIP)")
    p.add_argument("--template", default="a photo of a {}.")
    args = p.parse_args(argv)

    dataset_dir = shapes.generate(args.root, seed=args.seed)
    chance = 100.0 / math.ceil(shapes.NUM_CLASSES / 2)
    if args.force:
        path = checkpoint_path(args.cache_dir, args.seed, args.steps)
        if os.path.exists(path):
            os.remove(path)
        path = ensure_pretrained(args.cache_dir, seed=args.seed, steps=args.steps)
        acc = zero_shot_accuracy(load_pretrained(path), dataset_dir, "test", args.template)
        old_pt = os.path.join(args.export_dir, f"{ARCH}.pt")
        old = torch.load(old_pt, map_location="cpu", weights_only=True) if os.path.isfile(old_pt) else None
        card = export_shipped(path, acc, args.export_dir)
        print(f"Pretrained {path} in {card['recipe']['train_seconds']} s; wrote {card['file']} "
              f"({card['bytes']} bytes, sha256 {card['sha256']}) to {args.export_dir}")
        if old is not None:  # the file's digest also covers timings in the meta: compare the weights
            new = torch.load(old_pt, map_location="cpu", weights_only=True)
            pairs = [(old["token_rows"], new["token_rows"])] + [
                (old["state_dict"][k], new["state_dict"][k]) for k in new["state_dict"] if k in old["state_dict"]]
            same = old["state_dict"].keys() == new["state_dict"].keys() and torch.equal(old["token_ids"], new["token_ids"]) \
                and all(a.shape == b.shape and torch.equal(a, b) for a, b in pairs)
            diff = max((float((a.float() - b.float()).abs().max()) for a, b in pairs if a.shape == b.shape), default=0.0)
            print("The same weights as the ones it replaced, bit for bit." if same else
                  f"Weights differ from the ones it replaced (largest difference {diff:.3g}).")
    else:
        path = shipped_checkpoint(args.cache_dir)
        card = shipped_card()
        print(f"Shipped CLIP: {SHIPPED_WEIGHTS} (sha256 {card['sha256']} checked; recipe "
              f"{card['recipe']['pretrain_version']}, {card['recipe']['steps']} steps, seed {card['recipe']['seed']})")
        acc = zero_shot_accuracy(load_pretrained(path), dataset_dir, "test", args.template)
    print(f"Dataset:    {dataset_dir}")
    print(f"Zero-shot accuracy on test with {args.template!r}:")
    print(f"  base (24-way): {acc['base']:.1f}%   new (24-way): {acc['new']:.1f}%   HM: {acc['hm']:.1f}%   "
          f"(chance {chance:.1f}%)")
    print(f"  all  ({shapes.NUM_CLASSES}-way): {acc['all']:.1f}%   (chance {100.0 / shapes.NUM_CLASSES:.1f}%)")


if __name__ == "__main__":
    main()
