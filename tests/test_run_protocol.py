"""scripts/run_protocol.sh end to end on the small Shapes world and the tiny model; GZSL runs of CoOp."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from helpers import REPO, TINY_OPTS, make_cfg

SCRIPT = os.path.join(REPO, "scripts", "run_protocol.sh")


def run_protocol(args, data, output, **env):
    settings = {"DATA": str(data), "OUTPUT": str(output), "DATASETS": "shapes", "SEEDS": "1", **env}
    full_env = dict(os.environ, **settings)
    return subprocess.run(["bash", SCRIPT, *args], cwd=REPO, capture_output=True, text=True, env=full_env)


def table_row(stdout, first_cell):
    """The cells of the markdown table row that starts with `first_cell`."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no table row {first_cell!r} in:\n{stdout[-3000:]}")


def test_base2new_runs_every_seed_prints_the_table_and_skips_finished_runs(shapes_root, tmp_path):
    from clipadapt.runs import protocol_run
    out = tmp_path / "output"
    # the folders the run registry gives these runs (TINY_OPTS change the config: a tagged folder)
    folder = {kind: protocol_run(kind, "ZeroshotCLIP", "vit_b16", "shapes", 1, 16, TINY_OPTS).output_dir(str(out))
              for kind in ("base2new_train", "base2new_test")}
    assert "/shapes/shots_16/ZeroshotCLIP/vit_b16_" in folder["base2new_test"]
    killed = Path(folder["base2new_test"]) / "log.txt"  # a run killed before its result: it must run again
    killed.parent.mkdir(parents=True)
    killed.write_text("Loading trainer: ZeroshotCLIP\nLoading dataset: Shapes\n")
    first = run_protocol(["base2new", "ZeroshotCLIP", *TINY_OPTS], shapes_root, out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # the config is the default of scripts/zsclip/base2new_train.sh
    assert "config vit_b16" in first.stdout
    assert (Path(folder["base2new_train"]) / "result.json").is_file()
    assert "=== Restarting the unfinished run" in killed.read_text()  # continued, so the table reads it
    assert not list(killed.parent.glob("log.txt-*"))
    # an 80-column table: the method named by a key, spelled out below it
    assert "| A Base" in first.stdout and "A = ZeroshotCLIP" in first.stdout
    assert max(len(line) for line in first.stdout.splitlines() if line.startswith("|")) <= 80
    row = table_row(first.stdout, "shapes")
    base, new, hm = (float(x) for x in row[1:4])
    assert hm == pytest.approx(2 * base * new / (base + new), abs=0.01)
    assert table_row(first.stdout, "Average")[1:4] == row[1:4]

    again = run_protocol(["base2new", "ZeroshotCLIP", *TINY_OPTS], shapes_root, out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("(so skip this job)") == 2 and "Loading trainer" not in again.stdout
    assert table_row(again.stdout, "shapes") == row


def test_unknown_protocol_or_config_says_what_exists(tmp_path):
    proc = run_protocol(["cross", "CoOp"], tmp_path, tmp_path)
    assert proc.returncode == 2 and "unknown protocol 'cross'; choose base2new, fewshot, xd, dg, gzsl" in proc.stderr
    # SHIP declares no few-shot default (its paper has no few-shot protocol): one line naming the file
    proc = run_protocol(["fewshot", "SHIP"], tmp_path, tmp_path)
    assert proc.returncode == 2 and "SHIP has no default config for fewshot in " in proc.stderr
    assert "protocol_defaults.json (it has: base2new, xd, dg, gzsl); pass CFG" in proc.stderr
    proc = run_protocol(["gzsl", "CoOp", "vit_b99"], tmp_path, tmp_path)
    assert proc.returncode == 2 and "vit_b99.yaml not found" in proc.stderr and "vit_b16_ctxv1" in proc.stderr


def test_coop_gzsl_trains_on_seen_classes_and_reports_s_u_h_past_a_failed_run(shapes_root, tmp_path):
    out = tmp_path / "output"
    opts = [*TINY_OPTS, "OPTIM.MAX_EPOCH", "2", "DATALOADER.TRAIN_X.BATCH_SIZE", "16"]
    proc = run_protocol(["gzsl", "CoOp", *opts], shapes_root, out, SHOTS="2", DATASETS="cub shapes")
    # there is no CUB in this root: that run fails, is reported, and the shapes run goes on
    assert proc.returncode == 1 and "1 run(s) failed: cub seed 1" in proc.stderr, proc.stderr[-3000:]
    [run_dir] = (out / "gzsl" / "shapes" / "shots_2" / "CoOp").glob("vit_b16_ctxv1_*/seed1")  # tagged by opts
    log = (run_dir / "log.txt").read_text()
    assert "Finish training" in log and "epoch [2/2]" in log
    assert re.search(r"# train_x\s+48\b", log)  # 24 seen classes x 2 shots: no unseen image is trained on
    assert re.search(r"# classes\s+48\b", log) and "* total: 192" in log  # tested on all 48 classes
    values = {k: float(re.search(rf"\* {k}: ([\d.]+)%", log).group(1)) for k in ("acc_seen", "acc_unseen", "hm")}
    s, u = values["acc_seen"], values["acc_unseen"]
    assert values["hm"] == pytest.approx(2 * s * u / (s + u) if s + u else 0.0, abs=0.06)
    row = table_row(proc.stdout, "shapes")
    assert [float(x) for x in row[1:3]] == [pytest.approx(s, abs=0.051), pytest.approx(u, abs=0.051)]


def test_coop_gzsl_trainer_sees_only_seen_labels_and_prompts_them(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    cfg = make_cfg("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", shapes_root, tmp_path,
                   ["DATASET.SUBSAMPLE_CLASSES", "gzsl", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
                    "FEATURES.CACHE_DIR", str(tmp_path / "feats")])
    trainer = build_trainer(cfg)
    dataset = trainer.dm.dataset
    assert {d.label for d in dataset.train_x} == set(range(24))
    assert trainer.train_classnames == dataset.base_classnames and len(trainer.classnames) == 48
    assert trainer.evaluator.num_seen == 24
    trainer.before_epoch()
    assert trainer.prompt_learner.classnames == dataset.base_classnames
    trainer.prepare_eval()
    assert trainer.prompt_learner.classnames == dataset.all_classnames


def test_protocol_defaults_are_declared_once_and_the_wrappers_use_them():
    # Each wrapper script passes no config of its own: the default is the trainer's protocol_defaults.json,
    # so scripts/coop/base2new_train.sh and scripts/coop/base2new_test.sh cannot disagree.
    from clipadapt import protocols, runs
    wrappers = [p for p in Path(REPO, "scripts").glob("*/*.sh") if "/../common/" in p.read_text()]
    assert len(wrappers) > 30
    for script in wrappers:
        assert not re.search(r'common/\S+" +\w+ +"\$\{CFG:-[^}]', script.read_text()), script
    assert protocols.default_config("CoOp", "base2new") == "vit_b16_ctxv1"
    assert protocols.default_config("CoOp", "xd") == protocols.default_config("CoOp", "dg") == "vit_b16_ep50_ctxv1"
    spec = runs.protocol_run("base2new_test", "CoOp", "", "eurosat", 1, 16, [])
    assert spec.config_name == "vit_b16_ctxv1" and spec.model_from.config_name == "vit_b16_ctxv1"
    with pytest.raises(protocols.ProtocolError, match="no default configs for trainer 'NoSuch'"):
        protocols.default_config("NoSuch", "base2new")


def test_every_script_answers_help_and_names_missing_arguments():
    """`--help` prints a script's usage and exits 0 (no "unbound variable", no "unknown option"); too few
    arguments print it and one error line, exit 2."""
    import glob
    scripts = sorted(glob.glob(os.path.join(REPO, "scripts", "*.sh"))
                     + glob.glob(os.path.join(REPO, "scripts", "*", "*.sh")))
    scripts = [s for s in scripts if os.path.basename(s) not in ("env.sh", "help.sh")]
    assert len(scripts) > 60
    for script in scripts:
        proc = subprocess.run(["bash", script, "--help"], cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0 and "bash scripts/" in proc.stdout + proc.stderr and not proc.stderr, \
            (script, proc.stdout[-500:], proc.stderr[-500:])
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "coop", "base2new_train.sh"), "eurosat"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "unbound" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "error: base2new_train.sh needs at least 2 argument(s), got 1"
