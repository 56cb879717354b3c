"""The deep-prompt mechanism (clipadapt/clip/deep_prompts.py): without prompts both encoders give
open_clip's own features exactly; a prompt replaces exactly the tokens it should before exactly the
layer it is given for (checked against the blocks run by hand); a ResNet gets one clear line."""
import pytest
import torch

from clipadapt.clip import DeepPromptError, TextEncoder, check_prompted_vision, encode_image_prompted, load_clip
from clipadapt.clip.deep_prompts import TEXT_SLOT, VISION_SLOT, replace_tokens, run_blocks


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer, _ = load_clip("tiny-vit", pretrained=False)
    return model, tokenizer


def test_no_prompts_give_the_unprompted_encoders_exactly(tiny):
    model, tokenizer = tiny
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(encode_image_prompted(model.visual, images), model.encode_image(images))
        assert torch.equal(encode_image_prompted(model.visual, images, None, [None, None]), model.encode_image(images))
        tokens = tokenizer(["a photo of a dog.", "a red triangle."])
        encoder = TextEncoder(model)
        plain = encoder(encoder.embed(tokens), tokens)
        assert torch.equal(encoder(encoder.embed(tokens), tokens, [None, None, None]), plain)
        torch.testing.assert_close(plain, model.encode_text(tokens), rtol=1e-5, atol=1e-6)


def test_replace_tokens_by_hand():
    x = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)  # (N, L, width), batch first
    p = torch.tensor([[-1.], [-2.]])
    text = replace_tokens(x, p, TEXT_SLOT, seq_dim=1)
    assert text[:, :, 0].tolist() == [[0, -1, -2, 3, 4], [5, -1, -2, 8, 9]]
    vision = replace_tokens(x, p, VISION_SLOT, seq_dim=1)
    assert vision[:, :, 0].tolist() == [[0, 1, 2, -1, -2], [5, 6, 7, -1, -2]]
    seq_first = replace_tokens(x.transpose(0, 1), p, TEXT_SLOT, seq_dim=0)
    assert torch.equal(seq_first.transpose(0, 1), text)


def test_deep_prompt_enters_before_its_layer_only(tiny):
    """run_blocks with a prompt before layer 1 (and one past the last layer, unused) = the blocks run one by
    one with the last tokens replaced by hand."""
    model, _ = tiny
    transformer = model.visual.transformer
    assert len(transformer.resblocks) == 2
    x = torch.randn(2, 7, model.visual.class_embedding.shape[0])
    p1, p2 = torch.randn(2, x.shape[-1]), torch.randn(2, x.shape[-1])
    batch_first = getattr(transformer, "batch_first", False)

    def block(i, h):
        out = transformer.resblocks[i](h if batch_first else h.transpose(0, 1))
        return out if batch_first else out.transpose(0, 1)

    with torch.no_grad():
        h = block(0, x)
        want = block(1, torch.cat([h[:, :-2], p1.expand(2, -1, -1)], dim=1))
        got = run_blocks(transformer, x, [None, p1, p2], slot=VISION_SLOT)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        # and a prompt is not ignored: another one before layer 1 changes the output
        assert not torch.allclose(run_blocks(transformer, x, [None, p2], slot=VISION_SLOT), got)
        # the text slot: tokens 1..n before layer 1, with the causal mask
        mask = model.attn_mask[:7, :7]
        unprompted = run_blocks(model.transformer, x, [None], attn_mask=mask)
        tb = model.transformer
        tbf = getattr(tb, "batch_first", False)
        h = tb.resblocks[0](x if tbf else x.transpose(0, 1), attn_mask=mask)
        h = h if tbf else h.transpose(0, 1)
        h = torch.cat([h[:, :1], p1.expand(2, -1, -1), h[:, 3:]], dim=1)
        for blk in tb.resblocks[1:]:
            h = blk(h if tbf else h.transpose(0, 1), attn_mask=mask)
            h = h if tbf else h.transpose(0, 1)
        torch.testing.assert_close(run_blocks(tb, x, [None, p1], attn_mask=mask), h, rtol=0, atol=0)
        assert not torch.allclose(unprompted, h)


def test_first_layer_vision_prompts_are_appended_before_ln_pre(tiny):
    model, _ = tiny
    visual, images = model.visual, torch.randn(2, 3, 32, 32)
    first = torch.randn(3, visual.class_embedding.shape[0])
    with torch.no_grad():
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        x = torch.cat([visual.class_embedding.expand(2, 1, -1), x], dim=1) + visual.positional_embedding
        x = visual.ln_pre(torch.cat([x, first.expand(2, -1, -1)], dim=1))
        x = visual.transformer(x if getattr(visual.transformer, "batch_first", False) else x.transpose(0, 1))
        x = x if getattr(visual.transformer, "batch_first", False) else x.transpose(0, 1)
        want = visual.ln_post(x[:, 0]) @ visual.proj
        torch.testing.assert_close(encode_image_prompted(visual, images, first), want, rtol=1e-5, atol=1e-6)


def test_a_resnet_gets_one_clear_line():
    model, _, _ = load_clip("tiny-rn", pretrained=False)
    with pytest.raises(DeepPromptError, match=r"^Vision prompts need a ViT image encoder; this backbone's is a "
                                              r"ModifiedResNet .*Use a ViT backbone"):
        check_prompted_vision(model.visual)
