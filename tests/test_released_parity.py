"""The baselines equal their released code: on the same weights and inputs, our CoCoOp, KgCoOp, MaPLe,
IVLP and PromptSRC give the logits, loss, score and gradients that the released modules give (KaiyangZhou/CoOp
trainers/cocoop.py, htyao89/KgCoOp KgCoOp/trainers/kgcoop.py, muzairkhattak/multimodal-prompt-learning
trainers/maple.py and trainers/independentVL.py with its clip/model.py, muzairkhattak/PromptSRC
trainers/promptsrc.py; run on a CPU in fp32 with their own clip/ packages; the
numbers are in tests/fixtures/released_*.json, each saying how they were made and what was patched). The weights are the seeded OpenAI-format ViT-B/16 of test_openai_parity.py.
"""
import json
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from helpers import seeded_openai_state

from clipadapt.clip import PromptLearner, TextEncoder, encode_image_prompted, load_clip, prompts_for
from trainers.cocoop import ConditionalPromptLearner, conditional_logits
from trainers.coop import CoOp
from trainers.kgcoop import knowledge_guided_score
from trainers.ivlp import IndependentPromptLearner
from trainers.maple import MultiModalPromptLearner
from trainers.promptsrc import self_regularization

FIXTURE = osp.join(osp.dirname(__file__), "fixtures", "released_cocoop_kgcoop.json")
MAPLE_FIXTURE = osp.join(osp.dirname(__file__), "fixtures", "released_maple.json")
IVLP_FIXTURE = osp.join(osp.dirname(__file__), "fixtures", "released_ivlp.json")
PROMPTSRC_FIXTURE = osp.join(osp.dirname(__file__), "fixtures", "released_promptsrc.json")
RTOL = 1e-4  # fp32 on both sides; our text encoder is cut to the longest EOT, the released one runs 77 tokens
DIFFS = {}  # what -> max relative difference (printed with -s)


