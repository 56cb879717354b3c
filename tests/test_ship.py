"""SHIP: the VAE's loss and prompt, the synthetic features, the CoOp equivalence with the generator
off, the protocol's label spaces and checkpoints, and that training never reads test data."""
import math
import os
import os.path as osp

import pytest
import torch

from helpers import make_cfg

SHIP_CFG = "configs/trainers/SHIP/vit_b16.yaml"
# Tiny: 4 shots x 24 base classes = 96 images, batches of 32, small VAE.
FAST = ["DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "32", "OPTIM.MAX_EPOCH", "2",
        "TRAINER.SHIP.VAE_EPOCHS", "2", "TRAINER.SHIP.VAE_BATCH_SIZE", "32", "TRAINER.SHIP.ENC_HIDDEN", "64",
        "TRAINER.SHIP.GEN_HIDDEN", "64", "TRAINER.SHIP.LATENT", "16", "TEST.NO_TEST", "True"]


def build(trainer, config_file, root, out, opts=(), cls=None):
    """A trainer built in-process with the seed set first (the random tiny CLIP depends on it)."""
    from clipadapt.engine import TRAINER_REGISTRY, set_random_seed
    cfg = make_cfg(trainer, config_file, root, out, opts)
    set_random_seed(1)
    return (cls or TRAINER_REGISTRY.get(trainer))(cfg)


def ship(root, out, mode="base", opts=()):
    return build("SHIP", SHIP_CFG, root, out, FAST + ["DATASET.SUBSAMPLE_CLASSES", mode] + list(opts))


def train(trainer):
    from clipadapt.engine import set_random_seed
    set_random_seed(1)
    trainer.train()
    return trainer


# ----- stage 1: the VAE ------------------------------------------------------------------------------

def test_vae_loss_matches_hand_computation():
    from trainers.ship import vae_loss
    recon = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mean = torch.tensor([[0.0, 1.0], [0.5, 0.0]])
    log_var = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]])
    rec = ((0.6 - 1) ** 2 + 0.8 ** 2 + 1 + 1) / 2  # squared L2 per sample, mean over the batch = 1.4
    kl_1 = -0.5 * ((1 + 0 - 0 - 1) + (1 + 0 - 1 - 1))  # 0.5
    kl_2 = -0.5 * ((1 + math.log(2) - 0.25 - 2) + (1 + 0 - 0 - 1))  # 0.625 - ln(2) / 2
    kld = (kl_1 + kl_2) / 2
    for weight in (1.0, 0.5):
        loss, got_rec, got_kld = vae_loss(recon, x, mean, log_var, kl_weight=weight)
        assert got_rec.item() == pytest.approx(rec)
        assert got_kld.item() == pytest.approx(kld)
        assert loss.item() == pytest.approx(rec + weight * kld)
    # The closed form is KL(N(mean, exp(log_var)) || N(0, I)).
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros(2, 2), torch.ones(2, 2))
    assert torch.distributions.kl_divergence(q, p).sum(1).mean().item() == pytest.approx(kld)


@pytest.fixture(scope="module")
def tiny_clip():
    from clipadapt.clip import TextEncoder, load_clip
    torch.manual_seed(0)
    model, tokenizer, _ = load_clip("tiny-vit", pretrained=False)
    return TextEncoder(model), tokenizer


