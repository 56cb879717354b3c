"""PVA: the loss terms against hand computations, the ablation switches, the router's calibration,
and checkpoints that restore adapters, tokens, tau and prototypes for base->new and GZSL evaluation."""
import math
import os
import re
import sys

import pytest
import torch
import torch.nn.functional as F

from helpers import TINY_OPTS, make_cfg, run_train
from trainers.pva import (VariationalAdapter, alignment_loss, auroc, gaussian_entropy, kl_gaussians,
                          kl_to_standard_normal, mean_probability_logits, moment_matched_prototypes,
                          pairwise_kl, pairwise_log_density, prototype_similarity, sample_latents)

PVA_CFG = "configs/trainers/PVA/vit_b16.yaml"
FAST = ["DATASET.NUM_SHOTS", "4", "DATALOADER.TRAIN_X.BATCH_SIZE", "32", "OPTIM.MAX_EPOCH", "2"]


# ----- the math ------------------------------------------------------------------------------------
def test_kl_to_standard_normal_matches_hand_computation():
    mu = torch.tensor([[1.0, 2.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    # dim 1: 0.5 (1 + 1 - 1 - 0) = 0.5; dim 2: 0.5 (4 + 4 - 1 - log 4)
    expected = 0.5 + 0.5 * (7.0 - math.log(4.0))
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx(expected, rel=1e-6)
    assert kl_to_standard_normal(torch.zeros(3, 5), torch.zeros(3, 5)).abs().max().item() == 0.0


def test_kl_between_gaussians_matches_hand_computation():
    mu_q, logvar_q = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 0.0]])
    mu_p, logvar_p = torch.tensor([[1.0, 1.0]]), torch.tensor([[math.log(2.0), 0.0]])
    # dim 1: 0.5 (log 2 - 0 + (1 + 1) / 2 - 1) = 0.5 log 2; dim 2: 0
    assert kl_gaussians(mu_q, logvar_q, mu_p, logvar_p).item() == pytest.approx(0.5 * math.log(2.0), rel=1e-6)


def test_pairwise_kl_equals_row_by_row_kl():
    g = torch.Generator().manual_seed(0)
    mu_q, logvar_q = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g) * 0.3
    mu_p, logvar_p = torch.randn(3, 7, generator=g), torch.randn(3, 7, generator=g) * 0.3
    expected = torch.stack([torch.stack([kl_gaussians(mu_q[i], logvar_q[i], mu_p[k], logvar_p[k])
                                         for k in range(3)]) for i in range(5)])
    assert torch.allclose(pairwise_kl(mu_q, logvar_q, mu_p, logvar_p), expected, atol=1e-4)


def test_alignment_terms_match_hand_computation():
    mu_v = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    mu_t = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    zeros = torch.zeros(2, 2)
    # cosine distances 1 - 0 and 1 - 1, averaged
    assert alignment_loss("cosine", mu_v, zeros, mu_t, zeros).item() == pytest.approx(0.5)
    # unit variances: KL = 0.5 |mu_v - mu_t|^2 = 0.5 * 2 and 0.5 * 2, averaged, per latent dim (2)
    assert alignment_loss("kl", mu_v, zeros, mu_t, zeros).item() == pytest.approx(0.5)


def test_auroc_rank_formula_matches_hand_count():
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    positive = [True, True, True, False, False]
    # pairs (pos, neg): (0.9, 0.5) 1, (0.9, 0.1) 1, (0.5, 0.5) 1/2 twice, (0.5, 0.1) 1 twice -> 5 / 6
    assert auroc(scores, positive) == pytest.approx(5 / 6)
    assert auroc([3, 2, 1], [True, False, False]) == 1.0
    assert auroc([1, 2, 3], [True, False, False]) == 0.0
    assert math.isnan(auroc([1, 2], [True, True]))


def diagonal_gaussian(mu, logvar):
    from torch.distributions import Independent, Normal
    return Independent(Normal(mu, (0.5 * logvar).exp()), 1)


