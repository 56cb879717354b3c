"""Coming from CoOp: Dassl/CoOp checkpoints evaluate, malicious ones do not; the Dassl shim rebinds
names imported by name; the few-shot scripts pick CoOp's published config per shot count."""
import os
import os.path as osp
import subprocess
import sys
import textwrap

import pytest
import torch

from helpers import COOP_CFG, REPO, TINY_OPTS, coop_checkpoint, make_cfg, result_accuracy, run_train
from helpers import train_args as common



def write_dassl_run(run_dir, checkpoint):
    """CoOp's folder layout: <run>/prompt_learner/model.pth.tar-N and the `checkpoint` pointer file."""
    folder = osp.join(run_dir, "prompt_learner")
    os.makedirs(folder, exist_ok=True)
    name = f"model.pth.tar-{checkpoint['epoch']}"
    torch.save(checkpoint, osp.join(folder, name))
    with open(osp.join(folder, "checkpoint"), "w") as f:
        f.write(name + "\n")
    return osp.join(folder, name)


def test_coop_checkpoint_evaluates_to_the_accuracy_of_ours(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    opts = ["OPTIM.MAX_EPOCH", "50", "DATASET.NUM_SHOTS", "1"]
    cfg = make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path / "ours", opts)
    trainer = build_trainer(cfg)
    untrained_accuracy = trainer.test()
    with torch.no_grad():  # trained-looking context: the init moved far enough to change predictions
        ctx = trainer.prompt_learner.ctx
        ctx.add_(torch.randn(ctx.shape, generator=torch.Generator().manual_seed(0)))
    trainer.save_model(49, str(tmp_path / "ours"))
    ctx = trainer.prompt_learner.ctx.detach().clone()
    n_cls = len(trainer.classnames)
    fpath = write_dassl_run(tmp_path / "coop", coop_checkpoint(ctx, n_cls, epoch=50))
    with pytest.raises(Exception, match="CosineAnnealingLR"):  # what plain weights_only loading says
        torch.load(fpath, weights_only=True)

    accuracies = {}
    for run in ("ours", "coop"):
        out = tmp_path / f"eval_{run}"
        proc = run_train(common("CoOp", COOP_CFG, shapes_root, out) + [
            "--eval-only", "--model-dir", str(tmp_path / run), "--load-epoch", "50"] + TINY_OPTS + opts)
        log = (out / "log.txt").read_text()
        assert "model.pth.tar-50" in log and "(epoch = 50" in log
        accuracies[run] = result_accuracy(log)
    assert "skipped without being run" in proc.stdout and "CosineAnnealingLR" in proc.stdout
    assert accuracies["coop"] == accuracies["ours"]
    assert round(untrained_accuracy, 1) != accuracies["ours"]  # the loaded weights decide the result