def test_generator_bias_reaches_every_context_token(tiny_clip):
    from trainers.ship import PromptVAE
    text_encoder, tokenizer = tiny_clip
    vae = PromptVAE(text_encoder, tokenizer, ["red circle", "blue star", "green heart"], feat_dim=32, n_ctx=4,
                    enc_hidden=16, gen_hidden=16, latent=8)
    seen = []

    def spy(prompts, tokenized):
        seen.append(prompts)
        return text_encoder(prompts, tokenized)

    object.__setattr__(vae, "text_encoder", spy)
    z, classes = torch.randn(5, 8), torch.tensor([0, 2, 1, 0, 2])
    recon = vae.decode(z, classes)
    bias = vae.generator(z)  # (5, width)
    plain, _ = vae.prompt_learner(classes)
    prompts = seen[0]
    for token in range(1, 5):  # after SOS: the 4 context tokens, each shifted by the same bias
        assert torch.allclose(prompts[:, token], vae.prompt_learner.ctx[token - 1] + bias, atol=1e-6)
    assert torch.equal(prompts[:, :1], plain[:, :1]) and torch.equal(prompts[:, 5:], plain[:, 5:])
    assert torch.allclose(recon.norm(dim=-1), torch.ones(5), atol=1e-5)
    # Gradients of the reconstruction reach the generator and the VAE context through the prompt.
    recon.sum().backward()
    assert vae.generator.net[-1].weight.grad.abs().sum() > 0
    assert (vae.prompt_learner.ctx.grad.abs().sum(dim=1) > 0).all()
    assert sorted(vae.state_dict()) == sorted(["prompt_learner.ctx"] + [f"{m}.{k}" for m, mod in
                                               (("encoder", vae.encoder), ("generator", vae.generator))
                                               for k in mod.state_dict()])


def test_the_vae_draws_its_context_first_as_the_released_code_builds_it(tiny_clip):
    """The VAE's construction order (context, encoder, generator) decides every seeded number of a
    SHIP run: the context is the first draw after the seed (the README's world table depends on it)."""
    from trainers.ship import PromptVAE
    text_encoder, tokenizer = tiny_clip
    torch.manual_seed(7)
    vae = PromptVAE(text_encoder, tokenizer, ["red circle"], feat_dim=32, n_ctx=4, enc_hidden=16, gen_hidden=16,
                    latent=8)
    width = vae.prompt_learner.ctx.shape[-1]
    torch.manual_seed(7)
    assert torch.equal(vae.prompt_learner.ctx, torch.empty(4, width).normal_(std=0.02))


def test_sequential_bias_adds_one_vector_per_context_token(tiny_clip):
    """Table 5's [r1, ..., rL]: the generator's output, read as (L, width), shifts token i by r_i."""
    from trainers.ship import PromptVAE
    text_encoder, tokenizer = tiny_clip
    vae = PromptVAE(text_encoder, tokenizer, ["red circle", "blue star"], feat_dim=32, n_ctx=3, enc_hidden=16,
                    gen_hidden=16, latent=8, bias="sequential")
    seen = []
    object.__setattr__(vae, "text_encoder", lambda p, t: seen.append(p) or text_encoder(p, t))
    z, classes = torch.randn(4, 8), torch.tensor([0, 1, 1, 0])
    vae.decode(z, classes)
    width = vae.prompt_learner.ctx.shape[-1]
    flat = vae.generator.net(z)  # (4, 3 * width): r1 | r2 | r3
    assert flat.shape == (4, 3 * width)
    for token in range(3):
        r = flat[:, token * width:(token + 1) * width]
        assert torch.allclose(seen[0][:, 1 + token], vae.prompt_learner.ctx[token] + r, atol=1e-6)


def test_without_global_prompts_the_context_is_the_bias_alone_and_stays_unlearned(tiny_clip):
    from trainers.ship import PromptVAE
    text_encoder, tokenizer = tiny_clip
    vae = PromptVAE(text_encoder, tokenizer, ["red circle", "blue star"], feat_dim=32, n_ctx=4, enc_hidden=16,
                    gen_hidden=16, latent=8, global_prompt=False)
    seen = []
    object.__setattr__(vae, "text_encoder", lambda p, t: seen.append(p) or text_encoder(p, t))
    z = torch.randn(3, 8)
    vae.decode(z, torch.tensor([0, 1, 0])).sum().backward()
    bias = vae.generator(z)
    for token in range(1, 5):
        assert torch.allclose(seen[0][:, token], bias, atol=1e-6)  # 0 + r
    assert vae.prompt_learner.ctx.grad is None and not vae.prompt_learner.ctx.requires_grad
    assert vae.generator.net[-1].weight.grad.abs().sum() > 0


