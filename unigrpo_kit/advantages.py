"""Group-relative advantage estimators: one scalar reward per episode in, one advantage out.

Each estimator is called as ``adv(rewards[N], group_ids[N]) -> advantages[N]``, where episodes
with the same group id answered the same prompt. Statistics are computed in float64 with
scatter/index_add over a contiguous group index (no Python loop over groups).

Two rules hold for every estimator:
- a group whose rewards are all equal gets exactly 0 (it carries no learning signal, and
  r - mean in floating point can leave a 1e-16 residue instead of a zero);
- a group of one is such a group, so it gets 0 too.

Standard deviations are *population* stds (ddof = 0) by default: the std of the group's empirical
reward distribution, as Flow-GRPO's reference code (``np.std``) computes it, defined for every
group size, and the one that gives each group's advantages unit variance exactly. ``unbiased=True``
gives Bessel's (ddof = 1) std, as TRL's and verl's GRPO use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from unigrpo_kit.registry import ADVANTAGES


class GroupStats:
    """Per-episode group statistics ``[N]`` of a reward vector, in float64.

    Attributes:
        index: ``[N]`` contiguous group index in ``[0, G)``.
        size: ``[N]`` size of each episode's group.
        centered: ``[N]`` r - mean of the group, exactly 0 in constant groups.
        constant: ``[N]`` True where the episode's group has all rewards equal.
    """

    def __init__(self, rewards: Tensor, group_ids: Tensor | Sequence[Hashable]) -> None:
        self.index, num_groups = group_index(group_ids, rewards.shape[0], rewards.device)
        rewards = rewards.to(torch.float64)
        zeros = rewards.new_zeros(num_groups)
        size = zeros.index_add(0, self.index, torch.ones_like(rewards))
        mean = zeros.index_add(0, self.index, rewards) / size
        low = zeros.scatter_reduce(0, self.index, rewards, "amin", include_self=False)
        high = zeros.scatter_reduce(0, self.index, rewards, "amax", include_self=False)
        self.size = size[self.index]
        self.constant = (low == high)[self.index]
        self.centered = torch.where(self.constant, 0.0, rewards - mean[self.index])

    def group_std(self, unbiased: bool) -> Tensor:
        """``[N]`` std of each episode's group (population unless ``unbiased``)."""
        squares = torch.zeros_like(self.size).index_add(0, self.index, self.centered.square())
        dof = self.size - 1 if unbiased else self.size
        return (squares[self.index] / dof.clamp_min(1)).sqrt()


def group_index(
    group_ids: Tensor | Sequence[Hashable], num_episodes: int, device: torch.device
) -> tuple[Tensor, int]:
    """Map group ids (an integer tensor, or any sequence of hashables) to ``[N]`` indices in
    ``[0, G)``; returns the index and G."""
    if isinstance(group_ids, Tensor):
        if group_ids.dim() != 1:
            raise ValueError(f"group_ids must be 1-D [N], got shape {list(group_ids.shape)}")
        unique, index = torch.unique(group_ids, return_inverse=True)
        num_groups = unique.numel()
    else:
        ids = list(group_ids)
        first_seen: dict[Hashable, int] = {}
        try:
            # 0-d tensors hash by identity, so compare their values instead
            keys = [group.item() if isinstance(group, Tensor) else group for group in ids]
            positions = [first_seen.setdefault(key, len(first_seen)) for key in keys]
        except TypeError as error:
            raise ValueError(
                f"group_ids must be hashable (ints, strings, tuples): {error}"
            ) from None
        index = torch.tensor(positions, dtype=torch.long)
        num_groups = len(first_seen)
    if index.shape[0] != num_episodes:
        raise ValueError(
            f"group_ids has {index.shape[0]} entries but rewards has {num_episodes}; "
            "give one group id per reward"
        )
    return index.to(device), num_groups


class GroupAdvantage(ABC):
    """Shared checks and clipping; subclasses define ``estimate`` (float64 in, float64 out)."""

    def __init__(self, clip: float | None = None) -> None:
        if clip is not None and clip <= 0:
            raise ValueError(f"clip must be > 0 (e.g. 5.0) or None, got {clip}")
        self.clip = clip

    @abstractmethod
    def estimate(self, stats: GroupStats, rewards: Tensor) -> Tensor:
        """Advantages ``[N]`` in float64 from the group stats and the float64 rewards ``[N]``."""

    def __call__(self, rewards: Tensor, group_ids: Tensor | Sequence[Hashable]) -> Tensor:
        """Advantages ``[N]`` for rewards ``[N]``; float rewards keep their dtype, others
        become float32."""
        rewards = torch.as_tensor(rewards)
        if rewards.dim() != 1:
            raise ValueError(f"rewards must be 1-D [N], got shape {list(rewards.shape)}")
        if not torch.isfinite(rewards).all():
            raise ValueError("rewards must be finite; got NaN or inf (check the reward function)")
        out_dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
        stats = GroupStats(rewards, group_ids)
        advantages = self.estimate(stats, rewards.to(torch.float64))
        if self.clip is not None:
            advantages = advantages.clamp(-self.clip, self.clip)
        return advantages.to(out_dtype)


