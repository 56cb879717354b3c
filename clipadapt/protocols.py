"""The protocols, written once: their datasets, source and targets, output layouts, the few-shot
recipe, and each trainer's default config per protocol (configs/trainers/<T>/protocol_defaults.json).

The run registry (runs.py) places runs with these layouts, the sweep (sweep.py) plans a protocol's
runs, results.py builds their tables, and the shell scripts ask ``python -m clipadapt.protocols``.
A new trainer runs every protocol its protocol_defaults.json names, with no script or list to edit.
No torch import here.

    python -m clipadapt.protocols default-config TRAINER PROTOCOL   # its default config's name
    python -m clipadapt.protocols datasets PROTOCOL [--source S]     # the protocol's datasets (xd: S's targets)
"""
import json
import os.path as osp
import re
import sys

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
PROTOCOLS = ("base2new", "fewshot", "xd", "dg", "gzsl")

COOP_DATASETS = ("imagenet", "caltech101", "oxford_pets", "stanford_cars", "oxford_flowers", "food101",
                 "fgvc_aircraft", "sun397", "dtd", "eurosat", "ucf101")
SOURCE_DATASET = "imagenet"  # xd and dg train here
XD_TARGETS = tuple(d for d in COOP_DATASETS if d != SOURCE_DATASET)
DG_TARGETS = ("imagenetv2", "imagenet_sketch", "imagenet_a", "imagenet_r")
GZSL_DATASETS = ("cub", "awa2", "sun_gzsl", "flo")
# The built-in world's cross-dataset protocol: Shapes as the source, target worlds of other label
# spaces (clipadapt.world.shapes.TARGET_WORLDS; `python -m clipadapt.world.shapes --targets`).
WORLD_SOURCE = "shapes"
WORLD_XD_TARGETS = ("shapes_shape", "shapes_colour", "shapes_size")
XD_SOURCES = {SOURCE_DATASET: XD_TARGETS, WORLD_SOURCE: WORLD_XD_TARGETS}
FEWSHOT_SHOTS = (1, 2, 4, 8, 16)
DEFAULT_DATASETS = {"base2new": COOP_DATASETS, "fewshot": COOP_DATASETS, "xd": XD_TARGETS, "dg": DG_TARGETS,
                    "gzsl": GZSL_DATASETS}

# The run kinds (one per script of scripts/common/) and the protocol each belongs to.
KIND_PROTOCOL = {"base2new_train": "base2new", "base2new_test": "base2new", "few_shot": "fewshot",
                 "gzsl": "gzsl", "xd_train": "xd", "xd_test": "xd"}

# Output layouts relative to the output root, as (prefix, run pattern): the run pattern is what
# results.py matches below the prefix. {cfg} is the config label: the config file's name, plus
# "_<tag>" when the run has overrides.
LAYOUTS = {
    "base2new": ("base2new/{split}", "{dataset}/shots_{shots}/{trainer}/{cfg}/seed{seed}"),
    "gzsl": ("gzsl", "{dataset}/shots_{shots}/{trainer}/{cfg}/seed{seed}"),
    "fewshot": ("fewshot", "{dataset}/{trainer}/{cfg}_{shots}shots/seed{seed}"),
    "xd_source": ("{source}", "{trainer}/{cfg}_{shots}shots/seed{seed}"),
    "xd_target": ("evaluation", "{trainer}/{cfg}_{shots}shots/{dataset}/seed{seed}"),
}

DEFAULTS_FILE = "protocol_defaults.json"


class ProtocolError(ValueError):
    """An unknown protocol, or a trainer without a default config for it."""


def check_protocol(protocol):
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")


def default_config(trainer, protocol):
    """The config name `trainer` runs `protocol` with, from configs/trainers/<trainer>/protocol_defaults.json."""
    check_protocol(protocol)
    path = osp.join(REPO, "configs", "trainers", trainer, DEFAULTS_FILE)
    if not osp.isfile(path):
        raise ProtocolError(f"{path} not found: no default configs for trainer {trainer!r}; pass CFG, or add the "
                            f'file ({{"{protocol}": "<config name>", ...}})')
    with open(path) as f:
        defaults = json.load(f)
    if protocol not in defaults:
        raise ProtocolError(f"{trainer} has no default config for {protocol} in {path} (it has: "
                            f"{', '.join(defaults) or 'none'}); pass CFG")
    return defaults[protocol]


# CoOp's published few-shot recipe (CoOp's COOP.md and IJCV paper) for these trainers and configs.
COOP_RECIPE_CONFIGS = re.compile(r"(rn50|rn101|vit_b16|vit_b32)(_ctxv1|_learned_ratio)?")
RECIPE_TRAINERS = ("CoOp", "CLIPAdapter")


# Released per-dataset epoch counts: (config, dataset) -> the config that trains them (Tip-Adapter-F's
# configs/eurosat.yaml: train_epoch 100, every other dataset 20).
RELEASED_EPOCH_CONFIGS = {"TipAdapterF": {("rn50", "eurosat"): "rn50_ep100"}}


def recipe_config(trainer, config_name, dataset, shots, recipe="published"):
    """The config CoOp's published few-shot recipe trains with: for CoOp or CLIPAdapter and a
    backbone config (rn50, rn101, vit_b16, vit_b32, or their _ctxv1 / _learned_ratio variants),
    50 epochs at 1 shot (<backbone>_ep50<variant>), 100 at 2 and 4 shots (<backbone>_ep100<variant>),
    200 at 8 and 16 (the config itself); on ImageNet 50 at every shot count. A trainer of
    RELEASED_EPOCH_CONFIGS gets its released per-dataset epochs. recipe="fixed": the config as it is."""
    if recipe == "fixed":
        return config_name
    if trainer in RELEASED_EPOCH_CONFIGS:
        return RELEASED_EPOCH_CONFIGS[trainer].get((config_name, dataset), config_name)
    match = COOP_RECIPE_CONFIGS.fullmatch(config_name)
    if trainer not in RECIPE_TRAINERS or not match:
        return config_name
    backbone, variant = match.group(1), match.group(2) or ""
    if dataset == "imagenet" or int(shots) <= 1:
        return f"{backbone}_ep50{variant}"
    if int(shots) <= 4:
        return f"{backbone}_ep100{variant}"
    return config_name


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="python -m clipadapt.protocols", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default = sub.add_parser("default-config", help="the default config name of TRAINER for PROTOCOL")
    default.add_argument("trainer")
    default.add_argument("protocol")
    datasets = sub.add_parser("datasets", help="the datasets PROTOCOL runs on by default")
    datasets.add_argument("protocol")
    datasets.add_argument("--source", default=SOURCE_DATASET, help="xd's source: its targets (shapes: the world's)")
    args = parser.parse_args(argv)
    try:
        if args.command == "default-config":
            print(default_config(args.trainer, args.protocol))
        else:
            check_protocol(args.protocol)
            if args.protocol == "xd" and args.source in XD_SOURCES:
                print(" ".join(XD_SOURCES[args.source]))
            else:
                print(" ".join(DEFAULT_DATASETS[args.protocol]))
    except ProtocolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