def test_kl_log_density_entropy_match_torch_distributions():
    from torch.distributions import kl_divergence
    g = torch.Generator().manual_seed(1)
    mu_q, logvar_q = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    mu_p, logvar_p = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    q, p = diagonal_gaussian(mu_q[:, None], logvar_q[:, None]), diagonal_gaussian(mu_p[None], logvar_p[None])
    assert torch.allclose(pairwise_kl(mu_q, logvar_q, mu_p, logvar_p), kl_divergence(q, p), atol=1e-5)
    assert torch.allclose(kl_to_standard_normal(mu_q, logvar_q),
                          kl_divergence(diagonal_gaussian(mu_q, logvar_q),
                                        diagonal_gaussian(torch.zeros(3), torch.zeros(3))), atol=1e-5)
    z = torch.randn(5, 3, generator=g)
    assert torch.allclose(pairwise_log_density(z, mu_p, logvar_p), p.log_prob(z[:, None]), atol=1e-5)
    assert torch.allclose(gaussian_entropy(logvar_q), diagonal_gaussian(mu_q, logvar_q).entropy(), atol=1e-5)


def test_mc_routing_score_with_a_fixed_generator():
    mu, logvar = torch.tensor([[0.0, 1.0]]), torch.tensor([[math.log(0.25), 0.0]])
    proto_mu, proto_logvar = torch.tensor([[1.0, 1.0], [0.0, -1.0]]), torch.tensor([[0.0, math.log(2.0)]] * 2)
    draws = sample_latents(mu, logvar, 3, torch.Generator().manual_seed(7))  # (3, 1, 2)
    eps = torch.randn((3, 1, 2), generator=torch.Generator().manual_seed(7))
    assert torch.allclose(draws, mu + torch.tensor([0.5, 1.0]) * eps)  # z = mu + sigma eps, same generator
    # kl: mean over draws of log p_k(z_s), plus the entropy of q, written out by hand
    expected = torch.zeros(1, 2)
    for k in range(2):
        var_k = proto_logvar[k].exp()
        log_p = [(-0.5 * ((z[0] - proto_mu[k]) ** 2 / var_k + torch.log(2 * math.pi * var_k))).sum() for z in draws]
        entropy = (0.5 * torch.log(2 * math.pi * math.e * logvar[0].exp())).sum()
        expected[0, k] = torch.stack(log_p).mean() + entropy
    assert torch.allclose(prototype_similarity("kl", mu, logvar, proto_mu, proto_logvar, draws), expected, atol=1e-5)
    cos = torch.stack([F.cosine_similarity(z[0][None], proto_mu, dim=-1) for z in draws]).mean(0)
    assert torch.allclose(prototype_similarity("cosine", mu, logvar, proto_mu, proto_logvar, draws)[0], cos)
    # many draws: the estimate converges to the closed-form -KL
    many = sample_latents(mu, logvar, 20000, torch.Generator().manual_seed(0))
    assert torch.allclose(prototype_similarity("kl", mu, logvar, proto_mu, proto_logvar, many),
                          -pairwise_kl(mu, logvar, proto_mu, proto_logvar), atol=0.05)
    # without draws: closed form; euclidean uses the means only
    assert torch.allclose(prototype_similarity("euclidean", mu, logvar, proto_mu, proto_logvar),
                          torch.tensor([[-0.5, -2.0]]))


def test_moment_matched_prototypes_by_hand():
    mu = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    logvar = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    mean, proto_logvar = moment_matched_prototypes(mu, logvar, torch.tensor([0, 0, 1]), 2)
    assert torch.allclose(mean, torch.tensor([[2.0, 1.0], [5.0, 5.0]]))
    # class 0: mean variance (1 + 3) / 2 = 2 and (1 + 1) / 2 = 1, plus the means' variance 1 and 1
    assert torch.allclose(proto_logvar.exp(), torch.tensor([[3.0, 2.0], [1.0, 1.0]]), atol=1e-5)