class Payload:
    """Runs code when unpickled: creates the file `marker`."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("where", ["scheduler", "state_dict"])
def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path, where):
    from clipadapt.checkpoints import load_checkpoint
    marker = str(tmp_path / "payload-ran")
    checkpoint = coop_checkpoint(torch.zeros(4, 8), n_cls=3, epoch=5)  # real torch.optim objects inside too
    if where == "scheduler":
        checkpoint["scheduler"]["successor"] = Payload(marker)
    else:
        checkpoint["state_dict"]["ctx"] = Payload(marker)
    fpath = str(tmp_path / "model.pth.tar-5")
    torch.save(checkpoint, fpath)
    with pytest.raises(RuntimeError, match="not loaded"):
        load_checkpoint(fpath)
    assert not osp.exists(marker)


class RunsOnConstruction:
    """A class that would run code if the loader constructed it for real; pickled as torch.optim.sgd.Planted."""
    __module__ = "torch.optim.sgd"
    __qualname__ = "Planted"

    def __init__(self, marker):
        open(marker, "w").close()

    def __reduce__(self):
        return (RunsOnConstruction, (self.marker,))


def test_class_under_a_torch_optim_name_is_never_constructed(tmp_path, monkeypatch):
    """Names under torch.optim are read as inert placeholders, whatever the name resolves to."""
    from clipadapt.checkpoints import load_checkpoint
    marker = str(tmp_path / "payload-ran")
    monkeypatch.setattr(sys.modules["torch.optim.sgd"], "Planted", RunsOnConstruction, raising=False)
    planted = object.__new__(RunsOnConstruction)
    planted.marker = marker
    checkpoint = coop_checkpoint(torch.zeros(4, 8), n_cls=3, epoch=5)
    checkpoint["scheduler"]["extra"] = planted
    fpath = str(tmp_path / "model.pth.tar-5")
    torch.save(checkpoint, fpath)
    loaded = load_checkpoint(fpath)  # still resolvable as torch.optim.sgd.Planted: not used
    assert not osp.exists(marker)
    assert loaded["scheduler"] is None and loaded["epoch"] == 5


def test_torch_optim_object_inside_the_weights_is_refused(tmp_path):
    from clipadapt.checkpoints import load_checkpoint
    optim = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    fpath = str(tmp_path / "model.pth.tar-1")
    torch.save({"state_dict": {"ctx": optim}, "epoch": 1}, fpath)
    with pytest.raises(RuntimeError, match="outside its optimizer and scheduler entries"):
        load_checkpoint(fpath)


def test_dassl_checkpoint_keeps_weights_and_epoch_and_drops_optim_objects(tmp_path):
    from clipadapt.checkpoints import load_checkpoint
    ctx = torch.randn(4, 8)
    fpath = write_dassl_run(tmp_path, coop_checkpoint(ctx, n_cls=3, epoch=7))
    loaded = load_checkpoint(fpath)
    assert torch.equal(loaded["state_dict"]["ctx"], ctx)
    assert set(loaded["state_dict"]) == {"ctx", "token_prefix", "token_suffix"}
    assert loaded["epoch"] == 7 and loaded["val_result"] is None
    assert loaded["scheduler"] is None  # held the pickled CosineAnnealingLR + SGD: skipped
    assert loaded["optimizer"]["state"][0]["momentum_buffer"].shape == ctx.shape  # plain data: kept
    assert open(osp.join(tmp_path, "prompt_learner", "checkpoint")).read() == "model.pth.tar-7\n"


# ----- the Dassl shim ------------------------------------------------------------------------------

STAND_IN = {
    # A minimal `dassl` with the import structure that matters: the engine and a DA trainer bind
    # build_lr_scheduler / load_checkpoint by name at import, as Dassl's modules do.
    "dassl/__init__.py": "",
    "dassl/config/__init__.py": "def get_cfg_default():\n    raise NotImplementedError\n",
    "dassl/data/__init__.py": "class DataManager:\n    pass\n",
    "dassl/data/transforms/__init__.py": "def build_transform(*a, **k):\n    pass\n",
    "dassl/data/datasets/__init__.py": textwrap.dedent("""\
        from clipadapt.engine.builtin.registry import Registry
        from clipadapt.engine.builtin.dataset_base import DatasetBase, Datum
        DATASET_REGISTRY = Registry("dataset")
        """),
    "dassl/evaluation/__init__.py": textwrap.dedent("""\
        from clipadapt.engine.builtin.registry import Registry
        EVALUATOR_REGISTRY = Registry("evaluator")
        """),
    "dassl/optim/__init__.py": "from .optimizer import build_optimizer\nfrom .lr_scheduler import build_lr_scheduler\n",
    "dassl/optim/optimizer.py": "def build_optimizer(*a, **k):\n    return 'dassl optimizer'\n",
    "dassl/optim/lr_scheduler.py": "def build_lr_scheduler(*a, **k):\n    raise TypeError('old scheduler')\n",
    "dassl/utils/__init__.py": "from .torchtools import *\n",
    "dassl/utils/torchtools.py": textwrap.dedent("""\
        __all__ = ["load_checkpoint", "resume_from_checkpoint"]
        def load_checkpoint(fpath):
            raise RuntimeError('old loader')
        def resume_from_checkpoint(fdir):
            return load_checkpoint(fdir)
        """),
    "dassl/engine/__init__.py": textwrap.dedent("""\
        from clipadapt.engine.builtin.registry import Registry
        TRAINER_REGISTRY = Registry("trainer")
        from .trainer import SimpleTrainer, TrainerX
        from .da import *
        """),
    "dassl/engine/trainer.py": textwrap.dedent("""\
        from dassl.optim import build_optimizer, build_lr_scheduler
        from dassl.utils import load_checkpoint, resume_from_checkpoint
        class SimpleTrainer:
            pass
        class TrainerX(SimpleTrainer):
            pass
        """),
    "dassl/engine/da/__init__.py": "from .dann import DANN\n",
    "dassl/engine/da/dann.py": textwrap.dedent("""\
        from dassl.optim import build_optimizer, build_lr_scheduler
        class DANN:
            pass
        """),
}


def test_dassl_shim_rebinds_names_bound_at_import(tmp_path):
    for rel, text in STAND_IN.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    check = textwrap.dedent("""\
        import clipadapt.engine as E
        import dassl.engine.trainer as T, dassl.engine.da.dann as D, dassl.optim, dassl.utils
        import dassl.utils.torchtools as TT
        from clipadapt.engine.builtin.optim import build_lr_scheduler
        from clipadapt.checkpoints import load_checkpoint
        assert E.ENGINE == "dassl"
        for mod in (T, D, dassl.optim, dassl.optim.lr_scheduler):
            assert mod.build_lr_scheduler is build_lr_scheduler, mod.__name__
        for mod in (T, dassl.utils, TT):
            assert mod.load_checkpoint is load_checkpoint, mod.__name__
        assert T.build_optimizer() == "dassl optimizer"  # names the shim does not replace stay Dassl's
        try:
            TT.resume_from_checkpoint("/nonexistent")  # Dassl's own function now calls our loader
        except FileNotFoundError as exc:
            assert "Checkpoint not found" in str(exc)
        print("ok")
        """)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", CLIPADAPT_ENGINE="dassl")
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ----- CoOp's published few-shot recipe ------------------------------------------------------------

# CoOp's configs/trainers/CoOp/*.yaml and COOP.md: the same recipe at every epoch count.
COOP_RECIPE = {"DATALOADER.TRAIN_X.BATCH_SIZE": 32, "DATALOADER.TEST.BATCH_SIZE": 100, "OPTIM.NAME": "sgd",
               "OPTIM.LR": 0.002, "OPTIM.LR_SCHEDULER": "cosine", "OPTIM.WARMUP_EPOCH": 1,
               "OPTIM.WARMUP_TYPE": "constant", "OPTIM.WARMUP_CONS_LR": 1e-5, "INPUT.INTERPOLATION": "bicubic",
               "INPUT.TRANSFORMS": ["random_resized_crop", "random_flip", "normalize"],
               "TRAINER.COOP.N_CTX": 16, "TRAINER.COOP.CSC": False, "TRAINER.COOP.CLASS_TOKEN_POSITION": "end"}
COOP_EPOCHS = {1: 50, 2: 100, 4: 100, 8: 200, 16: 200}  # COOP.md; ImageNet: 50 at every shot count


def launched_runs(tmp_path, dataset, env=None):
    """What scripts/coop/few_shot.sh launches: (shots, seed) -> (config file, output dir), read from
    the arguments train.py would get (a `python` on PATH that records them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / f"calls-{dataset}.txt"
    # train.py calls are recorded; the scripts' other python calls (the run registry) really run
    (bin_dir / "python").write_text(f'#!/usr/bin/env bash\nif [ "$1" != train.py ]; then exec "{sys.executable}" "$@"; fi\n'
                                    f'echo "$@" >> "{record}"\n')
    (bin_dir / "python").chmod(0o755)
    run_env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", OUTPUT=str(tmp_path / "out"),
                   **(env or {}))
    proc = subprocess.run(["bash", "scripts/coop/few_shot.sh", dataset], cwd=REPO, capture_output=True, text=True,
                          env=run_env)
    assert proc.returncode == 0, proc.stderr
    runs = {}
    for line in record.read_text().splitlines():
        args = line.split()
        opts = dict(zip(args, args[1:]))  # each flag or key with the word after it
        runs[(int(opts["DATASET.NUM_SHOTS"]), int(opts["--seed"]))] = (opts["--config-file"], opts["--output-dir"])
    return runs


