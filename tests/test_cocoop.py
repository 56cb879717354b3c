"""CoCoOp: the conditional prompts and logits by hand (one image at a time through the uncut text
encoder, as the released loop does), evaluation in passes equal to one pass, the released parameter
names, only the prompt learner trains, and base -> new from a saved checkpoint."""
import pytest
import torch
import torch.nn.functional as F

from helpers import make_cfg, run_train

from clipadapt.clip import TextEncoder, load_clip
from trainers.cocoop import ConditionalPromptLearner, conditional_logits

CFG = "configs/trainers/CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml"
CLASSES = ["dog", "Annual_Crop_Land", "sea lion", "red triangle"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer, _ = load_clip("tiny-vit", pretrained=False)
    learner = ConditionalPromptLearner(TextEncoder(model), tokenizer, CLASSES, vis_dim=model.text_projection.shape[1],
                                       ctx_init="a photo of a")
    with torch.no_grad():  # a meta-net whose output is not negligible beside the context
        for p in learner.meta_net.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return model, tokenizer, learner


def hand_logits(model, learner, image_features):
    """The released forward, written out: per image, ctx + meta_net(f) for every class, the full 77-token
    text encoder, then scale * f . t."""
    encoder = TextEncoder(model, cut=False)
    tokenized = learner.tokenizer([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
    embedding = model.token_embedding(tokenized)
    rows = []
    for f in F.normalize(image_features, dim=-1):
        bias = learner.meta_net(f)
        ctx = (learner.ctx + bias).unsqueeze(0).expand(len(CLASSES), -1, -1)
        prompts = torch.cat([embedding[:, :1], ctx, embedding[:, 1 + learner.n_ctx:]], dim=1)
        text = encoder(prompts, tokenized)
        rows.append(model.logit_scale.exp() * f @ F.normalize(text, dim=-1).t())
    return torch.stack(rows)


def test_conditional_logits_match_the_released_loop_by_hand(tiny):
    model, _, learner = tiny
    torch.manual_seed(3)
    feats = torch.randn(3, model.text_projection.shape[1])
    with torch.no_grad():
        want = hand_logits(model, learner, feats)
        got = conditional_logits(learner, TextEncoder(model), feats, model.logit_scale.exp())
        # each image's own context: the rows are not those of one shared prompt set
        shared = conditional_logits(learner, TextEncoder(model), feats[:1].expand(3, -1), model.logit_scale.exp())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, shared, atol=1e-3)


def test_evaluation_in_passes_equals_one_pass(tiny):
    model, _, learner = tiny
    feats = torch.randn(5, model.text_projection.shape[1])
    encoder, scale = TextEncoder(model), model.logit_scale.exp()
    with torch.no_grad():
        whole = conditional_logits(learner, encoder, feats, scale)
        for max_prompts in (1, len(CLASSES), 2 * len(CLASSES) + 1, 1000):
            torch.testing.assert_close(conditional_logits(learner, encoder, feats, scale, max_prompts), whole,
                                       rtol=1e-5, atol=1e-5)


def test_parameters_are_named_and_shaped_as_released(tiny):
    model, tokenizer, learner = tiny
    d, width = model.text_projection.shape[1], model.token_embedding.weight.shape[1]
    shapes = {k: tuple(v.shape) for k, v in learner.state_dict().items()}
    assert shapes == {"ctx": (4, width), "meta_net.linear1.weight": (d // 16, d), "meta_net.linear1.bias": (d // 16,),
                      "meta_net.linear2.weight": (width, d // 16), "meta_net.linear2.bias": (width,)}
    # "a photo of a" initialises the 4 context tokens with those words' embeddings
    torch.testing.assert_close(learner.ctx.detach(), model.token_embedding(tokenizer(["a photo of a"]))[0, 1:5])


def test_only_the_prompt_learner_trains(shapes_root, tmp_path):
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg("CoCoOp", CFG, shapes_root, tmp_path, ["DATASET.NUM_SHOTS", "2", "TRAINER.COCOOP.PREC", "fp32",
                                                          "DATALOADER.TRAIN_X.BATCH_SIZE", "4"])
    set_random_seed(1)
    trainer = TRAINER_REGISTRY.get("CoCoOp")(cfg)
    clip_before = {k: v.clone() for k, v in trainer.clip_model.state_dict().items()}
    learner_before = {k: v.clone() for k, v in trainer.prompt_learner.state_dict().items()}
    trainer.set_model_mode("train")
    trainer.epoch, trainer.batch_idx, trainer.num_batches = 0, 0, 2
    summary = trainer.forward_backward(next(iter(trainer.train_loader_x)))
    assert set(summary) == {"loss", "acc"} and summary["loss"] > 0
    assert all(torch.equal(v, clip_before[k]) for k, v in trainer.clip_model.state_dict().items())
    changed = {k for k, v in trainer.prompt_learner.state_dict().items() if not torch.equal(v, learner_before[k])}
    assert changed == set(learner_before)  # ctx and every meta-net tensor moved


def test_base_to_new_from_saved_checkpoint(shapes_root, tmp_path):
    opts = ["MODEL.BACKBONE.NAME", "tiny-vit", "MODEL.BACKBONE.PRETRAINED", "False", "INPUT.SIZE", "(32,32)",
            "DATALOADER.NUM_WORKERS", "0", "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
            "TRAINER.COCOOP.PREC", "fp32", "TRAINER.COCOOP.EVAL_TEXT_BATCH", "50"]
    common = ["--root", shapes_root, "--seed", "1", "--trainer", "CoCoOp",
              "--dataset-config-file", "configs/datasets/shapes.yaml", "--config-file", CFG]
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    run_train(common + ["--output-dir", str(train_dir), *opts, "DATASET.SUBSAMPLE_CLASSES", "base"])
    ckpt = torch.load(train_dir / "prompt_learner" / "model.pth.tar-1", weights_only=False)
    assert set(ckpt["state_dict"]) == {"ctx", "meta_net.linear1.weight", "meta_net.linear1.bias",
                                       "meta_net.linear2.weight", "meta_net.linear2.bias"}
    proc = run_train(common + ["--output-dir", str(test_dir), "--model-dir", str(train_dir), "--load-epoch", "1",
                               "--eval-only", *opts, "DATASET.SUBSAMPLE_CLASSES", "new"])
    assert "# classes  24" in proc.stdout and "* accuracy:" in proc.stdout
