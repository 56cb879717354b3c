"""The built-in engine: schedules, registries, config errors, evaluator, checkpoints."""
import io
import math
import os
import pickle

import numpy as np
import pytest
import torch

from clipadapt.config import ConfigError, build_config
from clipadapt.engine import Registry, build_lr_scheduler, build_optimizer, get_cfg_default, load_checkpoint
from clipadapt.atomic import atomic_torch_save
from clipadapt.engine.builtin.evaluator import Classification, macro_f1_score
from clipadapt.evaluation import GZSLClassification
from clipadapt.metrics import harmonic_mean


def coop_optim_cfg(max_epoch=50):
    cfg = get_cfg_default()
    o = cfg.OPTIM
    o.NAME, o.LR, o.MAX_EPOCH, o.LR_SCHEDULER = "sgd", 0.002, max_epoch, "cosine"
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_CONS_LR = 1, "constant", 1e-5
    return o


def epoch_lrs(optim_cfg, n):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], optim_cfg)
    sched = build_lr_scheduler(opt, optim_cfg)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, opt, sched


def test_scheduler_reproduces_dassl_sequence_for_coop_config():
    lrs, _, _ = epoch_lrs(coop_optim_cfg(), 50)
    # Dassl: epoch 1 at the warmup LR, epoch e >= 2 at the cosine's value for t = e - 2, T = 50.
    expected = [1e-5] + [0.002 * (1 + math.cos(math.pi * t / 50)) / 2 for t in range(49)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-9, atol=1e-12)
    assert lrs[1] == pytest.approx(2.0e-3)
    assert lrs[2] == pytest.approx(1.998027e-3, rel=1e-6)   # CoOp#26 log: [3/50]
    assert lrs[-1] == pytest.approx(7.885299e-06, rel=1e-6)  # CoOp#26 log: [50/50]


def test_linear_warmup_and_single_step():
    o = coop_optim_cfg(10)
    o.WARMUP_EPOCH, o.WARMUP_TYPE, o.WARMUP_MIN_LR = 2, "linear", 1e-4
    lrs, _, _ = epoch_lrs(o, 4)
    assert lrs[0] == pytest.approx(1e-4) and lrs[1] == pytest.approx(0.002 * 1 / 2)
    assert lrs[2] == pytest.approx(0.002)
    o = get_cfg_default().OPTIM
    o.NAME, o.LR, o.LR_SCHEDULER, o.STEPSIZE, o.MAX_EPOCH = "adam", 1.0, "single_step", (3,), 10
    lrs, _, _ = epoch_lrs(o, 7)
    np.testing.assert_allclose(lrs, [1, 1, 1, 0.1, 0.1, 0.1, 0.01])


def test_scheduler_state_survives_weights_only_roundtrip():
    _, opt, sched = epoch_lrs(coop_optim_cfg(), 5)
    buf = io.BytesIO()
    torch.save({"scheduler": sched.state_dict(), "optimizer": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # as resume does
    _, opt2, sched2 = epoch_lrs(coop_optim_cfg(), 0)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    for _ in range(3):
        opt.step(), sched.step(), opt2.step(), sched2.step()
    assert sched.get_last_lr() == pytest.approx(sched2.get_last_lr())


def test_registry_suggests_closest_name():
    reg = Registry("trainer")

    @reg.register()
    class CoOp:
        pass

    with pytest.raises(KeyError, match='Did you mean "CoOp"'):
        reg.get("COOP")
    with pytest.raises(KeyError, match="Registered: CoOp"):
        reg.get("Zzz")


def test_config_errors_name_the_key_and_suggest():
    import trainers  # noqa: F401
    with pytest.raises(ConfigError, match='Unknown config key "TRAINER.COOP.NCTX".*Did you mean "TRAINER.COOP.N_CTX"'):
        build_config("CoOp", opts=["TRAINER.COOP.NCTX", "4"])
    with pytest.raises(ConfigError, match="Type mismatch"):
        build_config("CoOp", opts=["TRAINER.COOP.N_CTX", "four"])
    with pytest.raises(KeyError, match='Did you mean "CoOp"'):
        build_config("Coop")


def test_config_base_inheritance_and_precedence(tmp_path):
    import trainers  # noqa: F401
    cfg = build_config("CoOp", config_file="configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml",
                       opts=["OPTIM.LR", "0.01"], overrides={"SEED": 3})
    assert cfg.OPTIM.MAX_EPOCH == 50 and cfg.TRAINER.COOP.CTX_INIT == "a photo of a"
    assert cfg.INPUT.SIZE == (224, 224) and cfg.OPTIM.LR == 0.01 and cfg.SEED == 3
    assert "CLIP_ADAPTER" not in cfg.TRAINER  # only the requested trainer's node


def test_macro_f1_matches_hand_computation():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    assert macro_f1_score(y_true, y_pred) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_classification_prints_dassl_block(capsys):
    cfg = get_cfg_default()
    ev = Classification(cfg)
    ev.process(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 1, 1]))
    res = ev.evaluate()
    out = capsys.readouterr().out
    assert "=> result\n* total: 3\n* correct: 2\n* accuracy: 66.7%\n* error: 33.3%\n* macro_f1:" in out
    assert res["accuracy"] == pytest.approx(200 / 3)