@pytest.fixture(scope="module")
def released():
    with open(FIXTURE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def vit_b16(openai_model_py, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "state_dict.pt"
    torch.save(seeded_openai_state(openai_model_py, "ViT-B/16"), path)
    model, tokenizer, _ = load_clip("ViT-B/16", pretrained_tag=str(path))
    torch.manual_seed(1)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        image_features = model.encode_image(images)
    return SimpleNamespace(model=model, tokenizer=tokenizer, encoder=TextEncoder(model),
                           image_features=image_features, labels=torch.tensor([0, 2]))


@pytest.fixture(scope="module")
def released_maple():
    with open(MAPLE_FIXTURE) as f:
        return json.load(f)


def close(ours, theirs, what):
    theirs = torch.tensor(theirs, dtype=torch.float64)
    ours = ours.detach().double().reshape(theirs.shape)
    scale = theirs.abs().max().clamp_min(1e-12)
    DIFFS[what] = ((ours - theirs).abs().max() / scale).item()
    assert DIFFS[what] < RTOL, f"{what}: ours {ours.flatten()[:4]}, theirs {theirs.flatten()[:4]}"


def test_cocoop_equals_released(vit_b16, released):
    ref, names = released["cocoop"], released["inputs"]["classnames"]
    learner = ConditionalPromptLearner(vit_b16.encoder, vit_b16.tokenizer, names, vis_dim=512, n_ctx=4,
                                       ctx_init="a photo of a")
    g = torch.Generator().manual_seed(2)  # the fixture's rule for the meta-net's weights
    with torch.no_grad():
        for name, p in sorted(learner.named_parameters()):
            if name.startswith("meta_net"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    close(learner.ctx[0, :8], ref["ctx_init_first8"], "CoCoOp ctx init")
    close(F.normalize(vit_b16.image_features, dim=-1)[0, :8], ref["image_features_norm_first8"], "CoCoOp image features")
    scale = vit_b16.model.logit_scale.exp()
    loss = F.cross_entropy(conditional_logits(learner, vit_b16.encoder, vit_b16.image_features, scale), vit_b16.labels)
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5)
    loss.backward()
    close(learner.ctx.grad, ref["grad_ctx"], "CoCoOp grad ctx")
    params = dict(learner.named_parameters())
    for name, want in ref["grad_meta_net"].items():
        grad = params[name].grad
        assert list(grad.shape) == want["shape"]
        assert grad.norm().item() == pytest.approx(want["norm"], rel=RTOL), name
        close(grad.flatten()[:16], want["first16"], f"CoCoOp grad {name}")
    with torch.no_grad():
        logits = conditional_logits(learner, vit_b16.encoder, vit_b16.image_features, scale, max_prompts=3)
    close(logits, ref["logits_eval"], "CoCoOp eval logits")


def test_kgcoop_equals_released(vit_b16, released):
    ref, names = released["kgcoop"], released["inputs"]["classnames"]
    learner = PromptLearner(vit_b16.encoder, vit_b16.tokenizer, names, n_ctx=4, ctx_init="a photo of a")
    close(learner.ctx[0, :8], ref["ctx_init_first8"], "KgCoOp ctx init")
    teacher = vit_b16.encoder.encode_tokenized(vit_b16.tokenizer(prompts_for(names, "EuroSAT")))
    close(teacher[:, :16], ref["teacher_fp32_first16"], "KgCoOp hand-crafted text features")
    text = F.normalize(vit_b16.encoder(*learner()), dim=-1)
    head = SimpleNamespace(logit_scale=vit_b16.model.logit_scale.exp(), normalize=CoOp.normalize)
    logits = CoOp.logits(head, vit_b16.image_features, text)
    close(logits, ref["logits"], "KgCoOp logits")
    score = knowledge_guided_score(text, teacher)
    ce = F.cross_entropy(logits, vit_b16.labels)
    assert score.item() == pytest.approx(ref["score"], rel=1e-4)
    assert ce.item() == pytest.approx(ref["ce"], rel=1e-5)
    loss = ce + 8.0 * score
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5)
    loss.backward()
    close(learner.ctx.grad, ref["grad_ctx"], "KgCoOp grad ctx")


def fill_prompts(learner):
    """The fixtures' rule for every prompt parameter but ctx: randn * 0.02 from Generator(2), in sorted order."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in sorted(learner.named_parameters()):
            if name != "ctx":
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def fixture_images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 224, 224)


def prompted_features(learner, vit_b16, images):
    """(image features, text features) of a deep-prompt learner, unnormalised."""
    first, text_deep, vision_deep = learner.deep_prompts()
    text = vit_b16.encoder(*learner(), text_deep)
    return encode_image_prompted(vit_b16.model.visual, images, first, vision_deep), text


def check_prompt_grads(learner, grads, what):
    """Each prompt parameter's gradient: its norm and first 16 values as the fixture has them."""
    params = dict(learner.named_parameters())
    assert set(grads) <= set(params)
    for name, want in grads.items():
        assert params[name].grad.norm().item() == pytest.approx(want["norm"], rel=RTOL), name
        close(params[name].grad.flatten()[:16], want["first16"], f"{what} grad {name}")


def ivlp_learner(vit_b16, names, c):
    return IndependentPromptLearner(vit_b16.encoder, vit_b16.tokenizer, names, vis_width=768,
                                    n_ctx_text=c["N_CTX_TEXT"], n_ctx_vision=c["N_CTX_VISION"] or 2,
                                    ctx_init="a photo of a", depth_text=c["PROMPT_DEPTH_TEXT"],
                                    depth_vision=c["PROMPT_DEPTH_VISION"])


@pytest.mark.parametrize("depth", [9, 3])
def test_maple_equals_released(vit_b16, released_maple, depth):
    ref, names = released_maple[f"depth{depth}"], released_maple["inputs"]["classnames"]
    learner = MultiModalPromptLearner(vit_b16.encoder, vit_b16.tokenizer, names, vis_width=768, n_ctx=2,
                                      ctx_init="a photo of a", depth=depth)
    assert [[n, list(p.shape)] for n, p in sorted(learner.named_parameters())] == ref["prompt_learner_parameters"]
    assert learner.tokenized_prompts.argmax(-1).tolist() == ref["tokenized_prompts_argmax"]
    close(learner.ctx[0, :8], ref["ctx_init_first8"], f"MaPLe-{depth} ctx init")
    fill_prompts(learner)
    images = fixture_images()

    def forward():
        image, text = prompted_features(learner, vit_b16, images)
        return image, text, vit_b16.model.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()

    image, text, logits = forward()
    loss = F.cross_entropy(logits, vit_b16.labels)
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5)
    loss.backward()
    close(learner.ctx.grad, ref["grad_ctx"], f"MaPLe-{depth} grad ctx")
    check_prompt_grads(learner, ref["grads"], f"MaPLe-{depth}")
    close(image[0, :8], ref["image_features_first8"], f"MaPLe-{depth} image features")
    close(text[0, :8], ref["text_features_first8"], f"MaPLe-{depth} text features")
    close(logits, ref["logits"], f"MaPLe-{depth} logits")