def config_values(config_file, keys):
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from clipadapt.config import build_config
    cfg = build_config("CoOp", osp.join(REPO, "configs/datasets/caltech101.yaml"), osp.join(REPO, config_file), [], {})
    values = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = node[part]
        values[key] = list(node) if isinstance(node, (list, tuple)) else node
    return values


@pytest.mark.parametrize("dataset,backbone,env", [("caltech101", "RN50", {}), ("imagenet", "RN50", {}),
                                                  ("eurosat", "ViT-B/16", {"CFG": "vit_b16"})])
def test_few_shot_script_trains_coops_published_recipe_per_shot_count(tmp_path, dataset, backbone, env):
    runs = launched_runs(tmp_path, dataset, env)
    assert sorted(runs) == [(s, seed) for s in (1, 2, 4, 8, 16) for seed in (1, 2, 3)]
    family = env.get("CFG", "rn50")
    for (shots, seed), (config_file, out_dir) in runs.items():
        values = config_values(config_file, list(COOP_RECIPE) + ["OPTIM.MAX_EPOCH", "MODEL.BACKBONE.NAME",
                                                                 "TRAINER.COOP.CTX_INIT"])
        epochs = 50 if dataset == "imagenet" else COOP_EPOCHS[shots]
        assert values.pop("OPTIM.MAX_EPOCH") == epochs, (config_file, shots)
        assert values.pop("MODEL.BACKBONE.NAME") == backbone
        assert values.pop("TRAINER.COOP.CTX_INIT") == ""  # the paper's few-shot rows: random init, M = 16
        assert values == COOP_RECIPE
        # one folder per backbone config, as the few-shot table groups them
        assert out_dir.endswith(f"fewshot/{dataset}/CoOp/{family}_{shots}shots/seed{seed}")


def test_fixed_recipe_runs_the_given_config_everywhere(tmp_path):
    runs = launched_runs(tmp_path, "caltech101", {"CFG": "vit_b16_ctxv1", "RECIPE": "fixed"})
    assert {cfg for cfg, _ in runs.values()} == {"configs/trainers/CoOp/vit_b16_ctxv1.yaml"}
    runs = launched_runs(tmp_path, "dtd", {"CFG": "vit_b16_ctxv1"})
    assert runs[(1, 1)][0] == "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"
    assert runs[(2, 1)][0] == "configs/trainers/CoOp/vit_b16_ep100_ctxv1.yaml"
    assert runs[(16, 1)][0] == "configs/trainers/CoOp/vit_b16_ctxv1.yaml"
