"""CLIP loading, the cut text encoder and prompt construction."""
import pytest
import torch

from clipadapt.clip import PromptLearner, TextEncoder, load_clip, resolve_backbone


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer, spec = load_clip("tiny-vit", pretrained=False)
    return model, tokenizer, TextEncoder(model)


def test_cut_text_encoder_matches_full(tiny):
    model, tokenizer, encoder = tiny
    tokens = tokenizer(["a photo of a cat.", "a very small red triangle on a dark background.", "x"])
    full = model.encode_text(tokens)  # open_clip's own 77-token path
    cut = encoder(encoder.embed(tokens), tokens)
    torch.testing.assert_close(cut, full, rtol=1e-5, atol=1e-5)
    no_cut = TextEncoder(model, cut=False)
    torch.testing.assert_close(no_cut(encoder.embed(tokens), tokens), full, rtol=1e-5, atol=1e-5)


def test_prompt_learner_with_init_equals_handcrafted_prompt(tiny):
    model, tokenizer, encoder = tiny
    names = ["cat", "big dog"]
    learner = PromptLearner(encoder, tokenizer, names, ctx_init="a photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, 64)
    expected = model.encode_text(tokenizer([f"a photo of a {n}." for n in names]))
    torch.testing.assert_close(encoder(*learner()), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("position", ["middle", "front"])
def test_class_token_positions_place_the_name(tiny, position):
    model, tokenizer, encoder = tiny
    learner = PromptLearner(encoder, tokenizer, ["red fox"], n_ctx=4, position=position)
    prompts, tokenized = learner()
    name_emb = encoder.embed(tokenizer(["red fox"]))[0, 1:3]
    start = 1 + (2 if position == "middle" else 0)
    torch.testing.assert_close(prompts[0, start:start + 2], name_emb)
    torch.testing.assert_close(prompts[0, start + 2 + (2 if position == "middle" else 4)],
                               encoder.embed(tokenizer(["."]))[0, 1])


def test_ctx_shift_reaches_every_context_token_and_classnames_swap(tiny):
    _, tokenizer, encoder = tiny
    learner = PromptLearner(encoder, tokenizer, ["a", "b", "c"], n_ctx=3)
    shift = torch.randn(2, 64)
    prompts, _ = learner(class_idx=torch.tensor([0, 2]), ctx_shift=shift)
    torch.testing.assert_close(prompts[:, 1:4], learner.ctx.unsqueeze(0) + shift.unsqueeze(1))
    state = learner.state_dict()
    assert list(state) == ["ctx"]  # class-dependent buffers are never saved
    learner.set_classnames(["d", "e"])
    assert learner()[0].shape[0] == 2


def test_backbone_names_resolve():
    assert resolve_backbone("ViT-B/16").arch == "ViT-B-16"
    assert resolve_backbone("ViT-B/16").weights == "openai"
    assert resolve_backbone("RN50", pretrained=False).weights is None
    with pytest.raises(ValueError, match="Did you mean"):
        resolve_backbone("ViT-B/61")


@pytest.mark.parametrize("name,dim", [("ViT-B/16", 512), ("RN50", 1024)])
def test_real_architectures_build_without_weights(name, dim):
    model, tokenizer, spec = load_clip(name, pretrained=False)
    assert model.visual.output_dim == dim and spec.weights is None
    encoder = TextEncoder(model)
    tokens = tokenizer(["a photo of a dog."])
    torch.testing.assert_close(encoder(encoder.embed(tokens), tokens), model.encode_text(tokens), rtol=1e-4, atol=1e-4)