@ADVANTAGES.register_module()
class GroupNorm(GroupAdvantage):
    """GRPO's group-normalised advantage (DeepSeekMath, arXiv 2402.03300;
    UniGRPO, arXiv 2603.23500):

        A_i = (r_i - mean_g(r)) / (std_g(r) + eps)

    ``clip`` bounds |A| (Flow-GRPO uses 5.0). ``unbiased`` picks the ddof = 1 std.
    """

    def __init__(self, clip: float | None = None, eps: float = 1e-6, unbiased: bool = False):
        super().__init__(clip)
        if eps < 0:
            raise ValueError(f"eps must be >= 0 (e.g. 1e-6), got {eps}")
        self.eps = eps
        self.unbiased = unbiased

    def estimate(self, stats: GroupStats, rewards: Tensor) -> Tensor:
        # A = (r - mean_g) / (std_g + eps)
        return stats.centered / (stats.group_std(self.unbiased) + self.eps)


@ADVANTAGES.register_module()
class GroupMean(GroupAdvantage):
    """Dr. GRPO's advantage (arXiv 2503.20783): the group mean as baseline, no std,
    which removes GRPO's difficulty bias toward groups with small reward spread:

        A_i = r_i - mean_g(r)
    """

    def estimate(self, stats: GroupStats, rewards: Tensor) -> Tensor:
        return stats.centered


@ADVANTAGES.register_module()
class RLOO(GroupAdvantage):
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al., arXiv 2402.14740):
    each episode's baseline is the mean of the *other* n - 1 rewards of its group,

        A_i = r_i - (1/(n-1)) sum_{j != i} r_j = (n / (n-1)) (r_i - mean_g(r)),

    and a group of one (no other sample) gets 0.
    """

    def estimate(self, stats: GroupStats, rewards: Tensor) -> Tensor:
        return stats.centered * stats.size / (stats.size - 1).clamp_min(1)


@ADVANTAGES.register_module()
class GroupMeanGlobalStd(GroupAdvantage):
    """Group mean as baseline, batch std as scale (Flow-GRPO's global-std option,
    arXiv 2505.05470; REINFORCE++-baseline, arXiv 2501.03262):

        A_i = (r_i - mean_g(r)) / (std_batch(r) + eps)

    The std is over all N rewards of the batch, so groups with a small spread are not inflated.
    """

    def __init__(self, clip: float | None = None, eps: float = 1e-6, unbiased: bool = False):
        super().__init__(clip)
        if eps < 0:
            raise ValueError(f"eps must be >= 0 (e.g. 1e-6), got {eps}")
        self.eps = eps
        self.unbiased = unbiased

    def estimate(self, stats: GroupStats, rewards: Tensor) -> Tensor:
        batch_std = rewards.std(correction=int(self.unbiased)) if rewards.numel() > 1 else 0.0
        return stats.centered / (batch_std + self.eps)


def group_advantages(
    estimator: GroupAdvantage,
    rewards: Tensor,
    group_ids: Tensor,
    components: dict[str, tuple[float, Tensor]] | None = None,
) -> Tensor:
    """Advantages ``[N]`` from the episodes whose reward is finite; the others (a reward that
    failed, timed out or returned NaN) get 0 and are left out of their group's statistics.

    Without ``components``, ``A = estimator(r)`` over the valid episodes. With them (per-reward
    group normalisation), ``A_i = sum_k w_k * estimator(r_k)_i``: each reward's advantage
    within the group, then weighted, so that a reward on a large scale does not drown the
    others.
    """
    advantages = torch.zeros(rewards.shape[0], dtype=torch.float32)
    valid = torch.nonzero(torch.isfinite(rewards)).flatten()
    if valid.numel() == 0:
        return advantages
    parts = [(1.0, rewards)] if components is None else list(components.values())
    ids = group_ids[valid]
    for weight, scores in parts:
        advantages[valid] += weight * estimator(scores.float()[valid], ids).float()
    return advantages