@pytest.mark.parametrize("variant", ["2+2_depth12", "language_only"])
def test_ivlp_equals_released(vit_b16, variant):
    """IVLP's 2+2 config (prompts in all 12 layers of both encoders) and its language-only variant:
    loss, logits, features and every prompt's gradient equal the released CustomCLIP's."""
    with open(IVLP_FIXTURE) as f:
        released = json.load(f)
    ref, names = released[variant], released["classnames"]
    learner = ivlp_learner(vit_b16, names, ref["config"])
    assert [[n, list(p.shape)] for n, p in sorted(learner.named_parameters())] == ref["prompt_parameters"]
    close(learner.ctx[0, :8], ref["ctx_init_first8"], f"IVLP {variant} ctx init")
    fill_prompts(learner)
    image, text = prompted_features(learner, vit_b16, fixture_images())
    logits = vit_b16.model.logit_scale.exp() * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t()
    loss = F.cross_entropy(logits, vit_b16.labels)
    assert loss.item() == pytest.approx(ref["loss"], rel=1e-5)
    loss.backward()
    assert set(dict(learner.named_parameters())) == set(ref["grads"])
    check_prompt_grads(learner, ref["grads"], f"IVLP {variant}")
    close(image[0, :8], ref["image_features_first8"], f"IVLP {variant} image features")
    close(text[0, :8], ref["text_features_first8"], f"IVLP {variant} text features")
    close(logits, ref["logits"], f"IVLP {variant} logits")


def test_promptsrc_equals_released(vit_b16):
    """PromptSRC (4+4 tokens, depth 9, weights 25 and 10): the cross-entropy, the three
    self-regularising terms, the frozen teachers' logits and every prompt's gradient equal the
    released CustomCLIP's and forward_backward's."""
    from clipadapt.clip import IMAGENET_TEMPLATES
    with open(PROMPTSRC_FIXTURE) as f:
        ref = json.load(f)
    c, names = ref["config"], ref["classnames"]
    learner = ivlp_learner(vit_b16, names, c)
    assert [[n, list(p.shape)] for n, p in sorted(learner.named_parameters())] == ref["prompt_parameters"]
    fill_prompts(learner)
    with torch.no_grad():
        # the teachers: the mean over the 60 ImageNet templates of CLIP's text features (then unit norm),
        # and the unprompted image encoder
        total = sum(vit_b16.encoder.encode_tokenized(vit_b16.tokenizer(
            [t.format(n.replace("_", " ")) for n in names]), normalize=False) for t in IMAGENET_TEMPLATES)
        fixed = F.normalize(total / len(IMAGENET_TEMPLATES), dim=-1)
    images = fixture_images()
    scale = vit_b16.model.logit_scale.exp()
    with torch.no_grad():
        frozen = F.normalize(vit_b16.model.visual(images), dim=-1)
    image, text = (F.normalize(x, dim=-1) for x in prompted_features(learner, vit_b16, images))
    logits = scale * image @ text.t()
    terms = {"loss_ce": F.cross_entropy(logits, vit_b16.labels),
             **self_regularization(text, fixed, image, frozen, logits, scale * frozen @ fixed.t(),
                                   c["TEXT_LOSS_WEIGHT"], c["IMAGE_LOSS_WEIGHT"])}
    close(fixed[0, :8], ref["fixed_text_first8"], "PromptSRC fixed text features")
    close(scale * frozen @ fixed.t(), ref["zero_shot_logits"], "PromptSRC zero-shot logits")
    for name, value in terms.items():
        assert value.item() == pytest.approx(ref["terms"][name], rel=1e-4), name
    loss = sum(terms.values())
    assert loss.item() == pytest.approx(ref["terms"]["loss"], rel=1e-5)
    loss.backward()
    assert set(dict(learner.named_parameters())) == set(ref["grads"])
    check_prompt_grads(learner, ref["grads"], "PromptSRC")
    close(logits, ref["logits"], "PromptSRC logits")


@pytest.fixture(scope="module", autouse=True)
def print_differences():
    yield
    for what, diff in DIFFS.items():
        print(f"{what}: max relative difference {diff:.1e}")
