"""Sigma schedules and SDE-window selection."""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.registry import SAMPLERS
from unigrpo_kit.samplers.schedules import (
    FixedWindow,
    FullWindow,
    SlidingWindow,
    shifted_sigmas,
)


def window_start(mask: torch.Tensor) -> int:
    return int(mask.nonzero()[0])


def assert_one_window(mask: torch.Tensor, size: int) -> None:
    """Exactly ``size`` True entries, consecutive."""
    indices = mask.nonzero().flatten().tolist()
    assert len(indices) == size
    assert indices == list(range(indices[0], indices[0] + size))


@pytest.mark.parametrize("shift", [1.0, 3.0, 0.5])
def test_shifted_sigmas_run_from_one_to_zero_strictly_decreasing(shift):
    sigmas = shifted_sigmas(10, shift)
    assert sigmas.shape == (11,) and sigmas.dtype == torch.float32
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert (sigmas[1:] < sigmas[:-1]).all()


def test_shift_one_is_the_linear_grid():
    expected = [1.0 - i / 8 for i in range(9)]
    assert shifted_sigmas(8, 1.0).tolist() == pytest.approx(expected, abs=1e-7)


def test_shift_three_by_hand():
    # 3 s / (1 + 2 s) at s = 0.75, 0.5, 0.25: 2.25 / 2.5, 1.5 / 2, 0.75 / 1.5
    assert shifted_sigmas(4, 3.0).tolist() == pytest.approx([1.0, 0.9, 0.75, 0.5, 0.0], abs=1e-7)


def test_shift_above_one_spends_more_steps_at_high_noise():
    assert (shifted_sigmas(10, 3.0)[1:-1] > shifted_sigmas(10, 1.0)[1:-1]).all()


@pytest.mark.parametrize(
    ("num_steps", "shift", "message"),
    [(0, 1.0, "num_steps must be an int >= 1"), (2.5, 1.0, "num_steps"), (4, 0.0, "shift")],
)
def test_shifted_sigmas_reject_bad_arguments(num_steps, shift, message):
    with pytest.raises(ValueError, match=message):
        shifted_sigmas(num_steps, shift)


def test_full_window_selects_every_step():
    mask = FullWindow().select(7)
    assert mask.dtype == torch.bool and mask.shape == (7,) and mask.all()


def test_fixed_window_has_its_size_and_stays_inside_its_range():
    window = FixedWindow(window_size=3, window_range=(2, 9))
    generator = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(200):
        mask = window.select(12, generator=generator)
        assert mask.shape == (12,) and mask.dtype == torch.bool
        assert_one_window(mask, 3)
        starts.add(window_start(mask))
    # every start lo .. hi - size is drawn, and nothing else (uniform over 5 values)
    assert starts == {2, 3, 4, 5, 6}


def test_fixed_window_default_range_is_the_whole_schedule():
    window = FixedWindow(window_size=2)
    generator = torch.Generator().manual_seed(1)
    starts = {window_start(window.select(5, generator=generator)) for _ in range(200)}
    assert starts == {0, 1, 2, 3}


def test_fixed_window_is_reproducible_with_a_seeded_generator():
    window = FixedWindow(window_size=2, window_range=(0, 20))
    first = [window.select(20, generator=torch.Generator().manual_seed(5)) for _ in range(3)]
    again = [window.select(20, generator=torch.Generator().manual_seed(5)) for _ in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    generator = torch.Generator().manual_seed(5)
    draws = [window_start(window.select(20, generator=generator)) for _ in range(10)]
    assert len(set(draws)) > 1  # a shared generator moves on between rollouts


def test_sliding_window_moves_from_first_to_last_position_with_progress():
    window = SlidingWindow(window_size=3)
    starts = [window_start(window.select(10, progress=p / 100)) for p in range(101)]
    assert starts[0] == 0 and starts[-1] == 7
    assert starts == sorted(starts)
    assert set(starts) == set(range(8))
    for progress in (0.0, 0.5, 1.0):
        assert_one_window(window.select(10, progress=progress), 3)


def test_sliding_window_gives_each_position_an_equal_share_of_training():
    # 8 positions: start = floor(progress * 8), the last one also at progress 1
    window = SlidingWindow(window_size=3)
    assert window_start(window.select(10, progress=0.124)) == 0
    assert window_start(window.select(10, progress=0.125)) == 1
    assert window_start(window.select(10, progress=0.874)) == 6
    assert window_start(window.select(10, progress=0.875)) == 7


def test_sliding_window_with_stride_and_range():
    # positions 1, 3, 5, then capped at hi - size = 6: K = ceil((6 - 1) / 2) + 1 = 4
    window = SlidingWindow(window_size=2, stride=2, window_range=(1, 8))
    starts = [window_start(window.select(10, progress=p / 100)) for p in range(101)]
    assert sorted(set(starts)) == [1, 3, 5, 6]
    assert starts[0] == 1 and starts[-1] == 6


def test_sliding_window_ignores_the_generator():
    window = SlidingWindow(window_size=2)
    a = window.select(6, generator=torch.Generator().manual_seed(0), progress=0.4)
    b = window.select(6, generator=torch.Generator().manual_seed(1), progress=0.4)
    assert torch.equal(a, b)


@pytest.mark.parametrize("window", [FixedWindow(5), SlidingWindow(5)])
def test_window_larger_than_schedule_fails_clearly(window):
    with pytest.raises(ValueError, match="window_size=5 is larger than the schedule's num_steps=3"):
        window.select(3)


@pytest.mark.parametrize("window_class", [FixedWindow, SlidingWindow])
def test_window_range_errors(window_class):
    with pytest.raises(ValueError, match="hi - lo >= window_size=3"):
        window_class(window_size=3, window_range=(0, 2))
    with pytest.raises(ValueError, match="must be two ints"):
        window_class(window_size=1, window_range=(0, 2, 4))
    with pytest.raises(ValueError, match="window_size must be an int >= 1"):
        window_class(window_size=0)
    with pytest.raises(ValueError, match="reaches past the schedule's num_steps=5"):
        window_class(window_size=2, window_range=(0, 8)).select(5)


@pytest.mark.parametrize("window", [FullWindow(), FixedWindow(1), SlidingWindow(1)])
def test_progress_outside_unit_interval_fails(window):
    with pytest.raises(ValueError, match=r"progress .* in \[0, 1\]"):
        window.select(4, progress=1.5)


def test_windows_build_from_the_registry():
    window = SAMPLERS.build(dict(type="FixedWindow", window_size=3, window_range=[0, 5]))
    assert window.window_range == (0, 5)
    assert SAMPLERS.build(dict(type="SlidingWindow", window_size=2, stride=2)).stride == 2
    assert isinstance(SAMPLERS.build(dict(type="FullWindow")), FullWindow)
