"""PREC fp16 is CoOp's arithmetic, not only CoOp's frozen model.

Under PREC fp16 CoOp's CustomCLIP runs entirely in fp16: the context is an fp16 parameter updated by
SGD in fp16, and the normalisation, the logits and the cross-entropy are fp16 too; its ZeroshotCLIP
normalises (and ZeroshotCLIP2 sums) fp16 text features in fp16. Each test below writes that math by
hand, directly on the frozen open_clip modules, and asks for the trainer's numbers bit for bit.

PREC fp16 runs in fp32 on a CPU (CoOp's fp16 means a GPU), so these tests turn the fallback off:
CPU fp16 kernels then do the arithmetic. Bit equality on a CPU shows the same operations run in the
same dtypes and order; the GPU's kernels round the same operations as the GPU does for CoOp.
"""
import pytest
import torch
import torch.nn.functional as F

from helpers import make_cfg

COOP_CONFIG = "configs/trainers/CoOp/vit_b16_ep50_ctxv1.yaml"  # CTX_INIT "a photo of a"
FULL_PROMPTS = ["MODEL.CUT_TEXT_TOKENS", "False", "FEATURES.CACHE", "False"]  # all 77 tokens, as CoOp


@pytest.fixture
def half_on_cpu(monkeypatch):
    import clipadapt.clip.loader as loader
    monkeypatch.setattr(loader, "HALF_ON_CPU", True)


def build(trainer_name, config, shapes_root, tmp_path, *opts):
    from clipadapt.engine import build_trainer
    cfg = make_cfg(trainer_name, config, shapes_root, tmp_path / "out", [*FULL_PROMPTS, *opts])
    return build_trainer(cfg)


def clip_dtype(model):
    return model.visual.conv1.weight.dtype  # OpenAI's `clip_model.dtype`


def coop_tokens(model, tokenizer, classnames, ctx_init):
    """CoOp's PromptLearner.__init__: prefix (SOS), context init, suffix (class . EOS pad), in fp16."""
    n_ctx = len(ctx_init.split())
    tokenized = tokenizer([f"{ctx_init} {name.replace('_', ' ')}." for name in classnames])
    with torch.no_grad():
        embedding = model.token_embedding(tokenized).type(clip_dtype(model))
    return tokenized, embedding[:, :1], embedding[0, 1:1 + n_ctx].clone(), embedding[:, 1 + n_ctx:]


def coop_logits(model, ctx, prefix, suffix, tokenized, image_features, head_dtype=torch.float16):
    """CoOp's CustomCLIP.forward (TextEncoder, normalisation, scaled cosine logits), in the dtypes CoOp
    has; head_dtype fp32 is what this project did before (fp32 context, fp32 head)."""
    dtype = clip_dtype(model)
    ctx = ctx.to(dtype).unsqueeze(0).expand(prefix.shape[0], -1, -1)
    prompts = torch.cat([prefix, ctx, suffix], dim=1)
    x = prompts + model.positional_embedding.type(dtype)
    x = model.transformer(x, attn_mask=model.attn_mask)  # open_clip's transformer is batch-first
    x = model.ln_final(x).type(dtype)
    text_features = (x[torch.arange(x.shape[0]), tokenized.argmax(dim=-1)] @ model.text_projection).to(head_dtype)
    image_features = image_features.to(head_dtype)
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return model.logit_scale.exp() * image_features @ text_features.t()


def coop_sgd(cfg, param):
    """Dassl's build_optimizer for OPTIM.NAME sgd."""
    return torch.optim.SGD([param], lr=cfg.OPTIM.LR, momentum=cfg.OPTIM.MOMENTUM, weight_decay=cfg.OPTIM.WEIGHT_DECAY,
                           dampening=cfg.OPTIM.SGD_DAMPNING, nesterov=cfg.OPTIM.SGD_NESTEROV)


