"""Speed and memory, measured side by side in one run: reference-style execution vs ours.

    python benchmarks/speed.py                      # on a CUDA machine: ViT-B/16, full sizes
    python benchmarks/speed.py --quick              # small sizes (CPU smoke run)
    python benchmarks/speed.py --json out.json --sections encoder coop_step base2new

Sections (random weights: speed does not depend on weight values):
  encoder   image-encoder throughput: open_clip under plain autocast (fp32 weights) vs ours
            (weights in bf16, optional torch.compile).
  coop_step one CoOp training step on 1000 classes, batch 32: reference-style (image encoder every
            step, all prompts at 77 tokens) vs ours (cached image features, cut prompts); time and
            peak memory.
  cocoop_step one CoCoOp training step (batch --cocoop-batch, default the released 1), at each of
            --step-classes: reference-style (image encoder every step, B x n_cls prompts at 77 tokens in one
            pass, as the released code) vs ours (cached image features, prompts cut to the longest EOT);
            and one evaluation batch of 100 images (reference: all 100 x n_cls prompts in one pass; ours:
            passes of EVAL_TEXT_BATCH prompts), time and peak memory.
  maple_step one MaPLe training step (batch 4, depth 9): the prompted image encoder runs in both; the
            text side at 77 tokens (reference) vs cut (ours).
  base2new  a full base-to-new run (train on base, test base, test new) per trainer through
            train.py on real EuroSAT (../shared/data): reference-style (FEATURES.CACHE False,
            MODEL.CUT_TEXT_TOKENS False) vs ours (cold and warm feature cache), wall time and the
            accuracies of both.
Prints a markdown table of ratios and writes JSON.
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)

from clipadapt.clip import PromptLearner, TextEncoder, compute_dtype, load_clip  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup, iters):
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def json_safe(obj):
    """`obj` with NaN (a measure that does not apply, e.g. peak memory on a CPU) as null: strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def peak_memory(fn, device):
    if device.type != "cuda":
        return float("nan")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated() / 2**30


def low_precision(device):
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def bench_encoder(args, device):
    batch = args.encoder_batch
    size = 224 if not args.quick else 32
    arch = args.arch if not args.quick else "tiny-vit"
    images = torch.randn(batch, 3, size, size, device=device)

    plain, _, _ = load_clip(arch, pretrained=False, device=device, prec="fp32")
    def run_plain():
        with torch.no_grad(), torch.autocast(device.type, dtype=low_precision(device), enabled=device.type == "cuda"):
            plain.encode_image(images)
    t_plain = timed(run_plain, device, 2, args.iters)
    del plain

    ours, _, _ = load_clip(arch, pretrained=False, device=device, prec="bf16" if device.type == "cuda" else "fp32")
    visual = torch.compile(ours.visual) if args.compile else ours.visual
    x = images.to(compute_dtype(ours.visual))
    def run_ours():
        with torch.no_grad():
            visual(x)
    t_ours = timed(run_ours, device, 3 if args.compile else 2, args.iters)
    return {"plain_images_per_s": batch / t_plain, "ours_images_per_s": batch / t_ours, "speedup": t_plain / t_ours}


