"""Print one value of a run's config, for shell scripts (e.g. the last epoch to load).

    python -m clipadapt.cfg_query --trainer CoOp --config-file configs/trainers/CoOp/x.yaml OPTIM.MAX_EPOCH [opts]
"""
import argparse


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", default="")
    parser.add_argument("--config-file", default="")
    parser.add_argument("--dataset-config-file", default="")
    parser.add_argument("key")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    import trainers  # noqa: F401
    from .config import build_config
    cfg = build_config(args.trainer, args.dataset_config_file, args.config_file, args.opts)
    node = cfg
    for part in args.key.split("."):
        node = node[part]
    print(node)


if __name__ == "__main__":
    main()
