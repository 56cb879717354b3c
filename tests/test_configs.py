"""Every shipped trainer config merges cleanly: no unknown key, no wrong type, a known backbone."""
import glob
import os

import pytest

from conftest import REPO

CONFIGS = sorted(glob.glob(os.path.join(REPO, "configs", "trainers", "*", "*.yaml")))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, os.path.join(REPO, "configs", "trainers")))
def test_trainer_config_merges_over_its_trainer_defaults(path):
    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers and their config nodes)
    from clipadapt.config import build_config

    trainer = os.path.basename(os.path.dirname(path))
    cfg = build_config(trainer, os.path.join(REPO, "configs", "datasets", "shapes.yaml"), path)
    assert cfg.OPTIM.MAX_EPOCH > 0 and cfg.MODEL.BACKBONE.NAME
    assert cfg.INPUT.SIZE[0] > 0 and cfg.DATALOADER.TRAIN_X.BATCH_SIZE > 0


def test_every_trainer_has_configs():
    assert {os.path.basename(os.path.dirname(p)) for p in CONFIGS} >= {
        "ZeroshotCLIP", "CoOp", "CLIPAdapter", "SHIP", "PVA"}
