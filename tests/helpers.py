"""Helpers the test modules share (fixtures are in conftest.py): where things are, train.py as a user
runs it, CoOp-format checkpoints, a tiny EuroSAT, and OpenAI's own CLIP on seeded weights."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# The project's test data beside the checkout (not shipped; tests that need it skip without it).
SHARED_DATA = osp.join(osp.dirname(REPO), "shared", "data")
SHARED_SPLITS = osp.join(SHARED_DATA, "splits")
if REPO not in sys.path:
    sys.path.insert(0, REPO)

# Options that make any trainer config run on the tiny random test model in seconds.
TINY_OPTS = ["MODEL.BACKBONE.NAME", "tiny-vit", "MODEL.BACKBONE.PRETRAINED", "False", "INPUT.SIZE", "(32,32)",
             "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TEST.BATCH_SIZE", "64"]
COOP_CFG = "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"
# 4 shots x 48 classes = 192 images = 12 batches of 16 per epoch.
SMALL = TINY_OPTS + ["DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "16"]


# -------------------- train.py ---------------------------------------------------------------

def run_train(args, cwd=REPO, check=True, env=None):
    """Run train.py as a user would; returns the CompletedProcess (stdout + stderr captured)."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train_args(trainer, cfg, root, out, dataset="shapes"):
    """train.py's arguments for one seed-1 run of `trainer` with config file `cfg`."""
    return ["--root", root, "--seed", "1", "--trainer", trainer, "--dataset-config-file",
            f"configs/datasets/{dataset}.yaml", "--config-file", cfg, "--output-dir", str(out)]


def coop_args(root, out, *opts, flags=()):
    """train.py's arguments for CoOp on Shapes: flags first, then the KEY VALUE config options."""
    return train_args("CoOp", COOP_CFG, root, out) + list(flags) + SMALL + list(opts)


def fails(run, args):
    """The error message train.py's main() exits with (`run`: the train_main fixture)."""
    with pytest.raises(SystemExit) as exc:
        run(args)
    assert isinstance(exc.value.code, str), exc.value.code
    return exc.value.code


def result_accuracy(log_text):
    """The accuracy of a log's last '=> result' block."""
    block = log_text.split("=> result")[-1]
    line = next(l for l in block.splitlines() if l.startswith("* accuracy:"))
    return float(line.split(":")[1].strip().rstrip("%"))


def snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file under `folder`."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            st = os.stat(osp.join(dirpath, f))
            out[osp.relpath(osp.join(dirpath, f), folder)] = (st.st_size, st.st_mtime_ns)
    return out


def load_checkpoint(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=True)


def make_cfg(trainer, config_file, root, output_dir, opts=()):
    """A frozen config for building a trainer in-process."""
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from clipadapt.config import build_config
    cfg = build_config(trainer, osp.join(REPO, "configs/datasets/shapes.yaml"), osp.join(REPO, config_file),
                       list(TINY_OPTS) + list(opts), {"DATASET.ROOT": root, "OUTPUT_DIR": str(output_dir), "SEED": 1})
    cfg.freeze()
    return cfg


def build_dataset(root, name, shots=-1, subsample="all", seed=1):
    """The registered dataset `name` under `root`, built from the few config keys datasets read."""
    from yacs.config import CfgNode

    from clipadapt.engine import DATASET_REGISTRY
    cfg = CfgNode()
    cfg.DATASET = CfgNode()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return DATASET_REGISTRY.get(name)(cfg)


# -------------------- CoOp's checkpoints -----------------------------------------------------