def test_mc_logits_are_the_log_of_the_mean_probability():
    logits = torch.tensor([[[2.0, 0.0]], [[0.0, 0.0]]])  # two samples, one image, two classes
    p = (torch.tensor([math.e ** 2, 1.0]) / (math.e ** 2 + 1) + torch.tensor([0.5, 0.5])) / 2
    assert torch.allclose(mean_probability_logits(logits)[0].softmax(-1), p)
    assert torch.allclose(mean_probability_logits(logits)[0].exp().sum(), torch.tensor(1.0))


# ----- the adapters -------------------------------------------------------------------------------
def test_variational_off_gives_z_equal_to_mu():
    torch.manual_seed(0)
    x = torch.randn(6, 16)
    deterministic = VariationalAdapter(16, 16, 4, variational=False).train()
    mu, logvar = deterministic(x)
    assert torch.equal(deterministic.sample(mu, logvar), mu)
    assert torch.equal(logvar, torch.zeros_like(mu))
    variational = VariationalAdapter(16, 16, 4, variational=True, init_logvar=0.0)
    mu, logvar = variational.train()(x)
    assert not torch.equal(variational.sample(mu, logvar), mu)  # sampled while training
    assert torch.equal(variational.eval().sample(mu, logvar), mu)  # the mean at inference


def test_adapter_with_skip_starts_as_identity_at_unit_rms():
    x = F.normalize(torch.randn(4, 16), dim=-1)
    mu, logvar = VariationalAdapter(16, 16, 4, init_logvar=-2.0)(x)
    assert torch.allclose(mu, 4.0 * x)  # sqrt(D) x: per-dimension RMS 1, the prior's scale
    assert torch.equal(logvar, torch.full_like(mu, -2.0))


def test_visual_tokens_are_read_by_attention():
    x = F.normalize(torch.randn(3, 8), dim=-1)
    adapter = VariationalAdapter(8, 8, 2, n_tokens=2)
    with torch.no_grad():
        adapter.tokens.copy_(torch.randn(2, 8))
    tokens = adapter.tokens.detach()
    weights = torch.exp(x @ tokens.t())
    read = x + (weights / weights.sum(1, keepdim=True)) @ tokens
    assert torch.allclose(adapter(x)[0], math.sqrt(8) * read, atol=1e-6)
    assert VariationalAdapter(8, 8, 2).tokens is None


# ----- the trainer in-process -----------------------------------------------------------------------
def build(shapes_root, out, opts=()):
    from clipadapt.engine import build_trainer
    return build_trainer(make_cfg("PVA", PVA_CFG, shapes_root, out, list(FAST) + list(opts)))


def fine_tuned_logits(trainer, feats):
    """The fine-tuned classifier written out from its definition."""
    model = trainer.model
    f_v = F.normalize(feats, dim=-1)
    f_t = trainer.prompt_text_features()
    mu_v, _ = model.visual(f_v)
    mu_t, _ = model.textual(f_t)
    lam = model.lam if trainer.method_cfg.RESIDUAL_SCOPE == "all" else 0.0
    r_v = F.normalize(F.normalize(mu_v, dim=-1) + lam * f_v, dim=-1)
    r_t = F.normalize(F.normalize(mu_t, dim=-1) + lam * f_t, dim=-1)
    return trainer.scale * r_v @ r_t.t()


@pytest.fixture(scope="module")
def trained_base(shapes_root, tmp_path_factory):
    """A PVA run trained on the base classes (2 epochs), its output dir and its log."""
    out = tmp_path_factory.mktemp("pva") / "train_base"
    run_train(["--root", shapes_root, "--seed", "1", "--trainer", "PVA", "--dataset-config-file",
               "configs/datasets/shapes.yaml", "--config-file", PVA_CFG, "--output-dir", str(out)]
              + TINY_OPTS + FAST + ["DATASET.SUBSAMPLE_CLASSES", "base"])
    return out, (out / "log.txt").read_text()


