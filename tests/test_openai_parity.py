"""CoOp names build OpenAI's CLIP exactly: the project's image features, text features and logits
equal those of OpenAI's own code (the `openai-clip` package's clip/model.py, `build_model`) on
the same weights, for ViT-B/16, ViT-B/32 and RN50 and each way of giving the weights: the default
"openai" tag (open_clip's download pointed at a local file), a state-dict file, and a TorchScript
archive as `clip.load` downloads it. (An open_clip training checkpoint reads to the same state dict
as a state-dict file: tests/test_clip_backend.py.)

The weights are seeded random values of the real architectures, rounded to fp16 as OpenAI's
released weights are (OpenAI's build_model keeps weights in fp16; `.float()` then gives back the
same values, so both sides compute in fp32 on identical weights).

    python -m pytest -q tests/test_openai_parity.py -s     # -s prints the table of differences
"""

import open_clip
import open_clip.pretrained
import pytest
import torch

from clipadapt.clip import CUSTOM_TEMPLATES, IMAGENET_TEMPLATES_SELECT, TextEncoder, load_clip
from clipadapt.clip.weights import OPENAI_NON_WEIGHT_KEYS, read_torchscript_archive
from helpers import OPENAI_DIMS, load_openai_module, relative_difference, seeded_openai_state

PROMPTS = ["a photo of a dog.", "a centered satellite photo of Annual Crop Land.", "Würzburg café, 2 × 3!"]
RTOL = 1e-5


def openai_reference(openai_model_py, state):
    """OpenAI's own model on `state`, in fp32 as clip.load gives it on a CPU."""
    return openai_model_py.build_model({k: v.clone() for k, v in state.items()}).float().eval()


def openai_tokens(texts):
    """OpenAI's clip.tokenize: <start> BPE <end>, zero-padded to 77 (clip/clip.py, read not imported)."""
    tokenizer = load_openai_module("simple_tokenizer.py", "openai_clip_tokenizer").SimpleTokenizer()
    sot, eot = tokenizer.encoder["<|startoftext|>"], tokenizer.encoder["<|endoftext|>"]
    out = torch.zeros(len(texts), 77, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [sot] + tokenizer.encode(text) + [eot]
        out[i, :len(ids)] = torch.tensor(ids)
    return out


# Class names that exercise the tokenizer's cleaning (ftfy, HTML entities, accents, case, spacing, punctuation).
TRICKY_NAMES = ["crème brûlée", "jack-o'-lantern", "T-shirt", "Würzburg  Residence", "ApplyEyeMakeUp", "Abyssinian",
                "Annual Crop Land", "rock &amp; roll", "mÃ©tro", "sea_lion", "7-Up can", "Boeing 737-800",
                "face (easy)",
                "   leading and trailing   ", "“quoted”", "naïve café", "0.5 mm pencil", "x" * 120]


def test_tokenizer_equals_openai_clip_tokenize():
    """open_clip's tokenizer of the CoOp names gives OpenAI's clip.tokenize ids (truncated prompts
    aside: OpenAI raises on them) for every CoOp template and ensemble template."""
    tokenizer = load_clip("ViT-B/16", pretrained=False)[1]
    prompts = [t.format(n) for t in list(CUSTOM_TEMPLATES.values()) + IMAGENET_TEMPLATES_SELECT for n in TRICKY_NAMES]
    torch.testing.assert_close(tokenizer(prompts), openai_tokens(prompts), rtol=0, atol=0)


def write_torchscript_archive(model, path):
    """A TorchScript archive in the layout of OpenAI's released files: OpenAI's model traced
    (encode_image, encode_text, forward), its top-level class declaring input_resolution,
    context_length and vocab_size as buffers (as the released archives' code does), weights in fp16."""
    for key, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        model.__dict__.pop(key, None)  # a plain int attribute of OpenAI's model; a state entry in the archives
        model.register_buffer(key, torch.tensor(value))
    image, text = torch.zeros(1, 3, 224, 224), openai_tokens(["a"])
    traced = torch.jit.trace_module(model, {"encode_image": (image,), "encode_text": (text,),
                                    "forward": (image, text)}, check_trace=False)
    traced.half()
    traced.save(path)


def project_outputs(model, tokenizer, images):
    """Image features, text features (the project's cut text encoder, as trainers use it) and logits."""
    tokens = tokenizer(PROMPTS)
    encoder = TextEncoder(model)
    with torch.no_grad():
        image_features = model.encode_image(images)
        text_features = encoder(encoder.embed(tokens), tokens)
        full_text = model.encode_text(tokens)
    img = image_features / image_features.norm(dim=-1, keepdim=True)
    txt = text_features / text_features.norm(dim=-1, keepdim=True)
    return image_features, text_features, full_text, model.logit_scale.exp() * img @ txt.t()


ROWS = []


@pytest.fixture(scope="module", autouse=True)
def print_table():
    yield
    if ROWS:
        print("\n| backbone | weights given as | image features | text features (cut) | text features (open_clip) "
              "| logits |\n|---|---|---|---|---|---|")
        for row in ROWS:
            print("| " + " | ".join(row[:2]) + " | " + " | ".join(f"{v:.1e}" for v in row[2:]) + " |")


@pytest.fixture(scope="module")
def openai_files(openai_model_py, tmp_path_factory):
    """name -> the state dict, OpenAI's outputs on it, and the weights written as each kind of file."""
    made = {}

    def make(name):
        if name in made:
            return made[name]
        state = seeded_openai_state(openai_model_py, name)
        reference = openai_reference(openai_model_py, state)
        torch.manual_seed(1)
        images = torch.randn(2, 3, 224, 224)
        tokens = openai_tokens(PROMPTS)
        with torch.no_grad():
            want = {"image": reference.encode_image(images), "text": reference.encode_text(tokens),
                    "logits": reference(images, tokens)[0]}
        folder = tmp_path_factory.mktemp(name.replace("/", "-"))
        files = {"state-dict file": str(folder / "state_dict.pt"),
                 "TorchScript archive": str(folder / f"{name.replace('/', '-')}.pt"),  # clip.load's file name
                 "default tag": str(folder / "open_clip_model.safetensors")}  # what open_clip's hub download gives
        torch.save(state, files["state-dict file"])
        write_torchscript_archive(reference, files["TorchScript archive"])
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, files["default tag"])
        made[name] = dict(state=state, images=images, tokens=tokens, want=want, files=files)
        return made[name]

    return make


