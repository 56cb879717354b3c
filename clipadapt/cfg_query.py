"""Print one value of a run's config, for shell scripts (e.g. the last epoch to load).

    python -m clipadapt.cfg_query --trainer CoOp --config-file configs/trainers/CoOp/x.yaml OPTIM.MAX_EPOCH [opts]

The trainers (whose config nodes the query needs) are the repository's top-level `trainers` package,
which setup.py does not install: it is imported from the working directory or PYTHONPATH, else from
the repository this package sits in.
"""
import argparse
import importlib
import os
import sys


def import_trainers():
    """Register every trainer: `trainers` from sys.path, else from the repository beside this package."""
    try:
        return importlib.import_module("trainers")
    except ModuleNotFoundError as exc:
        if exc.name != "trainers":
            raise
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.isfile(os.path.join(repo, "trainers", "__init__.py")):
        raise SystemExit("clipadapt.cfg_query needs the repository's trainers package (not installed by setup.py): "
                         "run it from the repository root or put the repository on PYTHONPATH")
    sys.path.insert(0, repo)
    return importlib.import_module("trainers")


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", default="")
    parser.add_argument("--config-file", default="")
    parser.add_argument("--dataset-config-file", default="")
    parser.add_argument("key")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    import_trainers()
    from .config import build_config
    cfg = build_config(args.trainer, args.dataset_config_file, args.config_file, args.opts)
    node = cfg
    for part in args.key.split("."):
        node = node[part]
    print(node)


if __name__ == "__main__":
    main()