def test_separation_off_predicts_with_the_fine_tuned_classifier(shapes_root, tmp_path, trained_base):
    out, _ = trained_base
    trainer = build(shapes_root, tmp_path, ["DATASET.SUBSAMPLE_CLASSES", "new", "TRAINER.PVA.SEPARATION", "False"])
    trainer.load_model(str(out), epoch=2)
    with torch.no_grad():
        trainer.prepare_eval()
        feats = trainer.cached_features("test")
        assert torch.allclose(trainer.model_inference(feats), fine_tuned_logits(trainer, feats), atol=1e-5)



def test_residual_scope_and_novel_classifier_by_hand(shapes_root, tmp_path, trained_base):
    out, _ = trained_base
    for scope, novel_classifier in (("novel", "adapted"), ("all", "adapted"), ("novel", "zeroshot")):
        trainer = build(shapes_root, tmp_path / f"{scope}_{novel_classifier}",
                        ["DATASET.SUBSAMPLE_CLASSES", "new", "TRAINER.PVA.RESIDUAL_SCOPE", scope,
                         "TRAINER.PVA.NOVEL_CLASSIFIER", novel_classifier, "TRAINER.PVA.LAMBDA", "0.5"])
        trainer.load_model(str(out), epoch=2)
        with torch.no_grad():
            trainer.prepare_eval()
            feats = trainer.cached_features("test")
            tuned, novel, mu_v, logvar_v, _ = trainer.branch_logits(feats)
            f_v = F.normalize(feats, dim=-1)
            refined = F.normalize(F.normalize(mu_v, dim=-1) + 0.5 * f_v, dim=-1)  # f_adapter + lambda f_CLIP
            expected_novel = (f_v if novel_classifier == "zeroshot" else refined) @ trainer.zs_text.t()
            assert torch.allclose(novel, trainer.scale * expected_novel, atol=1e-5), (scope, novel_classifier)
            assert torch.allclose(tuned, fine_tuned_logits(trainer, feats), atol=1e-5), scope
            # a threshold at the median score, so that both branches are in use
            trainer._tau_now = trainer.model.score(mu_v, logvar_v, "kl").median().item()
            routed = trainer.model_inference(feats)
            to_base = torch.cat(trainer._routing["to_base"])
            assert 0 < int(to_base.sum()) < len(feats)  # both branches in use
            assert torch.allclose(routed, torch.where(to_base[:, None], tuned, novel))
            if scope == "novel":  # base-like samples are not refined: the residual form differs
                f_t = trainer.prompt_text_features()
                r_t = F.normalize(F.normalize(trainer.model.textual(f_t)[0], dim=-1) + 0.5 * f_t, dim=-1)
                assert not torch.allclose(tuned, trainer.scale * refined @ r_t.t(), atol=1e-3)


SWITCHES = {"defaults": [], "no_variational": ["TRAINER.PVA.VARIATIONAL", "False"],
            "align_kl": ["TRAINER.PVA.ALIGN", "kl"], "residual_all": ["TRAINER.PVA.RESIDUAL_SCOPE", "all"],
            "no_visual_tokens": ["TRAINER.PVA.VISUAL_TOKENS", "False"],
            "beta_1": ["TRAINER.PVA.BETA_KL", "1.0"]}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_switch_trains_stably(shapes_root, tmp_path, switch):
    """Two epochs at the world's learning rate without warmup: every loss term stays finite and
    of order one (INIT_LOGVAR -8 made the KL alignment about 3000 per dimension)."""
    trainer = build(shapes_root, tmp_path, ["DATASET.SUBSAMPLE_CLASSES", "base", "OPTIM.LR", "0.01",
                                             "OPTIM.WARMUP_EPOCH", "0"] + SWITCHES[switch])
    trainer.num_batches = len(trainer.train_loader_x)
    history = []
    for trainer.epoch in range(2):
        for trainer.batch_idx, batch in enumerate(trainer.train_loader_x):
            history.append(trainer.forward_backward(batch))
    assert len(history) == 6
    for step in history:
        assert all(math.isfinite(v) for v in step.values()), (switch, step)
        assert step["ce"] < 10 and step.get("kl", 0) < 10 and step["align"] < 20, (switch, step)
    assert ("kl" in history[0]) == (switch != "no_variational")
    with torch.no_grad():
        trainer.calibrate()  # the default KL router on what was trained: finite threshold
    assert math.isfinite(trainer.tau)


