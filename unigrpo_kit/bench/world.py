"""The bench's measurements on TinyUnified and ShapeWorld: the sizes, the inputs that every figure
shares, the two timed functions of each figure, and :func:`run`, which measures them all."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .config import bench_recipe
from .report import Figure, Report, ratio, summary
from .timing import device_name, peak_memory_mb, timed_pairs

if TYPE_CHECKING:
    import torch
    from mmengine.config import Config

TRAIN_MODE = "unified"
GUIDANCE_SCALE = 4.5
NOISE_LEVEL = 0.7


@dataclass(frozen=True)
class Sizes:
    """Rows per rollout, denoising steps N, text tokens T, timed rounds per figure."""

    batch: int = 32
    steps: int = 10
    tokens: int = 64
    repeats: int = 7

    @property
    def window(self) -> int:
        """SDE steps the windowed update trains: 3 of 10 (about 30 % for other N)."""
        return max(1, round(0.3 * self.steps))


QUICK = Sizes(batch=4, steps=3, tokens=8, repeats=2)


def load_or_random(checkpoint: str, device: torch.device):
    """(model, tokenizer, label, note): the checkpoint, or, where it does not exist, a randomly
    initialised TinyUnified with the default config over the ShapeWorld vocabulary."""
    import torch

    from unigrpo_kit.models.checkpoint import load_model
    from unigrpo_kit.models.tiny_unified import TinyUnified, TinyUnifiedConfig
    from unigrpo_kit.models.tokenizer import WordTokenizer
    from unigrpo_kit.tasks.shapeworld import ShapeWorld

    try:
        model, tokenizer = load_model(checkpoint, device=device)
        return model.eval(), tokenizer, checkpoint, None
    except FileNotFoundError as error:
        note = f"{error}: measured a randomly initialised TinyUnified (default config)"
    tok = WordTokenizer(ShapeWorld().vocabulary())
    banned = tok.never_generated_ids
    torch.manual_seed(0)
    model = TinyUnified(TinyUnifiedConfig(vocab_size=len(tok), banned_token_ids=banned))
    return model.to(device).eval(), tok, "random-init", note


class Bench:
    """The model, the inputs that every figure shares, and the timed functions."""

    def __init__(
        self, model, tokenizer, sizes: Sizes, device: torch.device, recipe: Config | None = None
    ):
        import torch

        from unigrpo_kit.devices import randn
        from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy, prompt_ids
        from unigrpo_kit.samplers.schedules import shifted_sigmas
        from unigrpo_kit.tasks.shapeworld import ShapeWorld

        self.model, self.tokenizer, self.sizes, self.device = model, tokenizer, sizes, device
        self.policy = TinyUnifiedPolicy.from_parts(model, tokenizer)
        self.recipe = recipe
        tok, batch = tokenizer, sizes.batch
        self.prompts = ShapeWorld().sample_prompts(batch, split="train", generator=0)
        ids, mask = prompt_ids(tok, [p.text for p in self.prompts], [tok.think_id])
        self.prompt_ids, self.prompt_mask = ids.to(device), mask.to(device)
        # What a unified rollout paints after: the prompt and its reasoning, cached once.
        texts = [f"{p.text} <think> {p.reasoning} </think>" for p in self.prompts]
        ids, mask = prompt_ids(tok, texts, [])
        with torch.no_grad():
            self.context = model.extend_text(None, ids.to(device), mask.to(device))[1]
        self.sigmas = shifted_sigmas(sizes.steps)
        # A CPU generator, as the trainer's: the rollouts timed here draw their noise on the CPU
        # and move it to the device, as training does.
        self.generator = torch.Generator().manual_seed(0)
        c = model.config
        shape = (batch, c.channels, c.image_size, c.image_size)
        self.latents = randn(shape, generator=self.generator, device=device)
        self.sigma = torch.full((batch,), 0.5, device=device)
        # T fixed word ids (the special tokens come first in the vocabulary) for the bare loop.
        first_word = len(tok) - len(tok.words)
        self.words = first_word + torch.arange(sizes.tokens, device=device) % len(tok.words)

    # ----------------------------------------------------------------- images
    def paint_sde(self, guidance=None):
        """An N-step rollout of the batch, the SDE (with log-probs) on every step."""
        import torch

        from unigrpo_kit.rollout.painter import paint
        from unigrpo_kit.samplers.flow import FlowSDE

        return paint(
            self.policy,
            self.context,
            self.sigmas,
            sampler=FlowSDE(NOISE_LEVEL),
            sde_mask=torch.ones(self.sizes.steps, dtype=torch.bool),
            generator=self.generator,
            guidance=guidance,
            num_rows=self.sizes.batch,
        )

    def paint_guided(self):
        """The same rollout with classifier-free guidance, null context included."""
        from unigrpo_kit.rollout.engine import guided

        null = self.policy.null_context(self.sizes.batch)
        return self.paint_sde(guided(self.policy, self.context, null, GUIDANCE_SCALE))

    def bare_velocities(self) -> None:
        """N velocity forward passes: the floor of an N-step rollout."""
        import torch

        with torch.no_grad():
            for _ in range(self.sizes.steps):
                self.model.velocity(self.context, self.latents, self.sigma)

    # ----------------------------------------------------------------- text
    def text_sampler(self):
        from unigrpo_kit.samplers.text import TextSampler

        # No stop token, so that every row makes exactly T tokens.
        return TextSampler(max_new_tokens=self.sizes.tokens, pad_token_id=self.tokenizer.pad_id)

    def generate(self, finish: bool = False):
        """T tokens with log-probs through the KV cache; with ``finish``, the cache after them."""
        session = self.policy.text_session(None)
        sample = self.text_sampler().generate(
            session, self.prompt_ids, self.prompt_mask, generator=self.generator
        )
        return session.finish(sample.tokens, sample.mask) if finish else sample

    def bare_decodes(self):
        """The prompt prefill and T cached one-token forward passes (the floor of T tokens);
        returns the cache after them."""
        import torch

        real = torch.ones(self.sizes.batch, 1, dtype=torch.bool, device=self.device)
        with torch.no_grad():
            cache = self.model.extend_text(None, self.prompt_ids, self.prompt_mask)[1]
            for word in self.words:
                ids = word.expand(self.sizes.batch, 1)
                cache = self.model.extend_text(cache, ids, real)[1]
        return cache

    def generate_without_cache(self):
        """T tokens, each from a full forward pass over the prompt and every token so far."""
        import torch

        sampler = self.text_sampler()
        ids, mask = self.prompt_ids, self.prompt_mask
        real = torch.ones(self.sizes.batch, 1, dtype=torch.bool, device=self.device)
        with torch.no_grad():
            for _ in range(self.sizes.tokens):
                logits = self.model.extend_text(None, ids, mask)[0]
                token, _ = sampler.sample_from_logits(logits[:, -1], self.generator)
                ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, real], 1)
        return ids

    # ----------------------------------------------------------------- training
    def trainer_and_batches(self):
        """A trainer built from the bench's recipe (the single-round recipe unless another was
        given; on a copy of the model), and one episode batch that its engine collected with
        every step an SDE step, twice: with all N steps trained, and with only a window of them
        (same tokens, latents and log-probs)."""
        import torch

        from unigrpo_kit.models.tiny_unified_policy import TinyUnifiedPolicy
        from unigrpo_kit.samplers.schedules import FixedWindow
        from unigrpo_kit.trainer import UniGRPOTrainer

        cfg = bench_recipe() if self.recipe is None else copy.deepcopy(self.recipe)
        cfg.rollout.mode = TRAIN_MODE
        cfg.rollout.num_steps = self.sizes.steps
        cfg.rollout.window = dict(type="FullWindow")
        cfg.algorithm.minibatch_size = self.sizes.batch
        policy = TinyUnifiedPolicy.from_parts(copy.deepcopy(self.model), self.tokenizer)
        trainer = UniGRPOTrainer(cfg, policy)
        full = trainer.engine.rollout(self.prompts, 1, generator=self.generator)
        full.advantages = torch.randn(len(full), generator=torch.Generator().manual_seed(1))
        full.advantages = full.advantages.to(self.device)
        window = FixedWindow(self.sizes.window).select(
            self.sizes.steps, generator=torch.Generator().manual_seed(0)
        )

        def windowed(segment):
            if segment.kind != "image":
                return segment
            return replace(segment, trajectory=segment.trajectory._replace(sde_mask=window))

        return trainer, replace(full, segments=[windowed(s) for s in full.segments]), full


def train_update(trainer, minibatch) -> None:
    """What the trainer does per minibatch: loss, backward, gradient clip, optimizer step."""
    trainer.update(trainer.loss(minibatch)[0])


def with_backend(model, backend: str, fn: Callable[[], object]) -> object:
    """``fn()`` with the model's attention backend set to ``backend``."""
    previous, model.attention_backend = model.attention_backend, backend
    try:
        return fn()
    finally:
        model.attention_backend = previous