def test_coop_fp16_trains_and_evaluates_with_coops_fp16_arithmetic(half_on_cpu, shapes_root, tmp_path):
    trainer = build("CoOp", COOP_CONFIG, shapes_root, tmp_path, "DATASET.NUM_SHOTS", "2")
    model, cfg = trainer.clip_model, trainer.cfg
    assert clip_dtype(model) == trainer.head_dtype == torch.float16

    tokenized, prefix, ctx, suffix = coop_tokens(model, trainer.tokenizer, trainer.classnames, "a photo of a")
    learner = trainer.prompt_learner
    assert learner.ctx.dtype == torch.float16 and torch.equal(learner.ctx.detach(), ctx)
    assert torch.equal(learner.token_prefix, prefix) and torch.equal(learner.token_suffix, suffix)

    # CoOp's training step on fp16 parameters (at the base lr: the warmup lr of 1e-5 moves an fp16
    # context of this size by less than its rounding step, as it does in CoOp).
    for group in trainer.optim.param_groups:
        group["lr"] = cfg.OPTIM.LR
    theirs = torch.nn.Parameter(ctx.clone())
    their_sgd = coop_sgd(cfg, theirs)
    old = torch.nn.Parameter(ctx.float())  # the previous behaviour: fp32 context, fp32 head
    old_sgd = coop_sgd(cfg, old)
    batch = next(iter(trainer.train_loader_x))
    label = batch["label"]
    with torch.no_grad():
        image_features = model.encode_image(batch["img"].type(torch.float16))
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2  # not an epoch's last batch: no scheduler step
    for step in range(3):
        summary = trainer.forward_backward(batch)
        output = coop_logits(model, theirs, prefix, suffix, tokenized, image_features)
        loss = F.cross_entropy(output, label)
        assert output.dtype == loss.dtype == torch.float16
        their_sgd.zero_grad()
        loss.backward()
        their_sgd.step()
        assert summary["loss"] == loss.item(), step
        assert torch.equal(learner.ctx.detach(), theirs.detach()), f"context differs after step {step + 1}"

        old_loss = F.cross_entropy(coop_logits(model, old, prefix, suffix, tokenized, image_features, torch.float32),
                                   label)
        old_sgd.zero_grad()
        old_loss.backward()
        old_sgd.step()
    assert learner.ctx.dtype == torch.float16
    assert not torch.equal(old.detach().half(), theirs.detach())  # so the check above can fail

    # Evaluation: fp16 logits (and so fp16 ties) as CoOp's model_inference gives them.
    trainer.set_model_mode("eval")
    trainer.prepare_eval()
    with torch.no_grad():
        got = trainer.model_inference(image_features.float())
        want = coop_logits(model, theirs.detach(), prefix, suffix, tokenized, image_features)
    assert got.dtype == torch.float16 and torch.equal(got, want)