def test_mlp_generator_is_three_layers_from_z_and_the_class_text_feature(tiny_clip):
    """Table 4's generator from scratch, against the hand computation with its own weights."""
    from trainers.ship import PromptVAE
    text_encoder, tokenizer = tiny_clip
    class_features = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    vae = PromptVAE(text_encoder, tokenizer, ["a", "b", "c"], feat_dim=32, enc_hidden=16, gen_hidden=24, latent=8,
                    generator="mlp", class_features=class_features)
    assert not hasattr(vae, "prompt_learner") and "class_features" not in vae.state_dict()
    linears = [m for m in vae.generator.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8 + 32, 24), (24, 24), (24, 32)]
    z, classes = torch.randn(5, 8), torch.tensor([2, 0, 1, 1, 2])
    h = torch.cat([z, class_features[classes]], dim=1)
    for i, m in enumerate(linears):
        h = h @ m.weight.T + m.bias
        h = h.clamp(min=0) if i < 2 else h
    assert torch.allclose(vae.decode(z, classes), h / h.norm(dim=-1, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("opts", [["TRAINER.SHIP.GENERATOR", "mlp"], ["TRAINER.SHIP.GLOBAL_PROMPT", "False"],
                                  ["TRAINER.SHIP.BIAS", "sequential", "TRAINER.SHIP.N_CTX_VAE", "2"]])
def test_each_ablation_switch_trains_end_to_end(shapes_root, tmp_path, opts):
    trainer = train(ship(shapes_root, tmp_path, opts=opts + ["OPTIM.MAX_EPOCH", "1"]))
    feats = trainer.synthetic_features(trainer.label_only[:4])
    assert torch.allclose(feats.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_an_unknown_ablation_value_is_refused_with_its_choices(shapes_root, tmp_path):
    with pytest.raises(Exception, match=r"TRAINER\.SHIP\.BIAS.*identical.*sequential"):
        ship(shapes_root, tmp_path, opts=["TRAINER.SHIP.BIAS", "seq"])


# ----- stage 2: real + synthetic ----------------------------------------------------------------------

def test_synthetic_features_are_unit_norm_and_new_classes_only(shapes_root, tmp_path):
    trainer = ship(shapes_root, tmp_path)
    m, k = len(trainer.base_classnames), len(trainer.new_classnames)
    assert (m, k) == (24, 24)
    assert trainer.stage2_classnames == trainer.base_classnames + trainer.new_classnames
    assert trainer.classnames == trainer.base_classnames  # real images: labels 0..m-1 of m + k
    assert max(d.label for d in trainer.dataset.train_x) == m - 1
    torch.manual_seed(0)
    feats, labels = trainer.synthetic_batch(600)
    assert feats.shape == (600, trainer.encode_texts(["a"]).shape[-1])
    assert torch.allclose(feats.norm(dim=-1), torch.ones(600), atol=1e-5)
    assert labels.min() >= m and labels.max() < m + k
    assert set(labels.tolist()) == set(range(m, m + k))  # uniform over the new classes: all drawn

    # In a training step each real feature is joined by one synthetic feature of a new class.
    drawn = []
    original = trainer.synthetic_batch
    trainer.synthetic_batch = lambda n: drawn.append(original(n)) or drawn[-1]
    batch = next(iter(trainer.train_loader_x))
    trainer.before_epoch()
    trainer.batch_idx, trainer.num_batches = 0, len(trainer.train_loader_x)
    summary = trainer.forward_backward(batch)
    assert len(drawn) == 1 and len(drawn[0][1]) == len(batch["label"]) and "acc_syn" in summary


def test_generator_off_is_plain_coop_over_all_classes(shapes_root, tmp_path):
    from trainers.coop import CoOp

    class CoOpOverAllClasses(CoOp):
        @property
        def train_classnames(self):
            return self.base_classnames + self.new_classnames

    same = ["DATASET.NUM_SHOTS", "4", "DATASET.SUBSAMPLE_CLASSES", "base", "DATALOADER.TRAIN_X.BATCH_SIZE", "32",
            "OPTIM.MAX_EPOCH", "2", "TEST.NO_TEST", "True"]
    coop = build("CoOp", "configs/trainers/CoOp/vit_b16_ctxv1.yaml", shapes_root, tmp_path / "coop",
                 same + ["TRAINER.COOP.PREC", "fp32", "OPTIM.MOMENTUM", "0.0", "OPTIM.WEIGHT_DECAY", "0.0",
                         "OPTIM.WARMUP_EPOCH", "0", "INPUT.RRCROP_SCALE", "(0.5, 1.0)"], cls=CoOpOverAllClasses)
    off = ship(shapes_root, tmp_path / "ship", opts=same + ["TRAINER.SHIP.SYN_PER_REAL", "0.0"])
    vae_before = {k: v.clone() for k, v in off.vae.state_dict().items()}
    init_ctx = off.head.module.ctx.detach().clone()
    assert torch.equal(init_ctx, coop.prompt_learner.ctx)
    train(coop)
    train(off)
    assert off.head.module.classnames == coop.prompt_learner.classnames  # base + new
    assert not torch.allclose(off.head.module.ctx, init_ctx)  # it did train
    assert torch.allclose(off.head.module.ctx, coop.prompt_learner.ctx, atol=1e-6)
    assert all(torch.equal(v, off.vae.state_dict()[k]) for k, v in vae_before.items())  # generator not trained


# ----- protocol: label spaces, checkpoints, resume ---------------------------------------------------

@pytest.fixture(scope="module")
def trained_base(shapes_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("ship_base")
    trainer = train(ship(shapes_root, out))
    return trainer, out


def test_checkpoints_hold_no_class_dependent_tensors(trained_base):
    from clipadapt.engine import load_checkpoint
    trainer, out = trained_base
    learner = load_checkpoint(osp.join(out, "prompt_learner", "model.pth.tar-2"))["state_dict"]
    vae = load_checkpoint(osp.join(out, "vae", "model.pth.tar-2"))["state_dict"]
    assert list(learner) == ["ctx"]
    assert set(vae) == set(trainer.vae.state_dict())
    assert all(k.startswith(("encoder.", "generator.")) or k == "prompt_learner.ctx" for k in vae)


@pytest.mark.parametrize("mode", ["base", "new", "gzsl"])
def test_test_runs_score_their_columns_of_the_all_class_classifier(trained_base, shapes_root, tmp_path, mode):
    """A test run rebuilds the class list from its dataset; the checkpoint holds context only. Its
    logits are the base columns (base), the new columns (new) or all columns (gzsl) of the
    trained model's classifier over base + new."""
    trainer, out = trained_base
    trainer.set_classnames(trainer.stage2_classnames)
    feats = torch.randn(7, trainer.embed_dim)
    with torch.no_grad():
        full = trainer.logits(feats, trainer.text_features())  # (7, m + k)
    m = len(trainer.base_classnames)
    expected = {"base": full[:, :m], "new": full[:, m:], "gzsl": full}[mode]

    tester = ship(shapes_root, tmp_path, mode=mode)
    tester.load_model(str(out), epoch=2)
    tester.prepare_eval()
    assert tester.head.module.classnames == {"base": trainer.base_classnames, "new": trainer.new_classnames,
                                                "gzsl": trainer.stage2_classnames}[mode]
    with torch.no_grad():
        assert torch.allclose(tester.model_inference(feats), expected, atol=1e-4)


def test_resume_continues_stage2_without_retraining_the_generator(trained_base, shapes_root, tmp_path):
    import shutil
    trainer, out = trained_base
    run = tmp_path / "run"
    interrupted = ship(shapes_root, run, opts=["TRAIN.CHECKPOINT_FREQ", "1", "OPTIM.MAX_EPOCH", "2"])
    interrupted.max_epoch = 1  # killed after epoch 1 (its checkpoint written)
    train(interrupted)
    for name in ("prompt_learner", "vae"):
        assert (run / name / "model.pth.tar-1").exists()
        (run / name / "checkpoint").write_text("model.pth.tar-1\n")
    resumed = ship(shapes_root, run, opts=["TRAIN.CHECKPOINT_FREQ", "1"])
    resumed.train_generator = lambda: pytest.fail("the generator was retrained on resume")
    resumed.train()
    assert torch.allclose(resumed.head.module.ctx, trainer.head.module.ctx, atol=1e-6)
    for k, v in trainer.vae.state_dict().items():
        assert torch.allclose(resumed.vae.state_dict()[k], v, atol=1e-6)
    shutil.rmtree(run)


def test_all_mode_has_no_label_only_classes_and_is_coop(shapes_root, tmp_path, capsys):
    """XD_PROTOCOL single: CoOp's single-model protocol, no generator; per_target (the paper's): the
    generator trains on the source for the target runs, and stage 2 is still CoOp over real images."""
    trainer = ship(shapes_root, tmp_path, mode="all", opts=["TRAINER.SHIP.XD_PROTOCOL", "single"])
    assert not trainer.synthesizes and trainer.label_only.numel() == 0
    assert trainer.stage2_classnames == trainer.classnames
    trainer.train_generator = lambda: pytest.fail("nothing to synthesize, so no generator")
    trainer.before_train()
    assert "leaves no label-only classes" in capsys.readouterr().out
    trainer = ship(shapes_root, tmp_path / "per_target", mode="all")
    trained = []
    trainer.train_generator = lambda: trained.append(True)
    trainer.before_train()
    assert trained and not trainer.synthesizes and "the generator trains on this source" in capsys.readouterr().out


def test_training_never_touches_test_data(shapes_root, tmp_path, monkeypatch):
    """Stage 1 and stage 2 read train_x only: no test (or val) features, loaders or image files."""
    import clipadapt.engine.builtin.data_manager as dm
    import clipadapt.features as features
    trainer = ship(shapes_root, tmp_path)
    held_out = {d.impath for d in trainer.dataset.test} | {d.impath for d in trainer.dataset.val or []}
    read = []
    for module in (dm, features):
        original = module.read_image
        monkeypatch.setattr(module, "read_image", lambda path, _orig=original: read.append(path) or _orig(path))

    class Forbidden:
        def __iter__(self):
            raise AssertionError("training iterated a test/val loader")

        def __len__(self):
            return 1

    splits = []
    cached = trainer.cached_features
    trainer.cached_features = lambda split, view=None: splits.append(split) or cached(split, view)
    trainer.test_loader = trainer.val_loader = Forbidden()
    # Fresh training views (a new feature-cache dir) so images are actually read.
    monkeypatch.setenv("CLIPADAPT_CACHE", str(tmp_path / "cache"))
    trainer.cfg.defrost()
    trainer.cfg.FEATURES.CACHE_DIR = str(tmp_path / "features")
    trainer.cfg.freeze()
    train(trainer)
    assert splits and set(splits) == {"train_x"}
    assert read and not (set(read) & held_out)


def test_ship_with_clip_adapter_trains_the_shared_adapter_on_all_classes(shapes_root, tmp_path):
    from clipadapt.adapters import AdaptedClassifier
    cfg = "configs/trainers/SHIP/vit_b16_clip_adapter.yaml"
    trainer = build("SHIP", cfg, shapes_root, tmp_path, FAST + ["DATASET.SUBSAMPLE_CLASSES", "base",
                                                                 "OPTIM.MAX_EPOCH", "1"])
    assert isinstance(trainer.head.module, AdaptedClassifier) and trainer.get_model_names() == ["clip_adapter", "vae"]
    before = {k: v.clone() for k, v in trainer.head.module.state_dict().items()}
    train(trainer)
    assert any(not torch.equal(v, trainer.head.module.state_dict()[k]) for k, v in before.items())
    trainer.set_classnames(trainer.stage2_classnames)
    feats = torch.randn(5, trainer.embed_dim)
    with torch.no_grad():
        new_columns = trainer.logits(feats, trainer.text_features())[:, len(trainer.base_classnames):]
    tester = build("SHIP", cfg, shapes_root, tmp_path / "new", FAST + ["DATASET.SUBSAMPLE_CLASSES", "new"])
    tester.load_model(str(tmp_path), epoch=1)
    tester.prepare_eval()
    with torch.no_grad():
        assert torch.allclose(tester.model_inference(feats), new_columns, atol=1e-4)


def test_ship_with_tip_adapter_f_caches_real_base_and_synthesized_new_features(shapes_root, tmp_path):
    """The cache: the real training features averaged over the views, then TIP_SYN_SHOTS synthesized
    features per new class (labels base 0..m-1 then new m..); new classes score through their columns,
    a test run from the checkpoint gives the trained model's new columns, and the keys train."""
    from clipadapt import cache_model
    cfg = "configs/trainers/SHIP/vit_b16_tip_adapter_f.yaml"
    opts = FAST + ["DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.MAX_EPOCH", "1", "TRAINER.SHIP.TIP_AUGMENT_EPOCH", "2",
                   "TRAINER.SHIP.TIP_SYN_SHOTS", "3", "TRAINER.SHIP.TIP_LOGIT_SCALE", "0.0",
                   "TRAINER.SHIP.TIP_INIT_ALPHA", "2.0", "DATALOADER.TRAIN_X.BATCH_SIZE", "32"]
    trainer = build("SHIP", cfg, shapes_root, tmp_path, opts)
    assert trainer.get_model_names() == ["tip_adapter", "vae"]
    m, k = len(trainer.base_classnames), len(trainer.new_classnames)
    n_real = len(trainer.dataset.train_x)
    built = {}
    real_build = trainer.build_cache

    def build_and_keep():
        real_build()
        built["keys"] = trainer.head.module.adapter.weight.detach().clone()
    trainer.build_cache = build_and_keep
    train(trainer)
    keys, values = built["keys"], trainer.head.module.values
    assert keys.shape[0] == n_real + 3 * k and values.shape == (n_real + 3 * k, m + k)
    real_keys = cache_model.cache_keys([trainer.training_view(v) for v in range(2)])
    assert torch.allclose(keys[:n_real], real_keys, atol=1e-6)
    assert torch.allclose(keys[n_real:].norm(dim=-1), torch.ones(3 * k), atol=1e-5)  # synthesized: unit norm
    assert values[:n_real].argmax(1).tolist() == [d.label for d in trainer.dataset.train_x]
    assert values[n_real:].argmax(1).tolist() == [m + j for j in range(k) for _ in range(3)]
    assert not torch.allclose(trainer.head.module.adapter.weight, keys)  # the keys trained
    assert (trainer.head.module.alpha.item(), trainer.head.module.beta.item()) == (2.0, 1.0)

    trainer.set_classnames(trainer.stage2_classnames)
    feats = torch.randn(5, trainer.embed_dim)
    with torch.no_grad():
        full = trainer.logits(feats, trainer.text_features())
        f = torch.nn.functional.normalize(feats, dim=-1)
        weights = trainer.prompt_weights(trainer.stage2_classnames)
        affinity = f @ trainer.head.module.adapter.weight.t()
        by_hand = trainer.logit_scale * f @ weights.t() + 2.0 * torch.exp(-1.0 * (1 - affinity)) @ values
    assert torch.allclose(full, by_hand, atol=1e-4)
    new = [("new" if value == "base" else value) for value in opts]
    tester = build("SHIP", cfg, shapes_root, tmp_path / "new", new)
    tester.load_model(str(tmp_path), epoch=1)
    tester.prepare_eval()
    with torch.no_grad():
        assert torch.allclose(tester.model_inference(feats), full[:, m:], atol=1e-4)


def test_ablation_script_runs_a_switch_into_its_own_tree_and_the_summary_sets_the_paper_row_beside(
        shapes_root, tmp_path):
    import re
    import subprocess
    import sys

    from helpers import REPO, TINY_OPTS
    out = tmp_path / "output"
    env = dict(os.environ, DATA=str(shapes_root), OUTPUT=str(out), CFG="shapes", VARIANTS="L1", SHOTS="4")
    proc = subprocess.run(["bash", "scripts/ship/ablation.sh", "shapes", "1", *TINY_OPTS, "OPTIM.MAX_EPOCH", "1",
                           "TRAINER.SHIP.VAE_EPOCHS", "1"], cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tree = out / "ship_ablation" / "L1" / "base2new"
    logs = {part: sorted(tree.glob(f"{part}/shapes/shots_4/SHIP/shapes*nctxvae1*/seed1/log.txt"))
            for part in ("train_base", "test_new")}
    assert all(len(found) == 1 for found in logs.values()), logs
    for found in logs.values():
        assert re.search(r"^\s+N_CTX_VAE: 1$", found[0].read_text(), re.M)
    summary = subprocess.run([sys.executable, "scripts/ship/summarize_ablation.py", str(out / "ship_ablation"),
                              "--reference"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    row = next(line for line in summary.splitlines() if line.startswith("| L1 |")).split(" | ")
    new_acc = float(re.findall(r"\* accuracy: ([\d.]+)%", logs["test_new"][0].read_text())[-1])
    assert row[1] == "TRAINER.SHIP.N_CTX_VAE 1" and float(row[5]) == new_acc
    assert row[7:] == ["T6: L=1", "80.61", "71.69", "75.53 |"]
    bad = subprocess.run(["bash", "scripts/ship/ablation.sh", "shapes", "1"], cwd=REPO, capture_output=True,
                         text=True, env=dict(env, VARIANTS="L1 L3"))
    assert bad.returncode == 2 and "unknown variant 'L3'" in bad.stderr


def test_cross_dataset_per_target_fine_tunes_on_the_target_class_names_only(shapes_root, tmp_path, train_main,
                                                                            monkeypatch):
    """Paper 4.2.2: the source run trains the generator too; the target run starts from the source's
    generator and CoOp and fine-tunes on features synthesized for the target's class names, reading
    none of the target's images. XD_PROTOCOL single keeps CoOp's protocol: the source model, evaluated."""
    from pathlib import Path

    from clipadapt import runs
    from clipadapt.results import build_table
    from clipadapt.trainer import ClipTrainer
    from clipadapt.world.shapes import generate
    from helpers import TINY_OPTS, coop_args, fails, load_checkpoint
    generate(shapes_root, n_train=4, n_val=1, n_test=3, progress=False, world="shapes_colour")
    opts = TINY_OPTS + ["OPTIM.MAX_EPOCH", "1", "TRAINER.SHIP.VAE_EPOCHS", "1"]
    source = runs.protocol_run("xd_train", "SHIP", "shapes", "shapes", 1, 4, opts, source="shapes")
    target = runs.protocol_run("xd_test", "SHIP", "shapes", "shapes_colour", 1, 4, opts, source="shapes")
    out = str(tmp_path / "output")
    train_main(source.train_args(shapes_root, out))
    args = target.train_args(shapes_root, out)
    assert "--eval-only" not in args and args[args.index("MODEL.INIT_RUN") + 1] == source.output_dir(out)
    original = ClipTrainer.cached_features

    def no_target_images(self, split, view=None):
        assert split != "train_x", "a per-target run read its own training images"
        return original(self, split, view)
    monkeypatch.setattr(ClipTrainer, "cached_features", no_target_images)
    train_main(args)
    log = (Path(target.output_dir(out)) / "log.txt").read_text()
    assert "8 label-only" in log and "none of its images is" in log and "* total: 24" in log
    saved = [load_checkpoint(Path(run.output_dir(out)) / "vae" / "model.pth.tar-1")["state_dict"]
             for run in (source, target)]
    assert saved[0].keys() == saved[1].keys() and all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])

    table = build_table("xd", root=out)  # the world's source and target
    assert table.headers[1:3] == ["shapes (source)", "shapes_colour"] and table.rows[0][0].startswith("SHIP")

    single = runs.protocol_run("xd_test", "SHIP", "shapes", "shapes_colour", 1, 4,
                               opts + ["TRAINER.SHIP.XD_PROTOCOL", "single"], source="shapes")
    assert "--eval-only" in single.train_args(shapes_root, out) and "MODEL.INIT_RUN" not in single.all_opts()
    message = fails(train_main, coop_args(shapes_root, tmp_path / "coop", "MODEL.INIT_RUN", source.output_dir(out)))
    assert "MODEL.INIT_RUN" in message and "CoOp does not do" in message
