"""A placebo reward for control runs: a coin that does not look at what it scores."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from unigrpo_kit.registry import REWARDS
from unigrpo_kit.rewards.base import Reward, RewardOutput


@REWARDS.register_module()
class CoinFlip(Reward):
    """Placebo: each episode scores 1 with probability ``p``, whatever it made.

        score_i = 1[u_i < p],   u_i = BLAKE2b(seed, prompt_i, text_i, image_i) / 2^64

    The coin is a hash of the episode's own inputs, so it is deterministic (a resumed run
    draws the same coins) and needs no state, yet it carries no information about quality. A
    run trained on it moves the policy as far as a real run, with the same optimizer and
    regularizers, but along no signal: what it changes on eval is the effect of training
    itself, not of the reward. ``log``: a reward config (e.g. the judge) whose metrics are
    logged beside it; its scores are not used. Metric ``coin/score`` ``[N]``.
    """

    def __init__(self, p: float = 0.3, seed: int = 0, log: dict | Reward | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"CoinFlip p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.seed = int(seed)
        self.log = log if log is None or isinstance(log, Reward) else REWARDS.build(log)
        self.needs = frozenset() if self.log is None else self.log.needs

    def uniform(self, prompt: Any, text: str | None, image: torch.Tensor | None) -> float:
        """u in [0, 1) from a hash of the seed and the episode's inputs."""
        digest = hashlib.blake2b(digest_size=8)
        digest.update(str(self.seed).encode())
        digest.update(str(getattr(prompt, "text", prompt)).encode())
        digest.update(b"\0" + (text or "").encode())
        if image is not None:
            digest.update(image.detach().float().cpu().contiguous().numpy().tobytes())
        return int.from_bytes(digest.digest(), "little") / 2**64

    def compute(
        self,
        *,
        prompts: Sequence[Any],
        images: torch.Tensor | None,
        texts: Sequence[str] | None,
    ) -> RewardOutput:
        metrics = {}
        if self.log is not None:
            metrics = dict(self.log(prompts=prompts, images=images, texts=texts).metrics)
        coins = [
            float(
                self.uniform(
                    prompt,
                    None if texts is None else texts[i],
                    None if images is None else images[i],
                )
                < self.p
            )
            for i, prompt in enumerate(prompts)
        ]
        scores = torch.tensor(coins, dtype=torch.float32)
        metrics["coin/score"] = scores.clone()
        return RewardOutput(scores, metrics)
