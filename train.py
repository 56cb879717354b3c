"""Train or evaluate a CLIP trainer with CoOp's command line.

    python train.py --root DATA --seed 1 --trainer CoOp \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml \
        --output-dir output/eurosat/CoOp/seed1 DATASET.NUM_SHOTS 16
"""
import argparse
import os
import os.path as osp
import sys

import torch

import datasets  # noqa: F401  (registers every dataset)
import trainers  # noqa: F401  (registers every trainer)
from clipadapt.config import ConfigError, build_config
from clipadapt.engine import ENGINE, build_trainer, collect_env_info, set_random_seed, setup_logger


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to dataset")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory (from which the training resumes)")
    parser.add_argument("--seed", type=int, default=-1, help="only positive value enables a fixed seed")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="path to config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="path to config file for dataset setup")
    parser.add_argument("--trainer", type=str, default="", help="name of trainer")
    parser.add_argument("--backbone", type=str, default="", help="name of CNN backbone")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluation only")
    parser.add_argument("--model-dir", type=str, default="", help="load model from this directory for eval-only mode")
    parser.add_argument("--load-epoch", type=int, help="load model weights at this epoch for evaluation")
    parser.add_argument("--no-train", action="store_true", help="do not call trainer.train()")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="modify config options using the command-line")
    return parser.parse_args(argv)


def cli_overrides(args):
    """CLI arguments that were given, as config keys (CoOp's reset_cfg)."""
    pairs = {
        "DATASET.ROOT": args.root, "OUTPUT_DIR": args.output_dir, "RESUME": args.resume,
        "DATASET.SOURCE_DOMAINS": args.source_domains, "DATASET.TARGET_DOMAINS": args.target_domains,
        "INPUT.TRANSFORMS": args.transforms, "MODEL.BACKBONE.NAME": args.backbone, "MODEL.HEAD.NAME": args.head,
    }
    overrides = {k: v for k, v in pairs.items() if v}
    if args.seed >= 0:
        overrides["SEED"] = args.seed
    return overrides


def setup_cfg(args):
    cfg = build_config(args.trainer, args.dataset_config_file, args.config_file, args.opts or [], cli_overrides(args))
    cfg.freeze()
    return cfg


def check_model_dir(args):
    """Fail before any work when an evaluation points at checkpoints that are not there."""
    if not args.model_dir:
        if args.eval_only and args.load_epoch is not None:
            raise ConfigError("--load-epoch was given without --model-dir: name the training run's output folder.")
        return
    if not osp.isdir(args.model_dir):
        raise ConfigError(f'--model-dir "{args.model_dir}" does not exist. Train first, or pass the output folder '
                          "of the training run.")
    subdirs = [d for d in sorted(os.listdir(args.model_dir)) if osp.isdir(osp.join(args.model_dir, d))]
    saved = sorted({f for d in subdirs for f in os.listdir(osp.join(args.model_dir, d)) if f.startswith("model")})
    wanted = "model-best.pth.tar" if args.load_epoch is None else f"model.pth.tar-{args.load_epoch}"
    if wanted not in saved:
        raise ConfigError(f'--model-dir "{args.model_dir}" has no {wanted}; it has {saved or "no checkpoints"}. '
                          "Pass --load-epoch with one of the saved epochs.")


def print_args(args, cfg):
    print("***************")
    print("** Arguments **")
    print("***************")
    for key in sorted(args.__dict__):
        print(f"{key}: {args.__dict__[key]}")
    print("************")
    print("** Config **")
    print("************")
    print(cfg)


def main(args):
    try:
        cfg = setup_cfg(args)
        if args.eval_only:
            check_model_dir(args)
    except (ConfigError, KeyError) as exc:
        sys.exit(f"error: {exc.args[0] if exc.args else exc}")
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg)
    print(f"Engine: {ENGINE}")
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        if not args.model_dir and trainer.get_model_names():
            print("Warning: --eval-only without --model-dir evaluates the untrained model")
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


if __name__ == "__main__":
    main(parse_args())
