"""IVLP: independent text and vision prompts (no coupling), the released checkpoint's names mapped
onto ours, the language-only variant runs CLIP's own image encoder (a ResNet too), only the prompts
train."""
import torch

from helpers import make_cfg

CFG = "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_2+2ctx.yaml"
LANGUAGE_ONLY = "configs/trainers/IVLP/vit_b16_c2_ep5_batch4_4ctx_language_only.yaml"
FAST = ["DATASET.NUM_SHOTS", "1", "DATALOADER.TRAIN_X.BATCH_SIZE", "4", "TRAINER.IVLP.PREC", "fp32",
        "TRAINER.IVLP.PROMPT_DEPTH_TEXT", "2"]


def build(root, out, config=CFG, opts=()):
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg("IVLP", config, root, out, FAST + list(opts))
    set_random_seed(1)
    return TRAINER_REGISTRY.get("IVLP")(cfg)


def step(trainer):
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2
    return trainer.forward_backward(next(iter(trainer.train_loader_x)))


def test_prompts_shapes_and_only_they_train(shapes_root, tmp_path):
    trainer = build(shapes_root, tmp_path, opts=["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"])
    model, learner = trainer.clip_model, trainer.prompt_learner
    text_w, vis_w = model.token_embedding.weight.shape[1], model.visual.class_embedding.shape[0]
    assert {k: tuple(v.shape) for k, v in learner.state_dict().items()} == {
        "ctx": (2, text_w), "text_prompts.0": (2, text_w), "VPT": (2, vis_w), "vision_prompts.0": (2, vis_w)}
    first, text, vision = learner.deep_prompts()
    assert first is learner.VPT and text[1] is learner.text_prompts[0] and vision[1] is learner.vision_prompts[0]
    clip_before = {k: v.clone() for k, v in model.state_dict().items()}
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    step(trainer)
    assert all(torch.equal(v, clip_before[k]) for k, v in model.state_dict().items())
    assert {k for k, v in learner.state_dict().items() if not torch.equal(v, before[k])} == set(before)


def test_released_checkpoint_names_map_onto_ours(shapes_root, tmp_path):
    from trainers.ivlp import IVLP
    trainer = build(shapes_root, tmp_path, opts=["TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"])
    ours = {k: torch.randn_like(v) for k, v in trainer.prompt_learner.state_dict().items()}
    released = {"prompt_learner.ctx": ours["ctx"], "prompt_learner.token_prefix": torch.zeros(1),
                "image_encoder.VPT": ours["VPT"],
                "image_encoder.transformer.resblocks.1.VPT_shallow": ours["vision_prompts.0"],
                "text_encoder.transformer.resblocks.1.VPT_shallow": ours["text_prompts.0"],
                "image_encoder.conv1.weight": torch.zeros(3), "logit_scale": torch.zeros(())}
    mapped = IVLP.released_state(trainer, released)
    assert set(mapped) == set(ours) and all(torch.equal(mapped[k], ours[k]) for k in ours)
    trainer.load_state_into("VLPromptLearner", released, "released.pth")
    assert all(torch.equal(trainer.prompt_learner.state_dict()[k], ours[k]) for k in ours)


def test_language_only_uses_clip_image_encoder_even_on_a_resnet(shapes_root, tmp_path):
    trainer = build(shapes_root, tmp_path, LANGUAGE_ONLY, ["MODEL.BACKBONE.NAME", "tiny-rn"])
    assert trainer.prompt_learner.VPT is None and len(trainer.prompt_learner.vision_prompts) == 0
    images = next(iter(trainer.train_loader_x))["img"][:2]
    with torch.no_grad():
        got = trainer.image_features(images, *trainer.prompt_learner.deep_prompts()[::2])
        torch.testing.assert_close(got, trainer.normalize(trainer.clip_model.encode_image(images)))
    assert step(trainer)["loss"] > 0


def test_vpt_deep_is_vision_prompts_only_with_the_hand_crafted_text_prompt(shapes_root, tmp_path):
    """VPT-deep (vit_b16_vpt_deep.yaml): no learnable text token, the class weights are exactly the
    features of "a photo of a {class}." (the fixed text), and only the vision prompts train."""
    trainer = build(shapes_root, tmp_path, "configs/trainers/IVLP/vit_b16_vpt_deep.yaml",
                    ["TRAINER.IVLP.PROMPT_DEPTH_TEXT", "0", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "2"])
    learner = trainer.prompt_learner
    vis_w = trainer.clip_model.visual.class_embedding.shape[0]
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    assert shapes["ctx"][0] == 0 and shapes["VPT"] == (8, vis_w) and shapes["vision_prompts.0"] == (8, vis_w)
    assert not [k for k in shapes if k.startswith("text_prompts")]
    with torch.no_grad():
        weights = trainer.text_features(learner.deep_prompts()[1])
        hand = trainer.encode_texts([f"a photo of a {c}." for c in trainer.train_classnames])
    torch.testing.assert_close(weights, hand, rtol=1e-5, atol=1e-6)
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    step(trainer)
    assert {k for k, v in learner.state_dict().items() if not torch.equal(v, before[k]) and v.numel()} == {
        "VPT", "vision_prompts.0"}
