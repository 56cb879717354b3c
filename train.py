"""Train or evaluate a CLIP trainer with CoOp's command line.

    python train.py --root DATA --seed 1 --trainer CoOp \
        --dataset-config-file configs/datasets/eurosat.yaml \
        --config-file configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml \
        --output-dir output/eurosat/CoOp/seed1 DATASET.NUM_SHOTS 16
"""
import argparse
import os.path as osp
import sys
import time

import torch

import datasets  # noqa: F401  (registers every dataset)
import trainers  # noqa: F401  (registers every trainer)
from clipadapt import runs
from clipadapt.clip import BackboneError, DeepPromptError
from clipadapt.config import ConfigError, build_config, check_choices, check_names, check_values, clamp_workers
from clipadapt.engine import ENGINE, TRAINER_REGISTRY, build_trainer, collect_env_info, set_random_seed, setup_logger
from clipadapt.data import DatasetError
from clipadapt.deps import MissingDependency
from clipadapt.loading import UnreadableImageError
from clipadapt.checkpoints import (CheckpointError, load_training_checkpoint, model_files, resume_config_problem,
                                   resume_hint, resume_pointers)
from clipadapt.locks import RunLock, RunLockedError
from clipadapt.run_folder import remove_temp_files, write_error_message
from clipadapt.weights_identity import backbone_name


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
    flags = [o for o in args.opts or [] if o.startswith("--")]
    if flags:
        raise ConfigError(f"{flags} come after the KEY VALUE config options, which take everything after them as "
                          "config; put command-line flags such as --eval-only before the KEY VALUE pairs.")
    cfg = build_config(args.trainer, args.dataset_config_file, args.config_file, args.opts or [], cli_overrides(args))
    check_names(cfg)
    check_choices(cfg)
    check_values(cfg, training=not args.eval_only and not args.no_train)
    note = clamp_workers(cfg)  # the run's log then shows the clamped value in its config
    if note:
        print(note)
    cfg.freeze()
    return cfg


def check_checkpoint_file(fpath, cfg, hint=""):
    """Load a checkpoint safely (weights_only) and check it was saved by this trainer and backbone."""
    try:
        return load_training_checkpoint(fpath, {"trainer": cfg.TRAINER.NAME, "backbone": backbone_name(cfg)},
                                        hint, verbose=False)  # the trainer's load says what it skipped
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None


def check_model_dir(args, cfg):
    """Fail before any work when an evaluation points at checkpoints that are not there or not usable."""
    if not args.eval_only:
        if args.model_dir or args.load_epoch is not None:
            raise ConfigError("--model-dir and --load-epoch only apply with --eval-only. Add --eval-only to "
                              "evaluate a trained run; drop them to train.")
        return
    recorded, _ = runs.read_run_record(cfg.OUTPUT_DIR)
    if recorded and recorded.get("eval_only") is False:
        raise ConfigError(f'--output-dir "{cfg.OUTPUT_DIR}" holds a training run\'s record (run.json, result.json, '
                          "checkpoints); an evaluation written there would replace it. Write the evaluation into "
                          "a folder of its own, e.g. --output-dir " + cfg.OUTPUT_DIR.rstrip("/") + "_eval.")
    if not args.model_dir:
        if args.load_epoch is not None:
            raise ConfigError("--load-epoch was given without --model-dir: name the training run's output folder.")
        if TRAINER_REGISTRY.get(cfg.TRAINER.NAME).LEARNS:
            raise ConfigError(f"--eval-only without --model-dir would evaluate an untrained {cfg.TRAINER.NAME} (its "
                              "initial weights) and record it as a result. Pass --model-dir with the training run's "
                              "output folder (and --load-epoch N), or leave out --eval-only to train.")
        return
    try:
        files = model_files(args.model_dir, args.load_epoch)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    for fpath in files.values():
        check_checkpoint_file(fpath, cfg)


def check_resume_dir(cfg):
    """Fail before any work when training would resume from a checkpoint it cannot use."""
    directory = cfg.RESUME or cfg.OUTPUT_DIR
    for name, fpath in resume_pointers(directory).items():
        checkpoint = check_checkpoint_file(fpath, cfg, hint=resume_hint(directory, name))
        problem = resume_config_problem(checkpoint, cfg, fpath)
        if problem:
            raise ConfigError(problem)


def unfinished_log(output_dir):
    """True when output_dir/log.txt is from a run that is not finished (killed before its first
    checkpoint, say). The new run continues that log.txt rather than starting a timestamped one,
    which parse_test_res.py would not read. "Finished" is the run registry's judgement."""
    return osp.isfile(osp.join(output_dir, "log.txt")) and not runs.is_finished(output_dir)


