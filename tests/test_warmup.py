"""``optimizer.warmup_steps``: step t (from 1) trains at lr * min(1, t / W); 0 keeps the lr."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("warmup, expected", [(0, [1.0, 1.0, 1.0]), (2, [0.5, 1.0, 1.0])])
def test_the_learning_rate_ramps_up_over_the_warmup_steps(make_trainer, warmup, expected):
    trainer = make_trainer(
        "unified_single_round", **{"optimizer.warmup_steps": warmup, "schedule.steps": 5}
    )
    base = {g["name"]: g["base_lr"] for g in trainer.optimizer.param_groups}
    seen = []
    for _ in range(3):
        trainer.warm_up()
        seen.append({g["name"]: g["lr"] / base[g["name"]] for g in trainer.optimizer.param_groups})
        trainer.step += 1
    for factors, want in zip(seen, expected):
        assert list(factors.values()) == pytest.approx([want] * len(factors))
