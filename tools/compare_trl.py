"""Time one text-GRPO step of TRL's ``GRPOTrainer`` and of the kit on the same tiny Qwen2.

The target this checks: on a tiny random Qwen2 (hidden 128, 4 layers, 4 heads, intermediate 512,
a vocabulary of a few hundred tokens), one GRPO step of 8 prompts x 8 completions x exactly 32
new tokens, no reference model (beta = 0), one epoch, one optimizer step over all 64
completions, on 2 CPU threads, takes the kit <= 0.8x the time TRL's ``GRPOTrainer`` takes, both
measured in one run of this script on the same machine.

What one run does:

1. builds the model (``transformers.Qwen2Config`` / ``Qwen2ForCausalLM``, random init, seeded,
   float32) and a byte-level BPE tokenizer of 512 tokens trained in memory with ``tokenizers``
   on problems of the kit's Arithmetic task (eos ``<|im_end|>``, pad ``<|endoftext|>``, a ChatML
   template), and saves both with ``save_pretrained`` into a temporary folder (or ``--out DIR``);
2. times TRL's ``GRPOTrainer`` on that folder, on prompts drawn from the same Arithmetic task
   that ``bench --text-model`` trains on and rendered as the kit's ``HFCausalLM`` renders them
   (chat template, one user message, generation prompt), given to TRL as plain strings (so the
   prompt lengths, which set much of the cost, match), timing each step with a
   ``TrainerCallback`` (``on_step_begin`` to ``on_step_end``: generation, reward, loss,
   backward, grad clipping and the optimizer step); drops the warm-up step(s) and keeps the
   median of 7 quiet steps (see below);
3. runs ``python -m unigrpo_kit.cli bench --text-model DIR --json`` in a subprocess with the same
   interpreter and reads ``text_grpo_step_s``;
4. prints a table and one JSON line (``--json``: the JSON line only).

The TRL configuration and why it is 8 x 8 x 32 with one optimizer step (read off TRL 1.16's
``GRPOConfig.__post_init__`` and ``GRPOTrainer``; TRL counts its batch sizes in completions, not
prompts):

* ``num_generations=8``, ``per_device_train_batch_size=64``, ``gradient_accumulation_steps=1``,
  one process: ``steps_per_generation`` defaults to ``gradient_accumulation_steps`` = 1 and
  ``generation_batch_size = 64 * 1 * 1 = 64``, so the ``RepeatSampler`` hands each step
  64 // 8 = 8 distinct prompts, each repeated 8 times; ``_prepare_inputs`` generates the 64
  completions in one ``model.generate`` call, and the Trainer runs one forward/backward over the
  64 rows and one ``optimizer.step()``. ``num_iterations=1`` with ``steps_per_generation <=
  gradient_accumulation_steps`` lets TRL skip the old-log-prob forward pass (it uses
  ``per_token_logps.detach()``), as the kit can.
* ``max_completion_length=32`` and ``generation_kwargs={"min_new_tokens": 32}``: the EOS token is
  suppressed until the 32nd token, so every completion is exactly 32 tokens (the script records the
  mean length the reward function saw).
* ``beta=0.0`` (TRL then builds no reference model), ``use_vllm=False``, ``use_cpu=True``,
  ``bf16=False``, ``fp16=False``, ``gradient_checkpointing=False`` (TRL's own default is True,
  which would only slow TRL down), logging, saving, reporting and tqdm off,
  ``torch.set_num_threads(2)``, and a trivial reward: the share of even token ids (the length
  would be 32 everywhere, every advantage 0). Everything else is TRL's default (AdamW,
  ``max_grad_norm=1.0``, ``loss_type="dapo"``, entropies computed in the loss pass).

How to reproduce (TRL is an optional tool-only install, never a dependency of the kit; keep it out
of the kit's own virtual environment so that it cannot move ``transformers`` under it)::

    python3 -m venv /tmp/trl-venv
    /tmp/trl-venv/bin/pip install "torch==2.13.0" "trl==1.16.*"
    /tmp/trl-venv/bin/pip install -e . --no-deps
    TF=$(/tmp/trl-venv/bin/python -c 'import transformers; print(transformers.__version__)')
    /tmp/trl-venv/bin/pip install "diffusers>=0.30" "mmengine-lite>=0.10.5" addict yapf \\
        termcolor "einops>=0.7" "rich>=13" "typer>=0.12" "safetensors>=0.4" "numpy>=1.24" \\
        "pillow>=10" "matplotlib>=3.7" "tensorboard>=2.14" "transformers==$TF" "torch==2.13.0"
    /tmp/trl-venv/bin/python tools/compare_trl.py            # TRL and the kit, table + JSON
    /tmp/trl-venv/bin/python tools/compare_trl.py --skip-kit # TRL alone
    /tmp/trl-venv/bin/python tools/compare_trl.py --json     # the JSON line only
    /tmp/trl-venv/bin/python tools/compare_trl.py --idle-wait 600  # first wait for a quiet CPU

Both sides run on the same 2 cores one after the other, so anything else running on the machine
inflates either number (a 2-thread torch job slows down many times over when another process
takes one of 2 cores). The script measures, from /proc/stat less this process and its children,
how many cores other processes kept busy during each TRL step and during each kit run: a TRL
step during which they used more than ``--idle-cores`` (0.25) is left out of the median (TRL
runs on, up to ``--max-steps``, until 7 quiet steps are in), a kit run during which they did is
repeated (``--kit-tries``). The JSON keeps every step, those figures, and ``noisy`` when fewer
than 5 quiet TRL steps or no quiet kit run were had.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

TARGET_RATIO = 0.8
THREADS = 2
PROMPTS_PER_STEP = 8
COMPLETIONS_PER_PROMPT = 8
NEW_TOKENS = 32
MIN_STEPS = 5
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
CHAT_START = "<|im_start|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_snapshot() -> tuple[float, float, float]:
    """(wall clock, CPU seconds the whole machine spent busy, CPU seconds of this process and
    its waited-for children), all in seconds; the busy time is NaN without /proc/stat."""
    wall = time.perf_counter()
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = float("nan")
    times = os.times()
    own = times.user + times.system + times.children_user + times.children_system
    return wall, busy, own


def other_cores(start: tuple[float, float, float], end: tuple[float, float, float]) -> float:
    """How many cores other processes kept busy, on average, between two :func:`cpu_snapshot`.

    Both sides are timed on the same 2 threads one after the other; on a small shared machine
    anything else running steals those cores (and spinning OpenMP threads make a 2-thread job
    many times slower when a core is taken), so each timing carries this figure."""
    wall = end[0] - start[0]
    if wall <= 0:
        return float("nan")
    return max(0.0, (end[1] - start[1]) - (end[2] - start[2])) / wall


def wait_until_idle(limit: float, max_wait_s: float, quiet: bool) -> float:
    """Wait (at most ``max_wait_s``) until other processes use <= ``limit`` cores over a
    3-second window; return the last measured figure."""
    deadline = time.monotonic() + max_wait_s
    while True:
        start = cpu_snapshot()
        time.sleep(3.0)
        busy = other_cores(start, cpu_snapshot())
        if not busy > limit or time.monotonic() >= deadline:
            return busy
        if not quiet:
            print(f"other processes use {busy:.2f} cores > {limit}: waiting", file=sys.stderr)


def make_words(count: int, seed: int) -> list[str]:
    """``count`` distinct lowercase pseudo-words of one to three syllables."""
    rng = random.Random(seed)
    onsets = "b d f g h k l m n p r s t v w z".split()
    vowels = "a e i o u".split()
    words: set[str] = set()
    while len(words) < count:
        syllables = rng.choice((1, 2, 3))
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(syllables)))
    return sorted(words)


def task_texts(count: int, seed: int) -> tuple[list[str], str]:
    """``count`` prompt texts and where they come from: the problems of the kit's built-in
    Arithmetic task, which ``bench --text-model`` trains on (so that both sides see prompts of
    the same lengths), or, where the kit is not importable, sentences of pseudo-words."""
    try:
        from unigrpo_kit.tasks.arithmetic import Arithmetic
    except ImportError:
        rng = random.Random(seed)
        words = make_words(400, seed)
        return [" ".join(rng.choices(words, k=16)) for _ in range(count)], "pseudo-words"
    problems = Arithmetic(seed=seed).sample_prompts(count)
    return [p.text for p in problems], "unigrpo_kit Arithmetic task"


def build_tokenizer(corpus: list[str], vocab_size: int) -> Any:
    """A byte-level BPE ``PreTrainedTokenizerFast`` of at most ``vocab_size`` tokens trained in
    memory on ``corpus`` (byte-level, so that ``AutoTokenizer`` reads it back as the same
    ``Qwen2Tokenizer`` for the model type ``qwen2``; any text encodes), with a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD_TOKEN, CHAT_START, EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[CHAT_START],
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_and_save_model(out_dir: Path, seed: int, vocab_size: int) -> dict[str, Any]:
    """Save a random tiny Qwen2 and its tokenizer in ``out_dir``; return a short description."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    corpus, _ = task_texts(2000, seed + 1000)  # other problems than the timed ones
    tokenizer = build_tokenizer(corpus, vocab_size)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=512,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "vocab_size": config.vocab_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def make_prompts(tokenizer: Any, count: int, seed: int) -> tuple[list[str], str]:
    """``count`` prompts rendered as the kit's ``HFCausalLM`` renders them (the chat template,
    one user message, the generation prompt), as plain strings for TRL; and their source."""
    texts, source = task_texts(count, seed)
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        for text in texts
    ]
    return rendered, source


def time_trl(
    model_dir: Path, warmup: int, steps: int, max_steps: int, idle_cores: float, seed: int
) -> dict[str, Any]:
    """Run TRL's ``GRPOTrainer`` until ``steps`` timed steps after ``warmup`` were quiet (other
    processes used <= ``idle_cores`` cores) or ``max_steps`` steps were timed; the timings."""
    import torch

    torch.set_num_threads(THREADS)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        """Wall time of each optimizer step, from ``on_step_begin`` to ``on_step_end``, and the
        cores other processes used meanwhile; stops training once enough steps were quiet."""

        def __init__(self) -> None:
            self.begin = cpu_snapshot()
            self.durations: list[float] = []
            self.other_cores: list[float] = []
            self.threads: list[int] = []

        def quiet_steps(self) -> list[float]:
            pairs = zip(self.durations[warmup:], self.other_cores[warmup:])
            return [t for t, busy in pairs if busy <= idle_cores]

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.threads.append(torch.get_num_threads())
            self.begin = cpu_snapshot()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            end = cpu_snapshot()
            self.durations.append(end[0] - self.begin[0])
            self.other_cores.append(other_cores(self.begin, end))
            if len(self.quiet_steps()) >= steps:
                control.should_training_stop = True

    lengths: list[int] = []

    def even_token_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
        """Trivial reward: the share of even token ids (records the completion lengths too).

        Not the length, which is 32 for every completion here: a constant reward would make every
        advantage zero, and the step should do the work a real one does."""
        lengths.extend(len(ids) for ids in completion_ids)
        return [sum(i % 2 == 0 for i in ids) / max(len(ids), 1) for ids in completion_ids]

    total_steps = warmup + max_steps
    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    prompts, prompt_source = make_prompts(tokenizer, PROMPTS_PER_STEP * total_steps, seed)
    completions = PROMPTS_PER_STEP * COMPLETIONS_PER_PROMPT
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="compare_trl_trainer_"),
        num_generations=COMPLETIONS_PER_PROMPT,
        per_device_train_batch_size=completions,
        gradient_accumulation_steps=1,
        num_iterations=1,
        max_steps=total_steps,
        max_completion_length=NEW_TOKENS,
        generation_kwargs={"min_new_tokens": NEW_TOKENS},
        temperature=1.0,
        beta=0.0,
        use_vllm=False,
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_completions=False,
        dataloader_num_workers=0,
        seed=seed,
    )
    if (config.generation_batch_size, config.steps_per_generation) != (completions, 1):
        raise RuntimeError(
            f"TRL would generate {config.generation_batch_size} completions every "
            f"{config.steps_per_generation} steps, not {completions} every step"
        )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    timer = StepTimer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=even_token_reward,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
            callbacks=[timer],
        )
        if getattr(trainer, "ref_model", None) is not None:
            raise RuntimeError("TRL built a reference model although beta=0")
        generations = time_generation(trainer)
        torch.set_num_threads(THREADS)
        with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its final log
            trainer.train()
    ran = len(timer.durations)
    if ran <= warmup or len(generations) != ran or len(lengths) != ran * completions:
        raise RuntimeError(
            f"TRL ran {ran} steps, {len(generations)} generations, {len(lengths)} completions"
        )
    quiet = timer.quiet_steps()
    timed = timer.durations[warmup:]
    return {
        "step_s": statistics.median(quiet if len(quiet) >= MIN_STEPS else timed),
        "step_all_s": statistics.median(timed),
        "quiet_steps": len(quiet),
        "generate_s": statistics.median(g["seconds"] for g in generations[warmup:]),
        "steps_s": [round(t, 4) for t in timer.durations],
        "warmup_steps": warmup,
        "completions_per_step": len(lengths) / ran,
        "mean_completion_tokens": statistics.fmean(lengths),
        "mean_prompt_tokens": statistics.fmean(g["prompt_tokens"] for g in generations),
        "mean_padded_prompt_tokens": statistics.fmean(g["padded_to"] for g in generations),
        "prompt_source": prompt_source,
        "threads_seen": sorted(set(timer.threads)),
        "other_cores": [round(c, 2) for c in timer.other_cores],
    }


def time_generation(trainer: Any) -> list[dict[str, float]]:
    """Wrap the trainer's ``_generate_single_turn`` (one call a step here): each call's wall time
    and its prompts' mean and padded (longest) length land in the returned list."""
    method = trainer._generate_single_turn
    calls: list[dict[str, float]] = []

    def timed(prompt_ids: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(prompt_ids, *args, **kwargs)
        finally:
            lengths = [len(ids) for ids in prompt_ids]
            calls.append(
                {
                    "seconds": time.perf_counter() - start,
                    "prompt_tokens": statistics.fmean(lengths),
                    "padded_to": max(lengths),
                }
            )

    trainer._generate_single_turn = timed
    return calls


def time_kit(model_dir: Path, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Run ``unigrpo-kit bench --text-model DIR --json``; return its JSON object and the cores
    other processes kept busy meanwhile (over the whole subprocess, start-up included)."""
    command = [sys.executable, "-m", "unigrpo_kit.cli", "bench", "--text-model", str(model_dir)]
    command += ["--threads", str(THREADS), "--json"]
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    start = cpu_snapshot()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
    )
    busy = other_cores(start, cpu_snapshot())
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-4000:]}"
        )
    result = last_json_object(done.stdout)
    if "text_grpo_step_s" not in result:
        raise RuntimeError(f"the kit's bench JSON has no text_grpo_step_s: {sorted(result)}")
    return result, busy


def last_json_object(text: str) -> dict[str, Any]:
    """The last line of ``text`` that parses as a JSON object (or the whole text, if it does)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    value = json.loads(text)  # a pretty-printed object over several lines
    if not isinstance(value, dict):
        raise ValueError("no JSON object in the output")
    return value


def package_version(name: str) -> str | None:
    """The installed version of ``name``, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def time_kit_quietly(
    model_dir: Path, timeout_s: float, idle_cores: float, idle_wait: float, tries: int, quiet: bool
) -> tuple[dict[str, Any], list[float]]:
    """:func:`time_kit`, rerun (up to ``tries`` runs in all, each after waiting for a quiet
    CPU) while other processes used more than ``idle_cores`` cores during it; the last run's
    JSON and the cores other processes used during each run."""
    busy_runs: list[float] = []
    while True:
        wait_until_idle(idle_cores, idle_wait, quiet)
        result, busy = time_kit(model_dir, timeout_s)
        busy_runs.append(round(busy, 2))
        if busy <= idle_cores or len(busy_runs) >= tries:
            return result, busy_runs
        if not quiet:
            print(f"the kit's run shared the CPU ({busy:.2f} cores): again", file=sys.stderr)


def print_table(trl: dict[str, Any], kit: dict[str, Any] | None, summary: dict[str, Any]) -> None:
    """A small human-readable table of both timings."""
    timed = trl["steps_s"][trl["warmup_steps"] :]
    rows = [
        ("machine", f"{summary['machine']}, {summary['threads']} torch threads"),
        ("versions", f"trl {summary['trl_version']}, transformers "
         f"{summary['transformers_version']}, torch {summary['torch_version']}"),
        ("workload", f"{PROMPTS_PER_STEP} prompts x {COMPLETIONS_PER_PROMPT} completions x "
         f"{NEW_TOKENS} tokens, beta=0, 1 optimizer step"),
        ("TRL completions/step", f"{trl['completions_per_step']:.0f} of "
         f"{trl['mean_completion_tokens']:.2f} tokens on average"),
        ("TRL prompt tokens", f"{trl['mean_prompt_tokens']:.1f} on average, "
         f"{trl['mean_padded_prompt_tokens']:.1f} padded ({trl['prompt_source']})"),
        ("TRL steps (s)", " ".join(f"{t:.3f}" for t in trl["steps_s"])
         + f"  (first {trl['warmup_steps']} = warm-up)"),
        ("other processes (cores)", " ".join(f"{c:.2f}" for c in trl["other_cores"])),
        ("TRL step (median)", f"{trl['step_s']:.3f} s over {trl['quiet_steps']} quiet steps "
         f"(all: {trl['step_all_s']:.3f} s, fastest {min(timed):.3f} s)"),
        ("TRL generation (median)", f"{trl['generate_s']:.3f} s of the step"),
    ]  # fmt: skip
    if kit is not None:
        if kit.get("text_steps_s"):
            rows.append(("kit steps (s)", " ".join(f"{t:.3f}" for t in kit["text_steps_s"])))
        busy = " ".join(f"{c:.2f}" for c in summary["kit_other_cores"])
        rows.append(("other processes (cores)", f"{busy} (per kit run)"))
        rows.append(("kit step (median)", f"{kit['text_grpo_step_s']:.3f} s"))
        if kit.get("text_rollout_s") is not None:
            rows.append(("kit rollout (median)", f"{kit['text_rollout_s']:.3f} s of the step"))
        if kit.get("text_mean_prompt_tokens") is not None:
            rows.append(
                (
                    "kit prompt tokens",
                    f"{kit['text_mean_prompt_tokens']:.1f} on average, "
                    f"{kit['text_padded_prompt_tokens']:.1f} padded",
                )
            )
        rows.append(("ratio kit/TRL", f"{summary['ratio']:.3f} (target <= {TARGET_RATIO})"))
        rows.append(("passed", str(summary["passed"])))
    else:
        rows.append(("kit step", "skipped (--skip-kit)"))
    if summary["noisy"]:
        rows.append(("warning", "other processes took CPU during the timings: rerun when idle"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--out", type=Path, help="save the model here (default: a temporary folder)")
    add("--steps", type=int, default=7, help=f"quiet TRL steps to time (>= {MIN_STEPS})")
    add("--max-steps", type=int, default=30, help="most TRL steps timed to find them")
    add("--warmup", type=int, default=1, help="untimed TRL warm-up steps (>= 1)")
    add("--seed", type=int, default=0)
    add("--vocab-size", type=int, default=512, help="BPE vocabulary (an upper bound)")
    add("--skip-kit", action="store_true", help="time TRL only")
    add("--kit-timeout", type=float, default=900.0, help="seconds for one kit run")
    add("--kit-tries", type=int, default=3, help="kit runs at most, while others take CPU")
    add("--json", action="store_true", help="print only the JSON line")
    add(
        "--idle-cores",
        type=float,
        default=0.25,
        help="a timing during which other processes used more cores than this is not quiet: "
        "TRL steps are left out of the median, a kit run is repeated",
    )
    add(
        "--idle-wait",
        type=float,
        default=0.0,
        help="before each side, wait up to this many seconds for a quiet CPU (0: do not wait)",
    )
    args = parser.parse_args(argv)
    if args.steps < MIN_STEPS:
        parser.error(f"--steps must be >= {MIN_STEPS}")
    if args.max_steps < args.steps:
        parser.error("--max-steps must be >= --steps")
    if args.warmup < 1:
        parser.error("--warmup must be >= 1")
    if args.kit_tries < 1:
        parser.error("--kit-tries must be >= 1")
    return args


def run(args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    """Build the model, time TRL, time the kit; print and return the summary."""
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    transformers.utils.logging.disable_progress_bar()
    model_info = build_and_save_model(model_dir, args.seed, args.vocab_size)
    wait_until_idle(args.idle_cores, args.idle_wait, args.json)
    trl = time_trl(model_dir, args.warmup, args.steps, args.max_steps, args.idle_cores, args.seed)
    kit, kit_busy = None, []
    if not args.skip_kit:
        kit, kit_busy = time_kit_quietly(
            model_dir, args.kit_timeout, args.idle_cores, args.idle_wait, args.kit_tries, args.json
        )
    noisy = trl["quiet_steps"] < MIN_STEPS or any(b > args.idle_cores for b in kit_busy[-1:])
    summary: dict[str, Any] = {
        "trl_step_s": round(trl["step_s"], 4),
        "kit_step_s": None if kit is None else round(kit["text_grpo_step_s"], 4),
        "ratio": None,
        "target": TARGET_RATIO,
        "passed": None,
        "machine": cpu_model(),
        "threads": THREADS,
        "trl_version": package_version("trl"),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "noisy": noisy,
        "trl_quiet_steps": trl["quiet_steps"],
        "trl_step_all_s": round(trl["step_all_s"], 4),
        "trl_step_min_s": round(min(trl["steps_s"][args.warmup :]), 4),
        "trl_generate_s": round(trl["generate_s"], 4),
        "trl_steps_s": trl["steps_s"],
        "trl_other_cores": trl["other_cores"],
        "kit_other_cores": kit_busy,
        "idle_cores": args.idle_cores,
        "trl_mean_completion_tokens": round(trl["mean_completion_tokens"], 3),
        "trl_mean_prompt_tokens": round(trl["mean_prompt_tokens"], 2),
        "trl_mean_padded_prompt_tokens": round(trl["mean_padded_prompt_tokens"], 2),
        "prompts": trl["prompt_source"],
        "trl_threads_seen": trl["threads_seen"],
        "model": model_info,
    }
    if kit is not None:
        ratio = kit["text_grpo_step_s"] / trl["step_s"]
        summary["ratio"] = round(ratio, 4)
        summary["passed"] = ratio <= TARGET_RATIO
        summary["kit"] = kit
    if not args.json:
        print_table(trl, kit, summary)
    print(json.dumps(summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit status 0 whether or not the target is met (read ``passed``)."""
    args = parse_args(argv)
    if args.out is not None:
        run(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="compare_trl_") as tmp:
            run(args, Path(tmp) / "tiny_qwen2")
    return 0


if __name__ == "__main__":
    sys.exit(main())