def imagenet_like_classnames(n):
    path = osp.join(osp.dirname(REPO), "shared", "data", "splits", "imagenet_classnames.txt")
    if osp.exists(path):
        with open(path) as f:
            names = [line.strip().split(" ", 1)[1] for line in f if line.strip()]
        return (names * (n // len(names) + 1))[:n]
    return [f"class number {i} of many" for i in range(n)]


def bench_coop_step(args, device):
    arch = args.arch if not args.quick else "tiny-vit"
    n_cls = args.n_classes if not args.quick else 100
    size = 224 if not args.quick else 32
    batch = 32
    model, tokenizer, _ = load_clip(arch, pretrained=False, device=device,
                                    prec="bf16" if device.type == "cuda" else "fp32")
    names = imagenet_like_classnames(n_cls)
    images = torch.randn(batch, 3, size, size, device=device, dtype=compute_dtype(model.visual))
    labels = torch.randint(0, n_cls, (batch,), device=device)
    cached = torch.randn(batch, model.visual.output_dim, device=device)

    def make_step(cut, use_cache):
        encoder = TextEncoder(model, cut=cut)
        learner = PromptLearner(encoder, tokenizer, names, ctx_init="a photo of a").to(device)
        optim = torch.optim.SGD(learner.parameters(), lr=2e-3)

        def step():
            with torch.no_grad():
                feats = cached if use_cache else model.encode_image(images).float()
            text = encoder(*learner()).float()
            logits = 100 * torch.nn.functional.normalize(feats, dim=-1) @ torch.nn.functional.normalize(text, dim=-1).t()
            loss = torch.nn.functional.cross_entropy(logits, labels)
            optim.zero_grad()
            loss.backward()
            optim.step()
        return step

    ref, ours = make_step(cut=False, use_cache=False), make_step(cut=True, use_cache=True)
    ref_ms, ours_ms = 1000 * timed(ref, device, 1, args.iters), 1000 * timed(ours, device, 1, args.iters)
    m_ref, m_ours = peak_memory(ref, device), peak_memory(ours, device)
    # the ratio of the reported numbers (t_ref / t_ours can differ from it in the last bit)
    return {"n_classes": n_cls, "ref_ms": ref_ms, "ours_ms": ours_ms, "speedup": ref_ms / ours_ms,
            "ref_peak_gib": m_ref, "ours_peak_gib": m_ours, "memory_ratio": m_ours / m_ref if m_ref == m_ref else None}


def step_setup(args, device):
    arch = args.arch if not args.quick else "tiny-vit"
    size = 224 if not args.quick else 32
    model, tokenizer, _ = load_clip(arch, pretrained=False, device=device,
                                    prec="bf16" if device.type == "cuda" else "fp32")
    return model, tokenizer, size


def measure(ref, ours, device, iters):
    """Time (ms) and peak memory (GiB) of two callables, side by side."""
    ref_ms, ours_ms = 1000 * timed(ref, device, 1, iters), 1000 * timed(ours, device, 1, iters)
    m_ref, m_ours = peak_memory(ref, device), peak_memory(ours, device)
    return {"ref_ms": ref_ms, "ours_ms": ours_ms, "speedup": ref_ms / ours_ms, "ref_peak_gib": m_ref,
            "ours_peak_gib": m_ours, "memory_ratio": m_ours / m_ref if m_ref == m_ref else None}


def step_classes(args):
    return args.step_classes or ([20] if args.quick else [100, 1000])


def bench_cocoop_step(args, device):
    from trainers.cocoop import ConditionalPromptLearner, conditional_logits
    model, tokenizer, size = step_setup(args, device)
    dim = model.visual.output_dim
    batch = args.cocoop_batch
    results = {}
    for n_cls in step_classes(args):
        names = imagenet_like_classnames(n_cls)
        images = torch.randn(batch, 3, size, size, device=device, dtype=compute_dtype(model.visual))
        labels = torch.randint(0, n_cls, (batch,), device=device)
        cached = torch.randn(batch, dim, device=device)

        def make(cut, use_cache, max_prompts=None, eval_images=None):
            encoder = TextEncoder(model, cut=cut)
            learner = ConditionalPromptLearner(encoder, tokenizer, names, vis_dim=dim, n_ctx=4,
                                               ctx_init="a photo of a").to(device)
            optim = torch.optim.SGD(learner.parameters(), lr=2e-3)

            def step():
                with torch.no_grad():
                    feats = cached if use_cache else model.encode_image(images).float()
                loss = torch.nn.functional.cross_entropy(
                    conditional_logits(learner, encoder, feats, model.logit_scale.exp().float()), labels)
                optim.zero_grad()
                loss.backward()
                optim.step()

            def evaluate():
                with torch.no_grad():
                    feats = eval_images if use_cache else model.encode_image(eval_images).float()
                    conditional_logits(learner, encoder, feats, model.logit_scale.exp().float(), max_prompts)
            return step if eval_images is None else evaluate

        row = measure(make(False, False), make(True, True), device, args.iters)
        if device.type == "cuda" or args.quick:  # 100 x n_cls prompts: minutes per batch on a CPU at full size
            n_eval = 100
            eval_images = torch.randn(n_eval, 3, size, size, device=device, dtype=compute_dtype(model.visual))
            eval_cached = torch.randn(n_eval, dim, device=device)
            ev = measure(make(False, False, None, eval_images), make(True, True, args.eval_text_batch, eval_cached),
                         device, 1)
            row["eval"] = ev
        results[str(n_cls)] = row
    return {"batch": batch, "per_classes": results}


def bench_maple_step(args, device):
    from trainers.maple import MultiModalPromptLearner
    from clipadapt.clip import encode_image_prompted, vision_width
    model, tokenizer, size = step_setup(args, device)
    depth = min(9, len(model.visual.transformer.resblocks), len(model.transformer.resblocks))
    batch = 4
    results = {}
    for n_cls in step_classes(args):
        names = imagenet_like_classnames(n_cls)
        images = torch.randn(batch, 3, size, size, device=device, dtype=compute_dtype(model.visual))
        labels = torch.randint(0, n_cls, (batch,), device=device)

        def make(cut):
            encoder = TextEncoder(model, cut=cut)
            learner = MultiModalPromptLearner(encoder, tokenizer, names, vision_width(model.visual), n_ctx=2,
                                              depth=depth).to(device)
            optim = torch.optim.SGD(learner.parameters(), lr=3.5e-3)

            def step():
                first, text_deep, vision_deep = learner.deep_prompts()
                text = encoder(*learner(), text_deep).float()
                image = encode_image_prompted(model.visual, images, first, vision_deep).float()
                logits = 100 * torch.nn.functional.normalize(image, dim=-1) @ \
                    torch.nn.functional.normalize(text, dim=-1).t()
                loss = torch.nn.functional.cross_entropy(logits, labels)
                optim.zero_grad()
                loss.backward()
                optim.step()
            return step

        results[str(n_cls)] = measure(make(False), make(True), device, args.iters)
    return {"batch": batch, "depth": depth, "per_classes": results}


def run_protocol(trainer, cfg_name, root, out, extra, env):
    accs = {}
    common = ["--root", root, "--seed", "1", "--trainer", trainer, "--dataset-config-file",
              "configs/datasets/eurosat.yaml", "--config-file", f"configs/trainers/{trainer}/{cfg_name}.yaml"]
    trains = trainer != "ZeroshotCLIP"
    start = time.perf_counter()
    for sub in ("base", "new"):
        args = common + ["--output-dir", osp.join(out, f"{trainer}_{sub}")]
        if sub == "new" and trains:
            epochs = next(e for k, e in zip(extra[::2], extra[1::2]) if k == "OPTIM.MAX_EPOCH")
            args += ["--model-dir", osp.join(out, f"{trainer}_base"), "--load-epoch", str(epochs)]
        if sub == "new" or not trains:
            args.append("--eval-only")
        proc = subprocess.run([sys.executable, "train.py", *args, "DATASET.NUM_SHOTS", "16",
                               "DATASET.SUBSAMPLE_CLASSES", sub, *extra], cwd=REPO, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{trainer} {sub} failed:\n{proc.stderr[-2000:]}")
        accs[sub] = float(re.findall(r"\* accuracy: ([\d.]+)%", proc.stdout)[-1])
    return time.perf_counter() - start, accs


def bench_base2new(args, device):
    root = osp.join(osp.dirname(REPO), "shared", "data")
    if not osp.isdir(osp.join(root, "eurosat")):
        return {"skipped": "../shared/data/eurosat is absent"}
    arch = args.arch if not args.quick else "tiny-vit"
    size = "(224,224)" if not args.quick else "(32,32)"
    epochs = str(args.epochs if not args.quick else 2)
    cache = tempfile.mkdtemp(prefix="bench-cache-")
    out = tempfile.mkdtemp(prefix="bench-out-")
    env = dict(os.environ, CLIPADAPT_CACHE=cache)
    results = {}
    base = ["MODEL.BACKBONE.NAME", arch, "MODEL.BACKBONE.PRETRAINED", "False", "INPUT.SIZE", size,
            "OPTIM.MAX_EPOCH", epochs, "DATALOADER.NUM_WORKERS", str(args.workers)]
    try:
        for trainer, cfg_name in args.trainers:
            ref_t, ref_acc = run_protocol(trainer, cfg_name, root, osp.join(out, "ref"), base + [
                "FEATURES.CACHE", "False", "MODEL.CUT_TEXT_TOKENS", "False"], env)
            cold_t, cold_acc = run_protocol(trainer, cfg_name, root, osp.join(out, "cold"), base, env)
            warm_t, warm_acc = run_protocol(trainer, cfg_name, root, osp.join(out, "warm"), base, env)
            results[trainer] = {"ref_s": ref_t, "ours_cold_s": cold_t, "ours_warm_s": warm_t,
                                "speedup_cold": ref_t / cold_t, "speedup_warm": ref_t / warm_t,
                                "ref_acc": ref_acc, "ours_acc": cold_acc, "ours_warm_acc": warm_acc}
            shutil.rmtree(cache, ignore_errors=True)  # each trainer starts cold
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return results


def time_and_memory_rows(what, r):
    """The time row of a `measure` result, and its peak-memory row where memory was measured."""
    rows = [f"| {what} (ms) | {r['ref_ms']:.1f} | {r['ours_ms']:.1f} | {r['speedup']:.2f}x faster |"]
    if r.get("memory_ratio"):
        rows.append(f"| {what}, peak memory (GiB) | {r['ref_peak_gib']:.2f} | {r['ours_peak_gib']:.2f} "
                    f"| {r['memory_ratio']:.2f} of reference |")
    return rows


def markdown(report):
    rows = ["| measure | reference-style | ours | ratio |", "|---|---|---|---|"]
    enc = report.get("encoder")
    if enc:
        rows.append(f"| image encoder (images/s) | {enc['plain_images_per_s']:.0f} | {enc['ours_images_per_s']:.0f} "
                    f"| {enc['speedup']:.2f}x |")
    step = report.get("coop_step")
    if step:
        rows.append(f"| CoOp step, {step['n_classes']} classes, batch 32 (ms) | {step['ref_ms']:.1f} | {step['ours_ms']:.1f} "
                    f"| {step['speedup']:.2f}x faster |")
        if step.get("memory_ratio"):
            rows.append(f"| CoOp step peak memory (GiB) | {step['ref_peak_gib']:.2f} | {step['ours_peak_gib']:.2f} "
                        f"| {step['memory_ratio']:.2f} of reference |")
    for name, label in (("cocoop_step", "CoCoOp"), ("maple_step", "MaPLe")):
        section = report.get(name)
        for n_cls, r in ((section or {}).get("per_classes") or {}).items():
            rows += time_and_memory_rows(f"{label} step, {n_cls} classes, batch {section['batch']}", r)
            if r.get("eval"):
                rows += time_and_memory_rows(f"{label} evaluation, 100 images x {n_cls} classes", r["eval"])
    for trainer, r in (report.get("base2new") or {}).items():
        if trainer == "skipped":
            rows.append(f"| base2new | skipped: {r} | | |")
            continue
        rows.append(f"| base2new {trainer} wall (s), cold / warm cache | {r['ref_s']:.1f} | {r['ours_cold_s']:.1f} / "
                    f"{r['ours_warm_s']:.1f} | {r['speedup_cold']:.2f}x / {r['speedup_warm']:.2f}x |")
        rows.append(f"| base2new {trainer} accuracy base / new (%) | {r['ref_acc']['base']:.1f} / {r['ref_acc']['new']:.1f} "
                    f"| {r['ours_acc']['base']:.1f} / {r['ours_acc']['new']:.1f} | |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="ViT-B/16")
    parser.add_argument("--quick", action="store_true", help="tiny model and sizes (CPU smoke run)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our image encoder")
    parser.add_argument("--encoder-batch", type=int, default=256)
    parser.add_argument("--n-classes", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each base2new run")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--step-classes", type=int, nargs="+",
                        help="class counts of the cocoop_step and maple_step sections (default 100 1000; --quick: 20)")
    parser.add_argument("--cocoop-batch", type=int, default=1, help="CoCoOp's training batch (released: 1)")
    parser.add_argument("--eval-text-batch", type=int, default=2000, help="our CoCoOp prompts per evaluation pass")
    parser.add_argument("--sections", nargs="+", default=["encoder", "coop_step", "cocoop_step", "maple_step",
                                                          "base2new"])
    parser.add_argument("--trainers", nargs="+", default=["ZeroshotCLIP:vit_b16", "CoOp:vit_b16_ctxv1"],
                        help="TRAINER:CONFIG pairs for the base2new section")
    parser.add_argument("--json", default="benchmark.json")
    args = parser.parse_args(argv)
    args.trainers = [tuple(t.split(":")) for t in args.trainers]
    device = torch.device(args.device)
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "quick": args.quick}
    benches = {"encoder": bench_encoder, "coop_step": bench_coop_step, "cocoop_step": bench_cocoop_step,
               "maple_step": bench_maple_step, "base2new": bench_base2new}
    for name in args.sections:
        print(f"== {name}", flush=True)
        report[name] = benches[name](args, device)
        print(json.dumps(json_safe(report[name]), indent=1), flush=True)
    print(f"\nDevice: {report['device']}, torch {report['torch']}, {report['date']}\n")
    print(markdown(report))
    with open(args.json, "w") as f:
        json.dump(json_safe(report), f, indent=1, allow_nan=False)


if __name__ == "__main__":
    main()
