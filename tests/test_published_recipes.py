"""The released recipes where ours had drifted: SHIP's ImageNet crop and partial batches, and CoOp's
ZeroshotCLIP2 ensemble (the dataset's own template added on every dataset but ImageNet)."""
import math

import pytest
import torch

from helpers import make_cfg

SHIP_OPTS = ["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.TRAIN_X.BATCH_SIZE", "40",
             "TRAINER.SHIP.VAE_BATCH_SIZE", "40", "TRAINER.SHIP.ENC_HIDDEN", "64", "TRAINER.SHIP.GEN_HIDDEN", "64",
             "TRAINER.SHIP.LATENT", "16"]


def build(trainer, config_file, root, out, opts=()):
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg(trainer, config_file, root, out, opts)
    set_random_seed(1)
    return TRAINER_REGISTRY.get(trainer)(cfg)


def epoch_indices(loader):
    """Training images one pass over `loader` yields (cached-feature indices), batch by batch."""
    return [batch["index"].tolist() for batch in loader]


def test_ship_keeps_the_last_partial_batch_in_both_stages(shapes_root, tmp_path):
    ship = build("SHIP", "configs/trainers/SHIP/vit_b16.yaml", shapes_root, tmp_path / "ship", SHIP_OPTS)
    n = len(ship.dataset.train_x)
    assert n == 96  # 24 base classes x 4 shots: batches of 40, 40 and 16
    for loader in (ship.train_loader_x, ship.training_loader(ship.method_cfg.VAE_BATCH_SIZE)):
        batches = epoch_indices(loader)
        assert [len(b) for b in batches] == [40, 40, 16] and len(loader) == math.ceil(n / 40)
        assert sorted(i for b in batches for i in b) == list(range(n))  # every image, once per epoch
    coop = build("CoOp", "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml", shapes_root, tmp_path / "coop",
                 SHIP_OPTS[:6])
    assert [len(b) for b in epoch_indices(coop.train_loader_x)] == [40, 40]  # Dassl's rule, kept for CoOp


def test_ship_imagenet_config_crops_as_the_released_imagenet_script():
    from helpers import REPO
    import os.path as osp
    import datasets  # noqa: F401
    import trainers  # noqa: F401
    from clipadapt.config import build_config
    cfgs = {name: build_config("SHIP", osp.join(REPO, "configs/datasets/imagenet.yaml"),
                               osp.join(REPO, f"configs/trainers/SHIP/{name}.yaml"), [], {})
            for name in ("vit_b16", "vit_b16_imagenet")}
    # main_imagenet_coop_vae.py's ImageNet: RandomResizedCrop(scale=(0.08, 1)); main_coop_vae.py: (0.5, 1).
    assert tuple(cfgs["vit_b16_imagenet"].INPUT.RRCROP_SCALE) == (0.08, 1.0)
    assert tuple(cfgs["vit_b16"].INPUT.RRCROP_SCALE) == (0.5, 1.0)


@pytest.mark.parametrize("trainer,config", [("ZeroshotCLIP", "vit_b16_ensemble"), ("ZeroshotCLIP2", "vit_b16")])
def test_zeroshot_ensemble_adds_the_dataset_template_except_on_imagenet(shapes_root, tmp_path, trainer, config):
    from clipadapt.clip import IMAGENET_TEMPLATES_SELECT
    zs = build(trainer, f"configs/trainers/ZeroshotCLIP/{config}.yaml", shapes_root, tmp_path)
    names = zs.classnames

    def ensemble(templates):  # by hand: unit-norm features per template, averaged, renormalized
        feats = []
        for t in templates:
            tokens = zs.tokenizer([t.format(c.replace("_", " ")) for c in names])
            with torch.no_grad():
                f = zs.clip_model.encode_text(tokens).float()
            feats.append(f / f.norm(dim=-1, keepdim=True))
        mean = torch.stack(feats).sum(0) / len(feats)
        return mean / mean.norm(dim=-1, keepdim=True)

    eight = ensemble(IMAGENET_TEMPLATES_SELECT + ["a photo of a {}."])  # Shapes' own template
    seven = ensemble(IMAGENET_TEMPLATES_SELECT)
    assert torch.allclose(zs.text_features, eight, atol=1e-5)
    assert not torch.allclose(eight, seven, atol=1e-3)  # the eighth template changes the classifier
    zs.cfg.defrost()
    zs.cfg.DATASET.NAME = "ImageNet"
    assert torch.allclose(zs.classifier_weights(names), seven, atol=1e-5)
