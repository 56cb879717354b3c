"""MODEL.INIT_WEIGHTS loads through the same safe loader and buffer-dropping as --model-dir."""
import pytest
import torch

from helpers import make_cfg
from helpers import COOP_CFG, coop_checkpoint


def test_coop_format_checkpoint_serves_as_init_weights(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    plain = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path / "plain", []))
    ctx = torch.randn(plain.prompt_learner.ctx.shape, generator=torch.Generator().manual_seed(1))
    n_cls = len(plain.classnames)
    fpath = tmp_path / "coop.pth.tar"
    checkpoint = coop_checkpoint(ctx, n_cls, epoch=50)  # pickled scheduler + prefix/suffix buffers
    torch.save(checkpoint, fpath)

    trainer = build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path / "init",
                                     ["MODEL.INIT_WEIGHTS", str(fpath)]))
    assert torch.equal(trainer.prompt_learner.ctx.detach().cpu(), ctx)
    # the class-token buffers are this run's, not the checkpoint's random ones
    assert not torch.equal(trainer.prompt_learner.token_prefix.cpu(), checkpoint["state_dict"]["token_prefix"])


def test_init_weights_of_another_shape_names_the_file(shapes_root, tmp_path):
    from clipadapt.engine import build_trainer
    from clipadapt.checkpoints import CheckpointError
    fpath = tmp_path / "wrong.pth.tar"
    torch.save({"state_dict": {"ctx": torch.zeros(3, 7)}}, fpath)
    with pytest.raises(CheckpointError, match="wrong.pth.tar"):
        build_trainer(make_cfg("CoOp", COOP_CFG, shapes_root, tmp_path / "o", ["MODEL.INIT_WEIGHTS", str(fpath)]))


@pytest.mark.parametrize("trainer_name, config, module", [
    ("CLIPAdapter", "configs/trainers/CLIPAdapter/vit_b16.yaml", "clip_adapter"),
    ("PVA", "configs/trainers/PVA/vit_b16.yaml", "pva"),
])
def test_adapter_trainers_take_init_weights_through_the_same_loader(shapes_root, tmp_path, trainer_name, config, module):
    from clipadapt.engine import build_trainer
    plain = build_trainer(make_cfg(trainer_name, config, shapes_root, tmp_path / "plain", []))
    state = {k: v + 0.5 if v.is_floating_point() else v
             for k, v in plain._models[module].state_dict().items()}  # any values other than a fresh init's
    fpath = tmp_path / "init.pth.tar"
    torch.save({"state_dict": state, "epoch": 3}, fpath)
    trainer = build_trainer(make_cfg(trainer_name, config, shapes_root, tmp_path / "init",
                                     ["MODEL.INIT_WEIGHTS", str(fpath)]))
    loaded = trainer._models[module].state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k].cpu(), state[k]) for k in state)
