"""MaPLe: the released parameter names and shapes read from the model, "a photo" learned and "of a"
kept as text, the coupling (each layer's vision prompt is the projection of its text prompt), only
the prompt learner trains, a released checkpoint (the whole CustomCLIP) evaluates, a ResNet and a too
deep PROMPT_DEPTH get one line, and base -> new from a saved checkpoint."""
import pytest
import torch

from helpers import make_cfg, run_train

CFG = "configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml"
TINY = ["MODEL.BACKBONE.NAME", "tiny-vit", "MODEL.BACKBONE.PRETRAINED", "False", "INPUT.SIZE", "(32,32)",
        "DATALOADER.NUM_WORKERS", "0", "TRAINER.MAPLE.PREC", "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "2"]


def build(root, out, opts=()):
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg("MaPLe", CFG, root, out, ["DATASET.NUM_SHOTS", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
                                             "TRAINER.MAPLE.PREC", "fp32", "TRAINER.MAPLE.PROMPT_DEPTH", "2",
                                             *opts])
    set_random_seed(1)
    return TRAINER_REGISTRY.get("MaPLe")(cfg)


def test_parameters_named_and_shaped_as_released(shapes_root, tmp_path):
    trainer = build(shapes_root, tmp_path)
    learner, model = trainer.prompt_learner, trainer.clip_model
    text_w, vis_w = model.token_embedding.weight.shape[1], model.visual.class_embedding.shape[0]
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    assert shapes == {"ctx": (2, text_w), "proj.weight": (vis_w, text_w), "proj.bias": (vis_w,),
                      "compound_prompts_text.0": (2, text_w),
                      "compound_prompt_projections.0.weight": (vis_w, text_w),
                      "compound_prompt_projections.0.bias": (vis_w,)}
    tokenizer = trainer.tokenizer
    with torch.no_grad():
        init = model.token_embedding(tokenizer(["a photo of a"]))[0, 1:3]
    torch.testing.assert_close(learner.ctx.detach(), init)  # "a photo" learned...
    ids = tokenizer([f"a photo of a {trainer.train_classnames[0]}."])[0]
    assert torch.equal(learner.tokenized_prompts[0], ids)  # ... and "of a" kept as text before the class name
    first, text, vision = learner.deep_prompts()
    assert text[0] is None and vision[0] is None and len(text) == len(vision) == 2
    with torch.no_grad():
        torch.testing.assert_close(first, learner.proj(learner.ctx))
        layer = learner.compound_prompt_projections[0]
        torch.testing.assert_close(vision[1], learner.compound_prompts_text[0] @ layer.weight.t() + layer.bias)


def test_only_the_prompt_learner_trains_and_the_cache_is_not_used(shapes_root, tmp_path, capsys):
    trainer = build(shapes_root, tmp_path)
    assert not trainer.use_feature_cache
    assert "Feature cache not used: MaPLe prompts the image encoder" in capsys.readouterr().out
    clip_before = {k: v.clone() for k, v in trainer.clip_model.state_dict().items()}
    learner_before = {k: v.clone() for k, v in trainer.prompt_learner.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2
    batch = next(iter(trainer.train_loader_x))
    assert batch["img"].dim() == 4  # images, not features
    summary = trainer.forward_backward(batch)
    assert set(summary) == {"loss", "acc"}
    assert all(torch.equal(v, clip_before[k]) for k, v in trainer.clip_model.state_dict().items())
    changed = {k for k, v in trainer.prompt_learner.state_dict().items() if not torch.equal(v, learner_before[k])}
    assert changed == set(learner_before)  # every prompt and projection got a gradient


def test_too_deep_and_resnet_are_refused_in_one_line(shapes_root, tmp_path):
    with pytest.raises(ValueError, match=r"^TRAINER\.MAPLE\.PROMPT_DEPTH 9 exceeds the 2 layers of tiny-vit$"):
        build(shapes_root, tmp_path, ["TRAINER.MAPLE.PROMPT_DEPTH", "9"])
    proc = run_train(["--root", shapes_root, "--seed", "1", "--trainer", "MaPLe", "--dataset-config-file",
                      "configs/datasets/shapes.yaml", "--config-file", CFG, "--output-dir", str(tmp_path / "rn"),
                      *TINY, "MODEL.BACKBONE.NAME", "tiny-rn", "DATASET.NUM_SHOTS", "1"], check=False)
    assert proc.returncode != 0
    assert "Vision prompts need a ViT image encoder; this backbone's is a ModifiedResNet" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_base_to_new_and_a_released_checkpoint(shapes_root, tmp_path):
    common = ["--root", shapes_root, "--seed", "1", "--trainer", "MaPLe", "--dataset-config-file",
              "configs/datasets/shapes.yaml", "--config-file", CFG]
    opts = TINY + ["DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1"]
    train_dir = tmp_path / "train"
    run_train(common + ["--output-dir", str(train_dir), *opts, "DATASET.SUBSAMPLE_CLASSES", "base"])
    ckpt = torch.load(train_dir / "MultiModalPromptLearner" / "model.pth.tar-1", weights_only=False)
    assert not any(k.startswith(("image_encoder", "text_encoder", "transformer")) for k in ckpt["state_dict"])
    proc = run_train(common + ["--output-dir", str(tmp_path / "new"), "--model-dir", str(train_dir), "--load-epoch",
                               "1", "--eval-only", *opts, "DATASET.SUBSAMPLE_CLASSES", "new"])
    ours = float(proc.stdout.split("* accuracy: ")[1].split("%")[0])
    # The released trainer saves the whole CustomCLIP under "prompt_learner." and the frozen CLIP beside it.
    released = tmp_path / "released"
    (released / "MultiModalPromptLearner").mkdir(parents=True)
    state = {f"prompt_learner.{k}": v for k, v in ckpt["state_dict"].items()}
    state.update({"prompt_learner.token_prefix": torch.zeros(24, 1, 64), "image_encoder.conv1.weight": torch.zeros(1),
                  "logit_scale": torch.zeros(())})
    torch.save({"state_dict": state, "epoch": 1, "optimizer": None, "scheduler": None},
               released / "MultiModalPromptLearner" / "model.pth.tar-1")
    proc = run_train(common + ["--output-dir", str(tmp_path / "new_released"), "--model-dir", str(released),
                               "--load-epoch", "1", "--eval-only", *opts, "DATASET.SUBSAMPLE_CLASSES", "new"])
    assert float(proc.stdout.split("* accuracy: ")[1].split("%")[0]) == ours
