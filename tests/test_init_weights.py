"""MODEL.INIT_WEIGHTS loads through the same safe loader and buffer-dropping as --model-dir."""
import pytest
import torch

from conftest import make_cfg
from test_coop_compat import COOP_CFG, coop_checkpoint


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