def run(
    checkpoint: str = "tiny-base",
    sizes: Sizes = Sizes(),  # noqa: B008  (frozen)
    device: str | None = None,
    log: Callable[[str], None] = lambda name: None,
    recipe: Config | None = None,
) -> Report:
    """Measure every figure on ``device`` (CUDA when there is one, else CPU); ``log`` is told
    the name of each figure as its measurement starts. ``recipe``: the recipe whose trainer
    times ``ratio/window_train`` (default :func:`~unigrpo_kit.bench.config.bench_recipe`)."""
    import torch

    from unigrpo_kit.models.attention import select_backend, xformers_available

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, label, note = load_or_random(checkpoint, device)
    report = Report(notes=[note] if note else [])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    b = Bench(model, tokenizer, sizes, device, recipe)
    repeats, figures = sizes.repeats, report.figures

    log("overhead/image_rollout")
    rollout_s, floor_s = timed_pairs(b.paint_sde, b.bare_velocities, repeats, device)
    figures.append(ratio("overhead/image_rollout", rollout_s, floor_s))

    log("speedup/no_cfg")
    guided_s, plain_s = timed_pairs(b.paint_guided, b.paint_sde, repeats, device)
    figures.append(ratio("speedup/no_cfg", guided_s, plain_s))
    figures.append(summary("images_per_s", [sizes.batch / s for s in rollout_s + plain_s], "/s"))

    log("overhead/text_rollout")
    text_s, decode_s = timed_pairs(lambda: b.generate(finish=True), b.bare_decodes, repeats, device)
    figures.append(ratio("overhead/text_rollout", text_s, decode_s))
    per_s = [sizes.batch * sizes.tokens / s for s in text_s]
    figures.append(summary("tokens_per_s", per_s, "/s"))

    log("speedup/kv_cache")
    naive_s, cached_s = timed_pairs(b.generate_without_cache, b.generate, repeats, device)
    figures.append(ratio("speedup/kv_cache", naive_s, cached_s))

    log("ratio/window_train")
    trainer, windowed, full = b.trainer_and_batches()
    window_s, full_s = timed_pairs(
        lambda: train_update(trainer, windowed),
        lambda: train_update(trainer, full),
        repeats,
        device,
    )
    figures.append(ratio("ratio/window_train", window_s, full_s))
    figures.append(summary("train_step_s", window_s, "s"))

    if device.type == "cuda" and xformers_available():
        log("velocity forward: xformers vs sdpa")

        def velocity():
            with torch.no_grad():
                model.velocity(b.context, b.latents, b.sigma)

        xformers_s, sdpa_s = timed_pairs(
            lambda: with_backend(model, "xformers", velocity),
            lambda: with_backend(model, "sdpa", velocity),
            repeats,
            device,
        )
        figures.append(summary("velocity_ms/xformers", [s * 1e3 for s in xformers_s], "ms"))
        figures.append(summary("velocity_ms/sdpa", [s * 1e3 for s in sdpa_s], "ms"))
    elif device.type == "cuda":
        report.notes.append("xformers is not installed: its comparison with SDPA is skipped")

    peak = peak_memory_mb(device)
    figures.append(Figure("peak_memory_mb", peak, peak, peak, "MiB"))
    report.info = {
        "checkpoint": label,
        "device": device_name(device),
        "attention_backend": select_backend(model.attention_backend, device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
        "batch": sizes.batch,
        "steps": sizes.steps,
        "tokens": sizes.tokens,
        "repeats": sizes.repeats,
        "window": f"{sizes.window}/{sizes.steps}",
        "targets_apply": replace(sizes, repeats=Sizes.repeats) == Sizes(),
        "train_mode": TRAIN_MODE,
        "peak_memory": (
            "torch.cuda.max_memory_allocated"
            if device.type == "cuda"
            else "getrusage ru_maxrss (whole process)"
        ),
    }
    return report