def coop_checkpoint(ctx, n_cls, epoch):
    """A checkpoint as CoOp's trainer on Dassl writes it: state_dict with ctx and the class-token
    buffers, the epoch, the SGD state, the warmup scheduler's state (a pickled CosineAnnealingLR
    holding the SGD object inside) and val_result None."""
    import torch

    class DasslStyleWarmup(torch.optim.lr_scheduler.LRScheduler):
        """The fields Dassl's ConstantWarmupScheduler keeps (successor, warmup_epoch, cons_lr): its
        state_dict() is torch's, i.e. every attribute but the optimizer, so the pickled `successor`
        scheduler (which holds the optimizer object) lands in the checkpoint."""

        def __init__(self, optimizer, successor, warmup_epoch, cons_lr):
            self.successor, self.warmup_epoch, self.cons_lr = successor, warmup_epoch, cons_lr
            super().__init__(optimizer)

        def get_lr(self):
            return [self.cons_lr for _ in self.base_lrs]

    param = torch.nn.Parameter(ctx.clone())
    optim = torch.optim.SGD([param], lr=0.002, momentum=0.9, weight_decay=5e-4)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=epoch)
    sched = DasslStyleWarmup(optim, cosine, warmup_epoch=1, cons_lr=1e-5)
    optim.zero_grad()
    (param ** 2).sum().backward()
    optim.step()  # momentum buffers in the optimizer state, as after training (the saved ctx is `ctx`)
    sched.step()
    width = ctx.shape[-1]
    state_dict = OrderedDict([("ctx", ctx.detach().clone()),
                              ("token_prefix", torch.randn(n_cls, 1, width)),
                              ("token_suffix", torch.randn(n_cls, 77 - 1 - ctx.shape[-2], width))])
    return {"state_dict": state_dict, "epoch": epoch, "optimizer": optim.state_dict(),
            "scheduler": sched.state_dict(), "val_result": None}


# -------------------- a tiny EuroSAT ---------------------------------------------------------

def touch_split(split, image_dir):
    """Create an empty file for every image a split dict names."""
    made = set()
    for key in ("train", "val", "test"):
        for rel, _, _ in split[key]:
            path = os.path.join(image_dir, rel)
            folder = os.path.dirname(path)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            open(path, "wb").close()


def write_json(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def tiny_eurosat(root, per_class=10, classes=("AnnualCrop", "Forest", "Highway", "River")):
    """A small EuroSAT-layout dataset with a split json: 5/2/3 per class."""
    split = {"train": [], "val": [], "test": []}
    for label, c in enumerate(classes):
        names = [f"{c}/{c}_{i}.jpg" for i in range(per_class)]
        cname = {"AnnualCrop": "Annual Crop Land", "Highway": "Highway or Road"}.get(c, c)
        split["train"] += [[n, label, cname] for n in names[:5]]
        split["val"] += [[n, label, cname] for n in names[5:7]]
        split["test"] += [[n, label, cname] for n in names[7:]]
    touch_split(split, os.path.join(root, "eurosat", "2750"))
    write_json(split, os.path.join(root, "eurosat", "split_zhou_EuroSAT.json"))
    return split


def impaths(items):
    return [d.impath for d in items]


# -------------------- OpenAI's CLIP on seeded weights ----------------------------------------

# OpenAI's CLIP(...) arguments of the released models (from the shapes of their weights).
_TEXT = dict(context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
OPENAI_DIMS = {
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                     **_TEXT),
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=32,
                     **_TEXT),
    "RN50": dict(embed_dim=1024, image_resolution=224, vision_layers=(3, 4, 6, 3), vision_width=64,
                 vision_patch_size=None, **_TEXT),
}


def openai_clip_file(name):
    """A file of the installed `openai-clip` package; skips the test when it is not installed."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("openai-clip is not installed (pip install -e '.[test]')")
    return osp.join(list(spec.submodule_search_locations)[0], name)


def load_openai_module(filename, module_name):
    # By file: `import clip` runs clip/clip.py, which needs pkg_resources (gone from new setuptools).
    spec = importlib.util.spec_from_file_location(module_name, openai_clip_file(filename))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seeded_openai_state(openai_model_py, name, seed=0):
    """A state dict of OpenAI's architecture `name`: OpenAI's init, constant tensors (norm weights,
    biases, BN statistics) made random too, every float rounded to fp16 as released weights are."""
    import torch
    torch.manual_seed(seed)
    model = openai_model_py.CLIP(**OPENAI_DIMS[name])
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            if value.numel() > 1 and torch.all(value == value.flatten()[0]):
                noise = 0.1 * torch.randn_like(value)
                value = value + (noise.abs() if key.endswith("running_var") else noise)
            value = value.half()
        state[key] = value
    return state


def relative_difference(ours, theirs):
    """max |ours - theirs| / max |theirs|, in float64."""
    return ((ours.double() - theirs.double()).abs().max() / theirs.double().abs().max()).item()