@pytest.mark.parametrize("name", list(OPENAI_DIMS))
def test_coop_names_equal_openai_clip(name, openai_files, monkeypatch):
    made = openai_files(name)
    images, tokens, want, files = made["images"], made["tokens"], made["want"], made["files"]
    downloads = []
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained",
                        lambda cfg, **kw: downloads.append(cfg) or files["default tag"])
    for how in ("default tag", "state-dict file", "TorchScript archive"):
        model, tokenizer, spec = load_clip(name, pretrained_tag="" if how == "default tag" else files[how])
        assert spec.arch.endswith("-quickgelu")
        blocks = list(model.transformer.resblocks) + list(getattr(getattr(model.visual, "transformer", None),
                                                                  "resblocks", []))
        assert len(blocks) == (24 if name.startswith("ViT") else 12)
        assert all(type(b.mlp.gelu).__name__ == "QuickGELU" for b in blocks)
        torch.testing.assert_close(tokenizer(PROMPTS), tokens, rtol=0, atol=0)
        image, text, full_text, logits = project_outputs(model, tokenizer, images)
        diffs = [relative_difference(image, want["image"]), relative_difference(text, want["text"]),
                 relative_difference(full_text, want["text"]), relative_difference(logits, want["logits"])]
        ROWS.append((name, how, *diffs))
        assert max(diffs) < RTOL, f"{name} from the {how}: relative differences {diffs}"
    # the default tag asked open_clip for OpenAI's file of this architecture
    assert len(downloads) == 1 and downloads[0]["url"].endswith(f"/{name.replace('/', '-')}.pt")


def test_torchscript_reader_equals_torch_jit_load(openai_files):
    """Our reader (no code run) gives what torch.jit.load gives on the same archive: the same keys
    in the same order, OpenAI's layout (the model's own keys plus OpenAI's three non-weight
    entries), the same fp16 tensors."""
    made = openai_files("ViT-B/32")
    path = made["files"]["TorchScript archive"]
    ours = read_torchscript_archive(path)
    theirs = torch.jit.load(path, map_location="cpu").state_dict()
    assert list(ours) == list(theirs)
    assert set(ours) == set(made["state"]) | set(OPENAI_NON_WEIGHT_KEYS)
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    for key, value in made["state"].items():
        assert torch.equal(ours[key], value), key