def record_start(args, cfg):
    """run.json: the run's identity (config file, overrides, merged config) in its output folder."""
    base = build_config(args.trainer, args.dataset_config_file, args.config_file, [], cli_overrides(args))
    identity = runs.describe_run(cfg, base, args.config_file, args.eval_only, args.model_dir, args.load_epoch)
    runs.start_run(cfg.OUTPUT_DIR, identity)


def record_result(cfg, wall_time_s):
    """result.json beside the log once the run has printed its final result; `wall_time_s` counts
    every segment of a resumed run (each up to the checkpoint the next one continued from)."""
    log = getattr(sys.stdout, "file", None)
    log_path = getattr(log, "name", "") if log is not None else ""
    if log is not None:
        log.flush()
    runs.write_result(cfg.OUTPUT_DIR, cfg, log_path, wall_time_s, engine=ENGINE)


def fail(message, code=None):
    """Exit non-zero (`code`, else 1) with a one-line message on stderr, also recorded in log.txt once the
    log is open."""
    log = getattr(sys.stdout, "file", None)
    if log is not None:
        try:
            log.write(f"{message}\n")
            log.flush()
        except OSError:  # the log's own disk is full: stderr still gets the line
            pass
    if code is None:
        sys.exit(message)
    print(message, file=sys.stderr)
    sys.exit(code)


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
    started = time.time()
    try:
        cfg = setup_cfg(args)
        check_model_dir(args, cfg)
        if not args.eval_only and not args.no_train:
            check_resume_dir(cfg)
        lock = RunLock(cfg.OUTPUT_DIR).acquire()  # one writer per run folder
    except (ConfigError, KeyError, RunLockedError) as exc:
        sys.exit(f"error: {exc.args[0] if exc.args else exc}")
    except OSError as exc:
        sys.exit(f"error: {write_error_message(exc, 'the run folder') or exc}")
    try:
        remove_temp_files(cfg.OUTPUT_DIR)
        run(args, cfg, started)
    except (FloatingPointError, UnreadableImageError, CheckpointError, DatasetError, BackboneError, DeepPromptError,
            ConfigError, MissingDependency) as exc:
        fail(f"error: {exc}")
    except OSError as exc:
        message = write_error_message(exc)
        if message is None:
            raise
        fail(f"error: {message}")
    except KeyboardInterrupt:
        fail("interrupted: rerun the same command (the checkpoints of finished epochs are kept)", code=130)
    finally:
        lock.release()


def run(args, cfg, started):
    """Log, build the trainer, then evaluate or train (main has checked the arguments and holds the lock)."""
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    resuming = not args.eval_only and not args.no_train and bool(resume_pointers(cfg.RESUME or cfg.OUTPUT_DIR))
    restarting = not resuming and unfinished_log(cfg.OUTPUT_DIR)
    setup_logger(cfg.OUTPUT_DIR, append=resuming or restarting)
    if resuming:
        print(f"\n=== Resuming the training run in {cfg.OUTPUT_DIR} ({time.strftime('%Y-%m-%d %H:%M:%S')}) ===")
    elif restarting:
        print(f"\n=== Restarting the unfinished run in {cfg.OUTPUT_DIR} ({time.strftime('%Y-%m-%d %H:%M:%S')}) ===")
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print_args(args, cfg)
    print(f"Engine: {ENGINE}")
    print("Collecting env info ...")
    print(f"** System info **\n{collect_env_info()}\n")
    if cfg.OUTPUT_DIR:
        record_start(args, cfg)

    trainer = build_trainer(cfg)
    trainer.segment_started = started  # a resumed run's wall time adds the earlier segments' (checkpoints)
    if args.eval_only:
        if not args.model_dir and trainer.get_model_names():
            print("Warning: --eval-only without --model-dir evaluates the untrained model")
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
    elif not args.no_train:
        try:
            trainer.train()
        except KeyboardInterrupt:
            epoch = getattr(trainer, "epoch", 0) + 1
            fail(f"interrupted at epoch {epoch} of {trainer.max_epoch} ({time.strftime('%Y-%m-%d %H:%M:%S')}); "
                 "the checkpoints written so far are kept: rerun the same command to resume", code=130)
    else:
        return
    if cfg.OUTPUT_DIR:
        record_result(cfg, trainer.wall_time_s())


if __name__ == "__main__":
    main(parse_args())
