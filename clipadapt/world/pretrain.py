"""Pretrain the tiny CLIP of the built-in world on captioned renderings of the Shapes world.

The model (`shapes-clip-tiny`, an `open_clip.model.CLIP` from `model_configs/`) is trained with
CLIP's symmetric contrastive loss and a learnable logit scale on images rendered for the occasion
from a seed stream of their own (never the dataset's), randomly cropped and flipped at every
step, with varied captions of every (colour, shape) combination, including those that serve as
new classes downstream, as web-scale pretraining covers a benchmark's novel classes. Training is
short on purpose (2500 steps of 48 pairs, about 3 minutes on 2 idle CPU cores): zero-shot
accuracy with "a photo of a {}." on the dataset's test split, whose colours carry a cast this
pretraining never sees (shapes.DATASET_HUE_CAST), is far above chance (50.3% base / 53.1% new /
34.2% over all 48 classes, 2 threads) and leaves room for prompt learning and adapters. Results are
deterministic for a seed and a thread count (float sums depend on the split over threads; the
count used is stored in the checkpoint's meta).

``python -m clipadapt.world.pretrain --root DATA`` generates the data if missing, pretrains if
missing (cached under ``$CLIPADAPT_CACHE``, else ``$XDG_CACHE_HOME/clipadapt`` or
``~/.cache/clipadapt``) and prints zero-shot accuracy on the test split.
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

from ..clip.loader import quiet_open_clip, register_model_configs
from ..clip.text import TextEncoder, eot_positions
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
        img, a = shapes.sample_image(shapes._image_rng(seed, shapes.STREAM_PRETRAIN, i), i % shapes.NUM_CLASSES)
        images[i] = np.asarray(img)
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
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save({"arch": ARCH, "state_dict": model.state_dict(), "meta": meta}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
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
    hm = 2 * acc_base * acc_new / (acc_base + acc_new) if acc_base + acc_new > 0 else 0.0
    return {"all": acc_all, "base": acc_base, "new": acc_new, "hm": hm}


def main(argv=None):
    p = argparse.ArgumentParser(description="Generate the Shapes world and pretrain its tiny CLIP (cached).")
    p.add_argument("--root", required=True, help="data root; the dataset goes to ROOT/shapes")
    p.add_argument("--seed", type=int, default=0, help="seed of the dataset and of the pretraining")
    p.add_argument("--steps", type=int, default=None, help=f"pretraining steps (default {DEFAULT_STEPS})")
    p.add_argument("--cache-dir", default=None, help=f"checkpoint cache (default {default_cache_dir()})")
    p.add_argument("--template", default="a photo of a {}.")
    args = p.parse_args(argv)

    dataset_dir = shapes.generate(args.root, seed=args.seed)
    path = ensure_pretrained(args.cache_dir, seed=args.seed, steps=args.steps)
    model = load_pretrained(path)
    meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
    acc = zero_shot_accuracy(model, dataset_dir, "test", args.template)
    chance = 100.0 / math.ceil(shapes.NUM_CLASSES / 2)
    print(f"Dataset:    {dataset_dir}")
    print(f"Checkpoint: {path} ({meta['steps']} steps, trained in {meta['train_seconds']} s)")
    print(f"Zero-shot accuracy on test with {args.template!r}:")
    print(f"  base (24-way): {acc['base']:.1f}%   new (24-way): {acc['new']:.1f}%   HM: {acc['hm']:.1f}%   "
          f"(chance {chance:.1f}%)")
    print(f"  all  ({shapes.NUM_CLASSES}-way): {acc['all']:.1f}%   (chance {100.0 / shapes.NUM_CLASSES:.1f}%)")


if __name__ == "__main__":
    main()