def test_tau_from_percentile_routes_that_share_of_base_training_samples(shapes_root, tmp_path):
    trainer = build(shapes_root, tmp_path, ["DATASET.SUBSAMPLE_CLASSES", "base", "TRAINER.PVA.TAU_PERCENTILE", "25.0"])
    trainer.calibrate()
    feats, _ = trainer.base_training_features()
    with torch.no_grad():
        trainer.prepare_eval()
        trainer.model_inference(feats)
    routed, n = int(torch.cat(trainer._routing["to_base"]).sum()), len(feats)
    assert 0.75 * n <= routed <= 0.75 * n + 1  # 75% of them, up to one sample
    # a fixed TAU (TAU_PERCENTILE < 0) is used as given
    fixed = build(shapes_root, tmp_path / "fixed", ["TRAINER.PVA.TAU_PERCENTILE", "-1.0", "TRAINER.PVA.TAU", "0.3"])
    fixed.calibrate()
    assert fixed.tau == pytest.approx(0.3)


def test_text_prototypes_and_kl_measure_route_by_the_same_rule(shapes_root, tmp_path):
    trainer = build(shapes_root, tmp_path, ["DATASET.SUBSAMPLE_CLASSES", "gzsl", "TRAINER.PVA.PROTOTYPE", "text",
                                             "TRAINER.PVA.MEASURE", "kl", "TRAINER.PVA.TAU_PERCENTILE", "50.0"])
    trainer.calibrate()
    model = trainer.model
    assert model.prototypes.shape[0] == len(trainer.base_classnames)  # one latent text mean per base class
    feats, _ = trainer.base_training_features()
    with torch.no_grad():
        mu, logvar = model.visual(F.normalize(feats, dim=-1))
        expected = -pairwise_kl(mu, logvar, model.prototypes, model.prototype_logvar).min(1).values  # closest
        assert torch.allclose(model.score(mu, logvar, "kl"), expected)
        trainer.prepare_eval()
        logits = trainer.model_inference(feats)
    routed = torch.cat(trainer._routing["to_base"])
    assert 0.5 * len(feats) <= int(routed.sum()) <= 0.5 * len(feats) + 1
    n_base = len(trainer.base_classnames)  # GZSL, split label space: each branch stays on its side
    assert (logits[routed].argmax(1) < n_base).all() and (logits[~routed].argmax(1) >= n_base).all()


def test_checkpoint_restores_adapters_tokens_tau_prototypes_for_new_and_gzsl(shapes_root, tmp_path, trained_base):
    from clipadapt.engine import load_checkpoint
    out, log = trained_base
    assert "Router calibrated on 96 base training samples" in log  # 24 base classes x 4 shots
    saved = load_checkpoint(str(out / "pva" / "model.pth.tar-2"))["state_dict"]
    assert not any("token_prefix" in k or "token_suffix" in k or "tokenized" in k for k in saved)
    assert saved["prototypes"].shape[0] == 24 and saved["tau"].dim() == 0
    for mode, n_cls in (("new", 24), ("gzsl", 48), ("all", 48)):
        trainer = build(shapes_root, tmp_path / mode, ["DATASET.SUBSAMPLE_CLASSES", mode])
        assert len(trainer.classnames) == n_cls
        trainer.load_model(str(out), epoch=2)
        state = trainer.model.state_dict()
        assert state.keys() == saved.keys()
        for key, value in saved.items():  # adapters, context tokens, tau, prototypes
            assert torch.equal(state[key].cpu(), value.cpu()), (mode, key)
        with torch.no_grad():
            trainer.prepare_eval()
            assert trainer.model_inference(trainer.cached_features("test")).shape[1] == n_cls