def test_coop_amp_trains_under_autocast_with_a_scaler_and_evaluates_in_fp32(half_on_cpu, shapes_root, tmp_path):
    """CoOp's amp: fp32 CLIP and context, the step under fp16 autocast with GradScaler(), and Dassl's
    test without autocast (fp32 image features, fp32 logits)."""
    trainer = build("CoOp", COOP_CONFIG, shapes_root, tmp_path, "DATASET.NUM_SHOTS", "2", "TRAINER.COOP.PREC", "amp")
    model, cfg = trainer.clip_model, trainer.cfg
    assert clip_dtype(model) == trainer.head_dtype == trainer.prompt_learner.ctx.dtype == torch.float32
    assert trainer.use_amp
    tokenized, prefix, ctx, suffix = coop_tokens(model, trainer.tokenizer, trainer.classnames, "a photo of a")
    for group in trainer.optim.param_groups:
        group["lr"] = cfg.OPTIM.LR
    theirs = torch.nn.Parameter(ctx.clone())
    their_sgd, scaler = coop_sgd(cfg, theirs), torch.amp.GradScaler("cpu")
    plain = torch.nn.Parameter(ctx.clone())  # the same step without autocast (this project's amp before)
    plain_sgd = coop_sgd(cfg, plain)
    batch = next(iter(trainer.train_loader_x))
    trainer.set_model_mode("train")
    trainer.batch_idx, trainer.num_batches = 0, 2
    for step in range(3):
        summary = trainer.forward_backward(batch)
        with torch.autocast("cpu", dtype=torch.float16):
            with torch.no_grad():
                image_features = model.encode_image(batch["img"])
            output = coop_logits(model, theirs, prefix, suffix, tokenized, image_features, torch.float32)
            loss = F.cross_entropy(output, batch["label"])
        assert output.dtype == torch.float16 and loss.dtype == torch.float32
        their_sgd.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(their_sgd)
        scaler.update()
        assert summary["loss"] == loss.item(), step
        assert torch.equal(trainer.prompt_learner.ctx.detach(), theirs.detach()), f"context differs after step {step + 1}"
        plain_loss = F.cross_entropy(coop_logits(model, plain, prefix, suffix, tokenized, image_features.float(),
                                                 torch.float32), batch["label"])
        plain_sgd.zero_grad()
        plain_loss.backward()
        plain_sgd.step()
    assert not torch.equal(plain.detach(), theirs.detach())  # so the check above can fail

    trainer.set_model_mode("eval")
    with torch.no_grad():
        trainer.prepare_eval()
        images = next(iter(trainer.test_loader))["img"][:8]
        got = trainer.model_inference(trainer.parse_batch_test({"img": images, "label": torch.zeros(8)})[0])
        want = coop_logits(model, theirs, prefix, suffix, tokenized, model.encode_image(images), torch.float32)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_coop_fp16_run_saves_an_fp16_context_that_an_fp32_run_evaluates(half_on_cpu, shapes_root, tmp_path,
                                                                          monkeypatch):
    import clipadapt.clip.loader as loader
    trainer = build("CoOp", COOP_CONFIG, shapes_root, tmp_path, "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
                    "TEST.FINAL_MODEL", "last_step")
    trainer.train()
    ckpt = torch.load(tmp_path / "out" / "prompt_learner" / "model.pth.tar-1", weights_only=True)
    assert ckpt["state_dict"]["ctx"].dtype == torch.float16  # as CoOp's fp16 checkpoints hold it
    assert 0 <= trainer.test() <= 100
    monkeypatch.setattr(loader, "HALF_ON_CPU", False)
    evaluator = build("CoOp", COOP_CONFIG, shapes_root, tmp_path / "eval", "DATASET.NUM_SHOTS", "1")
    evaluator.load_model(str(tmp_path / "out"), epoch=1)
    assert evaluator.prompt_learner.ctx.dtype == torch.float32
    assert torch.equal(evaluator.prompt_learner.ctx.detach(), ckpt["state_dict"]["ctx"].float())
    assert 0 <= evaluator.test() <= 100


@pytest.mark.parametrize("ensemble", [False, True])
def test_zeroshot_clip_fp16_class_weights_and_logits_are_coops(half_on_cpu, shapes_root, tmp_path, ensemble):
    from clipadapt.clip import IMAGENET_TEMPLATES_SELECT, prompts_for, template_for
    trainer = build("ZeroshotCLIP", "configs/trainers/ZeroshotCLIP/vit_b16.yaml", shapes_root, tmp_path,
                    "TRAINER.ZSCLIP.ENSEMBLE", str(ensemble))
    model, tokenizer, classnames = trainer.clip_model, trainer.tokenizer, trainer.classnames
    with torch.no_grad():
        if ensemble:  # ZeroshotCLIP2: fp16 sum over the templates, one at a time
            templates = [*IMAGENET_TEMPLATES_SELECT, template_for(trainer.cfg.DATASET.NAME)]
            total = 0
            for template in templates:
                features = model.encode_text(tokenizer([template.format(c.replace("_", " ")) for c in classnames]))
                total = total + features / features.norm(dim=-1, keepdim=True)
            text_features = total / len(templates)
        else:
            text_features = model.encode_text(tokenizer(prompts_for(classnames, trainer.cfg.DATASET.NAME)))
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        images = next(iter(trainer.test_loader))["img"][:8]
        image_features = model.encode_image(images.type(torch.float16))
        want = model.logit_scale.exp() * (image_features / image_features.norm(dim=-1, keepdim=True)) @ text_features.t()
        got = trainer.model_inference(trainer.encode_images(images))
    assert text_features.dtype == trainer.text_features.dtype == torch.float16
    assert torch.equal(trainer.text_features, text_features)
    assert got.dtype == torch.float16 and torch.equal(got, want)


def test_fp16_head_only_where_coop_has_it(shapes_root, tmp_path):
    """On a CPU PREC fp16 is fp32 throughout; bf16 (ours) keeps the context and head in fp32."""
    for prec in ("fp16", "bf16", "fp32"):
        trainer = build("CoOp", COOP_CONFIG, shapes_root, tmp_path / prec, "DATASET.NUM_SHOTS", "1",
                        "TRAINER.COOP.PREC", prec)
        assert trainer.head_dtype == trainer.prompt_learner.ctx.dtype == torch.float32, prec
