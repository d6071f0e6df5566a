"""Pretrain the TinyUnified base model on ShapeWorld (the checkpoint that ships as ``tiny-base``).

    python tools/pretrain.py --out work_dirs/pretrain --steps 5000
    python tools/pretrain.py --out work_dirs/pretrain --steps 5000 \
        --export unigrpo_kit/checkpoints/tiny-base

Further pretraining of a finished checkpoint (the control for RL: same data, same wall time,
at the learning rate where the cosine schedule ended)::

    python tools/pretrain.py --init tiny-base --constant-lr --lr 1e-4 --warmup 0 \
        --minutes 6 --out work_dirs/further_pretrain

Four skills are taught from one data stream, in two sequence layouts that alternate by step:

- generation: ``<bos> prompt <think> reasoning </think> [noisy image]``: prompt -> reasoning (text
  loss) and reasoning -> image (flow-matching loss). A share of the rows ("caption rows") drop the
  reasoning (``<think> </think>``) and learn prompt -> image directly; like real text-to-image data
  their captions are literal, so riddle prompts never appear in caption rows: a riddle can be
  resolved only by reasoning, in text. A tenth of the caption rows have an empty prompt
  (``<bos> <think> </think>``), the unconditional branch of classifier-free guidance.
- reflection and editing: ``<bos> prompt <think> reasoning </think> [clean image] <look>
  instruction </look> [noisy edited image]``: the model looks at a scene (the right one, or one
  with one attribute wrong), says what to fix (or ``done``), and paints the fixed scene.

Deterministic from ``--seed``; resumes from its own checkpoint in ``--out`` (kill it at any time
and rerun the same command). Every ``--eval-every`` steps it scores the EMA model on the eval
prompts and appends minutes, step, strict and partial scores to ``curve.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unigrpo_kit.evaluation import evaluate
from unigrpo_kit.models.checkpoint import (
    CheckpointError,
    atomic_write_dir,
    load_model,
    load_tensor_pickle,
    save_model,
)
from unigrpo_kit.models.layout import ImageSegment, TextSegment
from unigrpo_kit.models.tiny_unified import TinyUnified, TinyUnifiedConfig
from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy
from unigrpo_kit.models.tokenizer import WordTokenizer
from unigrpo_kit.tasks.shapeworld import ShapeWorld

CAPTION_SHARE = 0.3  # rows of the generation layout that paint from the prompt alone
DONE_SHARE = 0.35  # edit rows that show the right scene, whose answer is "done"
PERTURB_TRIES = 8
NULL_PROMPT_SHARE = 0.1  # caption rows whose prompt is empty (CFG's unconditional branch)
SPLIT = "pretrain"  # the templates pretraining supervises (see tasks/shapeworld/lexicon.py)


def sample_sigma(n: int, generator: torch.Generator, shift: float = 3.0) -> torch.Tensor:
    """SD3's logit-normal noise levels (arXiv 2403.03206, mean 0, std 1), shifted toward noise
    by sigma' = shift sigma / (1 + (shift - 1) sigma). Flat shapes survive a lot of noise, so
    the layout is decided at sigma > 0.8, where plain logit-normal puts ~5% of its samples."""
    sigma = torch.sigmoid(torch.randn(n, generator=generator))
    return shift * sigma / (1 + (shift - 1) * sigma)


def text_rows(tokenizer, rows: list[list[int]], targets: list[list[bool]]):
    """Right-padded ids [B, n], mask [B, n] and target mask [B, n] (True = a token to predict)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    target = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, (row, tgt) in enumerate(zip(rows, targets)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
        target[i, : len(row)] = torch.tensor(tgt)
    return ids, mask, target


def prompt_and_reasoning(tokenizer, prompt_text: str, reasoning: str | None):
    """Ids of ``<bos> prompt <think> reasoning </think>`` and which of them are predicted."""
    head = [tokenizer.bos_id, *tokenizer.encode(prompt_text), tokenizer.think_id]
    if reasoning is None:
        return head + [tokenizer.end_think_id], [False] * (len(head) + 1)
    tail = [*tokenizer.encode(reasoning), tokenizer.end_think_id]
    return head + tail, [False] * len(head) + [True] * len(tail)


def generation_batch(task, tokenizer, batch_size, rng: random.Random):
    """Segments and targets of the generation layout (see the module docstring)."""
    prompts = task.sample_prompts(batch_size, split=SPLIT, generator=rng)
    rows, targets, images = [], [], []
    for prompt in prompts:
        caption = prompt.category != "riddle" and rng.random() < CAPTION_SHARE
        # A null prompt now and then gives classifier-free guidance its unconditional branch.
        text = "" if caption and rng.random() < NULL_PROMPT_SHARE else prompt.text
        row, tgt = prompt_and_reasoning(tokenizer, text, None if caption else prompt.reasoning)
        rows.append(row)
        targets.append(tgt)
        images.append(task.render(prompt.scene, jitter_rng=rng))
    ids, mask, target = text_rows(tokenizer, rows, targets)
    return [TextSegment(ids, mask)], [target], [torch.stack(images)], [torch.ones(batch_size)]


def edit_batch(task, tokenizer, batch_size, rng: random.Random):
    """Segments and targets of the reflection-and-editing layout."""
    prompts = task.sample_prompts(batch_size, split=SPLIT, generator=rng)
    rows1, targets1, rows2, targets2, shown, fixed, weight = [], [], [], [], [], [], []
    for prompt in prompts:
        row, tgt = prompt_and_reasoning(tokenizer, prompt.text, prompt.reasoning)
        rows1.append(row)
        targets1.append(tgt)
        scene, instruction = prompt.scene, "done"
        if rng.random() >= DONE_SHARE:
            # Many perturbations still satisfy a loose prompt (a colour it does not name);
            # retry so that this share of rows really shows a wrong scene.
            for _ in range(PERTURB_TRIES):
                scene, _ = task.perturb(prompt.scene, rng)
                instruction = task.edit_instruction(prompt, scene)
                if instruction != "done":
                    break
        target_scene = scene if instruction == "done" else task.apply_edit(scene, instruction)
        body = [*tokenizer.encode(instruction), tokenizer.end_look_id]
        rows2.append([tokenizer.look_id, *body])
        targets2.append([False] + [True] * len(body))
        shown.append(task.render(scene, jitter_rng=rng))
        fixed.append(task.render(target_scene, jitter_rng=rng))
        weight.append(0.0 if instruction == "done" else 1.0)
    ids1, mask1, target1 = text_rows(tokenizer, rows1, targets1)
    ids2, mask2, target2 = text_rows(tokenizer, rows2, targets2)
    shown_latents = torch.stack(shown) * 2 - 1
    segments = [
        TextSegment(ids1, mask1),
        ImageSegment(shown_latents, torch.zeros(batch_size)),
        TextSegment(ids2, mask2),
    ]
    return segments, [target1, target2], [torch.stack(fixed)], [torch.tensor(weight)]


def training_loss(model, segments, text_targets, images, image_weights, generator):
    """Next-token cross-entropy on target tokens plus flow-matching MSE on the noisy images."""
    noisy_segments, flow_targets = [], []
    for image in images:
        x0 = image * 2 - 1
        noise = torch.randn(x0.shape, generator=generator)
        sigma = sample_sigma(x0.shape[0], generator)
        s = sigma[:, None, None, None]
        noisy_segments.append(ImageSegment((1 - s) * x0 + s * noise, sigma, noisy=True))
        flow_targets.append(noise - x0)
    out = model(segments + noisy_segments)
    text_terms = []
    for logits, seg_target, seg in zip(
        out.text_logits, text_targets, [s for s in segments if s.kind == "text"]
    ):
        predict = seg_target[:, 1:]
        text_terms.append(
            F.cross_entropy(logits[:, :-1][predict], seg.ids[:, 1:][predict], reduction="sum")
        )
    n_targets = sum(int(t[:, 1:].sum()) for t in text_targets)
    text_loss = sum(text_terms) / max(n_targets, 1)
    image_loss = sum(
        ((v - target).pow(2).mean(dim=(1, 2, 3)) * w).sum() / w.sum().clamp(min=1)
        for v, target, w in zip(out.velocities, flow_targets, image_weights)
    )
    return text_loss, image_loss


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def build(args):
    task = ShapeWorld(resolution=args.resolution, seed=args.seed)
    tokenizer = WordTokenizer(task.vocabulary())
    banned = tokenizer.never_generated_ids
    config = TinyUnifiedConfig(
        vocab_size=len(tokenizer),
        d_model=args.d_model,
        n_layers=args.n_layers,
        n_heads=args.n_heads,
        image_size=args.resolution,
        patch_size=args.patch_size,
        banned_token_ids=banned,
    )
    torch.manual_seed(args.seed)
    model = TinyUnified(config, attention_backend="sdpa")
    if args.init is not None:
        model, start_tokenizer = load_model(args.init, attention_backend="sdpa")
        if start_tokenizer.words != tokenizer.words:
            raise SystemExit(f"error: --init {args.init} has another vocabulary than this world")
        config = model.config
    ema = TinyUnified(config, attention_backend="sdpa")
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    return task, tokenizer, model, ema


def save_state(out: Path, model, ema, tokenizer, optimizer, step, elapsed, rng, generator):
    def write(tmp: Path) -> None:
        torch.save(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "elapsed": elapsed,
                "rng": rng.getstate(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "state.pt",
        )

    atomic_write_dir(out / "last", write)
    save_model(ema, tokenizer, out / "ema", extra={"step": step})


def load_state(file: Path) -> dict:
    """A state written by :func:`save_state`, read with ``torch.load(weights_only=True)``
    (tensors and plain containers only: a planted pickle cannot run code); a SystemExit with
    one line naming the file if it is refused or unreadable."""
    try:
        return load_tensor_pickle(file)
    except CheckpointError as error:
        raise SystemExit(f"error: {error}") from None
    except Exception as error:  # a truncated or corrupt file
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise SystemExit(
            f"error: {file} is unreadable ({first}); remove it to start again"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("work_dirs/pretrain"))
    parser.add_argument("--steps", type=int, default=9000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--patch-size", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--n-heads", type=int, default=4)
    parser.add_argument(
        "--edit-every", type=int, default=3, help="every k-th step is an edit batch"
    )
    parser.add_argument(
        "--init", default=None, help="start from this checkpoint (folder or tiny-base), not random"
    )
    parser.add_argument(
        "--constant-lr", action="store_true", help="keep --lr after warm-up (no cosine decay)"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="also stop after this much training time"
    )
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=500, help="0: never")
    parser.add_argument("--eval-prompts", type=int, default=140)
    parser.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads (results are deterministic for a given count; on a machine busy with "
        "other work, 1 avoids thread contention)",
    )
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        help="copy the final EMA checkpoint here (e.g. unigrpo_kit/checkpoints/tiny-base)",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    task, tokenizer, model, ema = build(args)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.01
    )
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    step, elapsed = 0, 0.0
    args.out.mkdir(parents=True, exist_ok=True)
    state_file = args.out / "last" / "state.pt"
    if state_file.exists():
        state = load_state(state_file)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        rng.setstate(state["rng"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min)", flush=True)
    (args.out / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}))

    log = open(args.out / "log.jsonl", "a")
    curve = open(args.out / "curve.jsonl", "a")

    def done() -> bool:
        return step >= args.steps or (args.minutes is not None and elapsed >= 60 * args.minutes)

    while not done():
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = (
                args.lr * min(1.0, (step + 1) / max(args.warmup, 1))
                if args.constant_lr
                else lr_at(step, args.steps, args.lr, args.warmup)
            )
        make = edit_batch if step % args.edit_every == args.edit_every - 1 else generation_batch
        segments, text_targets, images, weights = make(task, tokenizer, args.batch_size, rng)
        text_loss, image_loss = training_loss(
            model, segments, text_targets, images, weights, generator
        )
        loss = text_loss + image_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), model.parameters()):
                p_ema.lerp_(p, 1 - args.ema)
        step += 1
        elapsed += time.perf_counter() - start
        if step % 50 == 0:
            record = {
                "step": step,
                "minutes": round(elapsed / 60, 2),
                "layout": make.__name__,
                "text_loss": round(text_loss.item(), 4),
                "image_loss": round(image_loss.item(), 4),
                "grad_norm": round(grad_norm.item(), 3),
            }
            log.write(json.dumps(record) + "\n")
            log.flush()
            print(record, flush=True)
        if step % args.save_every == 0 or done():
            save_state(args.out, model, ema, tokenizer, optimizer, step, elapsed, rng, generator)
        if args.eval_every > 0 and (step % args.eval_every == 0 or done()):
            # The EMA lags the weights early on (it still holds the random initialisation), so
            # both are scored; the EMA is what ships.
            scores = evaluate(
                TinyUnifiedPolicy.from_parts(ema, tokenizer), num_prompts=args.eval_prompts
            )
            raw = evaluate(
                TinyUnifiedPolicy.from_parts(model, tokenizer), num_prompts=args.eval_prompts
            )
            scores.update({f"raw/{k}": v for k, v in raw.items()})
            curve.write(
                json.dumps({"step": step, "minutes": round(elapsed / 60, 2), **scores}) + "\n"
            )
            curve.flush()
            print({"eval": scores}, flush=True)
    if args.export is not None:
        save_model(
            ema, tokenizer, args.export, extra={"step": step, "pretrain_minutes": elapsed / 60}
        )
        print(f"exported {args.export}", flush=True)


if __name__ == "__main__":
    main()
