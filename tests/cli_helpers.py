"""What the CLI tests share: the options that make a recipe tiny, ``--cfg-options`` words, and
the check of a one-line user error. (``tests/`` is on ``sys.path`` through its conftest.)"""

from __future__ import annotations

# The --cfg-options that make every built-in recipe tiny: 2 prompts x 2 samples, 4 denoising
# steps with an SDE window of 2, short texts, one thread, a 7-prompt eval of 4 steps.
TINY_RUN = (
    "rollout.prompts_per_step=2",
    "rollout.group_size=2",
    "rollout.num_steps=4",
    "rollout.window.window_size=2",
    "rollout.window.window_range=(0,4)",
    "rollout.text_sampler.max_new_tokens=6",
    "rollout.reflection_sampler.max_new_tokens=4",
    "algorithm.minibatch_size=4",
    "threads=1",
)
TINY_EVAL = ("evaluation.num_prompts=7", "evaluation.steps=4")


def options(*pairs: str) -> list[str]:
    """``--cfg-options k=v`` once per pair."""
    return [word for pair in pairs for word in ("--cfg-options", pair)]


def assert_user_error(result, *needles: str) -> str:
    """Exit 2, exactly one line, starting with ``error:``, no traceback, naming every needle."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