def test_gzsl_evaluator_per_class_seen_unseen(capsys):
    ev = GZSLClassification(get_cfg_default(), num_seen=2)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    preds = torch.tensor([0, 1, 1, 2, 0, 0])
    ev.process(preds, labels)
    res = ev.evaluate()
    seen = (50 + 100) / 2  # class 0: 1/2, class 1: 1/1
    unseen = (50 + 0) / 2  # class 2: 1/2, class 3: 0/1
    assert res["acc_seen"] == pytest.approx(seen) and res["acc_unseen"] == pytest.approx(unseen)
    assert res["hm"] == pytest.approx(harmonic_mean(seen, unseen))
    assert "* acc_seen: 75.0%\n* acc_unseen: 25.0%\n* hm: 37.5%" in capsys.readouterr().out


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_load_refuses_pickled_code(tmp_path):
    path = tmp_path / "model.pth.tar-1"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "payload": _Evil()}, f)
    with pytest.raises(RuntimeError, match="weights_only"):
        load_checkpoint(str(path))


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_torch_save({"a": torch.ones(2)}, str(path))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        atomic_torch_save({"a": torch.zeros(2)}, str(path))
    assert torch.load(path, weights_only=True)["a"].sum() == 2  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt"]  # no temporary left behind


@pytest.mark.parametrize("trainer", ["ZeroshotCLIP", "CoOp", "CoCoOp", "KgCoOp", "MaPLe", "IVLP", "PromptSRC",
                                     "CLIPAdapter", "LinearProbeCLIP", "PVA", "SHIP"])
def test_every_trainer_refuses_an_unknown_precision_by_its_key(tmp_path, trainer):
    """ClipTrainer.check_cfg checks each trainer node's PREC, before building anything."""
    from helpers import make_cfg
    from clipadapt.engine import TRAINER_REGISTRY
    node = make_cfg(trainer, f"configs/trainers/{trainer}/shapes.yaml", str(tmp_path), tmp_path).TRAINER
    cls = TRAINER_REGISTRY.get(trainer)  # registered by make_cfg's import of trainers
    assert "PREC" in node[cls.CONFIG_NODE]
    cfg = make_cfg(trainer, f"configs/trainers/{trainer}/shapes.yaml", str(tmp_path), tmp_path,
                   [f"TRAINER.{cls.CONFIG_NODE}.PREC", "fp8"])
    message = rf"^TRAINER\.{cls.CONFIG_NODE}\.PREC is 'fp8': it must be one of fp32, fp16, bf16, amp\.$"
    with pytest.raises(ValueError, match=message):
        cls.check_cfg(cfg)  # a classmethod: train.py checks before the run folder, without building the trainer
    with pytest.raises(ValueError, match=message):
        cls(cfg)


def test_one_checkpoint_lookup_for_train_py_and_the_trainers(tmp_path):
    # train.py's up-front check and CheckpointMixin.load_model both call model_files: the same files, the same message.
    from clipadapt.checkpoints import CheckpointError, checkpoint_file_name, model_files
    run = tmp_path / "run"
    for name in ("prompt_learner", "meta_net"):
        (run / name).mkdir(parents=True)
    for epoch in (1, 2):
        (run / "prompt_learner" / checkpoint_file_name(epoch)).write_bytes(b"")
    (run / "meta_net" / checkpoint_file_name(1)).write_bytes(b"")
    assert checkpoint_file_name(2) == "model.pth.tar-2" and checkpoint_file_name() == "model-best.pth.tar"
    assert model_files(str(run), 1) == {n: str(run / n / "model.pth.tar-1") for n in ("meta_net", "prompt_learner")}
    assert model_files(str(run), 2) == {"prompt_learner": str(run / "prompt_learner" / "model.pth.tar-2")}
    with pytest.raises(CheckpointError, match=r"has no meta_net/model.pth.tar-2; it has \['model.pth.tar-1', "
                                              r"'model.pth.tar-2'\]. Pass --load-epoch"):
        model_files(str(run), 2, names=["meta_net", "prompt_learner"])
    with pytest.raises(CheckpointError, match="has no model-best.pth.tar; it has"):
        model_files(str(run))
    with pytest.raises(CheckpointError, match=f'is a model folder .*its parent "{run}"'):
        model_files(str(run / "prompt_learner"), 1)
    with pytest.raises(CheckpointError, match="does not exist. Train first"):
        model_files(str(tmp_path / "nowhere"))