def test_eval_logs_separation_diagnostics(shapes_root, tmp_path, trained_base, capsys):
    out, log = trained_base
    assert "=> separation" in log and "* routed_base:" in log and "* auroc:" not in log  # base test only
    for mode in ("new", "gzsl"):
        trainer = build(shapes_root, tmp_path / mode, ["DATASET.SUBSAMPLE_CLASSES", mode])
        trainer.load_model(str(out), epoch=2)
        capsys.readouterr()
        trainer.test()
        tail = capsys.readouterr().out.split("=> result")[-1]
        assert "* routed_base:" in tail
        if mode == "new":  # novel samples only: no routing accuracy or AUROC to report
            assert "* total: 96" in tail and "* auroc:" not in tail
        else:
            for line in ("* acc_seen:", "* acc_unseen:", "* routing_acc:", "* auroc:"):
                assert line in tail
            assert tail.index("* hm:") < tail.index("* routed_base:")


def test_ablation_script_runs_each_switch_into_its_own_tree(shapes_root, tmp_path):
    import subprocess

    from helpers import REPO
    out = tmp_path / "output"
    env = dict(os.environ, DATA=str(shapes_root), OUTPUT=str(out), CFG="shapes",
               VARIANTS="no_variational mc8")
    proc = subprocess.run(["bash", "scripts/pva/ablation.sh", "shapes", "1", *TINY_OPTS, "OPTIM.MAX_EPOCH", "1"],
                          cwd=REPO, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    defaults = {"VARIATIONAL": "True", "RESIDUAL_SCOPE": "novel", "MC_SAMPLES": "0"}
    switch = {"no_variational": {"VARIATIONAL": "False"}, "mc8": {"MC_SAMPLES": "8"}}
    def run_log(tree):
        """The one run's log.txt in a protocol tree; the config folder carries the options' tag
        (shapes_<tag>: the run registry names runs after the overrides that differ from the yaml)."""
        found = sorted(tree.glob("shapes/shots_16/PVA/shapes*/seed1/log.txt"))
        assert len(found) == 1, (tree, found)
        return found[0]

    for variant, changed in switch.items():
        logs = [run_log(out / "pva_ablation" / variant / "base2new" / part) for part in ("train_base", "test_new")]
        logs.append(run_log(out / "pva_ablation" / variant / "gzsl"))
        for log in logs:
            text = log.read_text()
            assert "* accuracy:" in text
            flags = {k: re.search(rf"^\s+{k}: (\w+)", text, re.M).group(1) for k in defaults}
            assert flags == {**defaults, **changed}, (variant, log)
        assert "* auroc_kl:" in logs[2].read_text()
    summary = subprocess.run([sys.executable, "scripts/pva/summarize_ablation.py", str(out / "pva_ablation"),
                              "--losses"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in summary.splitlines()[2:]}
    assert sorted(rows) == sorted(switch)
    base_acc = float(re.findall(r"\* accuracy: ([\d.]+)%",
                                run_log(out / "pva_ablation" / "mc8" / "base2new" / "train_base").read_text())[-1])
    assert rows["mc8"][1] == "1" and float(rows["mc8"][2]) == base_acc  # one seed: its own accuracy
    assert "kl " in rows["mc8"][-1] and "kl " not in rows["no_variational"][-1]  # the loss terms logged
    bad = subprocess.run(["bash", "scripts/pva/ablation.sh", "shapes", "1"], cwd=REPO, capture_output=True,
                         text=True, env=dict(env, VARIANTS="full no_such"))
    assert bad.returncode == 2 and "unknown variant 'no_such'" in bad.stderr


@pytest.mark.parametrize("key, value", [("RESIDUAL_SCOPE", "base"), ("NOVEL_CLASSIFIER", "clip"),
                                        ("MEASURE", "l2"), ("MC_SAMPLES", "-1")])
def test_bad_switch_values_are_refused_by_name(tmp_path, key, value):
    from trainers.pva import PVA
    cfg = make_cfg("PVA", PVA_CFG, str(tmp_path), tmp_path, [f"TRAINER.PVA.{key}", value])
    with pytest.raises(ValueError, match=f"TRAINER.PVA.{key}"):
        PVA.check_cfg(cfg)  # a classmethod: checked before any trainer is built
