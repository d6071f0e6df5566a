"""One denoising step of a flow-matching generator, as a Gaussian policy with a log density.

Convention (diffusers / SD3): ``x_sigma = (1 - sigma) * x0 + sigma * noise``,
``velocity = noise - x0``, sigma runs from 1 (noise) to 0 (data), ``dt = sigma_next - sigma < 0``.

Every sampler maps ``(velocity, sigma, sigma_next, x)`` to a Gaussian
``N(mean, std^2 I)`` over the next latent, draws from it (or scores a given sample) and
returns :class:`StepOutput`. ``std`` is the standard deviation of that whole step, noise
increment included (for Flow-GRPO ``std = std_t * sqrt(-dt)``), so ``log_prob`` is exactly the
density of ``prev_sample`` under ``N(mean, std^2)`` and GRPO-Guard's RatioNorm reads
``std`` directly.

Shared rules:

- Maths in float32 whatever the input dtype; ``prev_sample`` comes back in the input dtype and
  its ``log_prob`` is the density of that returned (rounded) sample, so scoring it again with
  ``prev_sample=`` gives the same number and the first PPO ratio is exactly 1.
- ``log_prob`` treats the sample as a constant (it is detached): the policy gradient flows
  through ``mean`` and ``std`` only, as in Flow-GRPO's reference code.
- A step whose ``std`` is 0 (the ODE, CPS into ``sigma_next == 0``, a zero noise level) is
  deterministic; its ``log_prob`` is defined as 0, a constant the PPO ratio ignores.
- Float sigmas are checked (``0 < sigma <= 1``, ``0 <= sigma_next < sigma``); tensor sigmas are
  only shape-checked, because reading their values would stall the GPU in the rollout loop.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from unigrpo_kit.devices import randn
from unigrpo_kit.registry import SAMPLERS

Sigma = float | Tensor
Reduce = Literal["mean", "sum"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


class StepOutput(NamedTuple):
    """The result of one denoising step.

    prev_sample: [B, ...] the next latent, in the input dtype.
    log_prob: [B] float32 Gaussian log density of ``prev_sample`` under ``N(mean, std^2)``,
        averaged (``reduce="mean"``) or summed (``reduce="sum"``) over the non-batch dims.
    mean: [B, ...] float32 mean of the step's Gaussian.
    std: [B, 1, ..., 1] float32 standard deviation of the whole step (0 when deterministic).
    """

    prev_sample: Tensor
    log_prob: Tensor
    mean: Tensor
    std: Tensor


class FlowStep:
    """Shared machinery of the samplers: input checks, dtype handling, drawing and scoring.

    A subclass supplies ``mean_std``, the step's Gaussian in float32, and ``is_stochastic``.
    """

    def is_stochastic(self) -> bool:
        """Whether the step draws noise (``False`` means ``std`` is 0 everywhere)."""
        return True

    def mean_std(
        self, velocity: Tensor, sigma: Tensor, sigma_next: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Mean [B, ...] and std [B, 1, ..., 1] of the step, all inputs float32.

        ``sigma`` and ``sigma_next`` arrive as [B, 1, ..., 1] columns.
        """
        raise NotImplementedError

    def step(
        self,
        velocity: Tensor,
        sigma: Sigma,
        sigma_next: Sigma,
        x: Tensor,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        prev_sample: Tensor | None = None,
        reduce: Reduce = "mean",
    ) -> StepOutput:
        """Take (or score) one step from ``x`` at ``sigma`` to ``sigma_next``.

        velocity, x: [B, ...] the model's velocity prediction and the current latent.
        sigma, sigma_next: python floats or tensors [B].
        noise: [B, ...] standard normal draw to use; else one is drawn with ``generator``
            (on the generator's device, then moved to ``x``'s).
        prev_sample: [B, ...] a sample to score instead of drawing one.
        reduce: ``"mean"`` (Flow-GRPO's convention) or ``"sum"`` (the exact density).
        """
        _check_inputs(velocity, x, noise, prev_sample, reduce)
        _check_float_sigmas(sigma, sigma_next)
        sigma_col = _as_column(sigma, x, "sigma")
        sigma_next_col = _as_column(sigma_next, x, "sigma_next")

        mean, std = self.mean_std(velocity.float(), sigma_col, sigma_next_col, x.float())
        if not self.is_stochastic():
            sample = mean.to(x.dtype) if prev_sample is None else prev_sample
            return StepOutput(sample, mean.new_zeros(x.shape[0]), mean, std)
        if prev_sample is None:
            if noise is None:
                noise = randn(x.shape, generator=generator, device=x.device)
            prev_sample = (mean + std * noise.float()).to(x.dtype)
        log_prob = _gaussian_log_prob(prev_sample.detach().float(), mean, std, reduce)
        return StepOutput(prev_sample, log_prob, mean, std)


@SAMPLERS.register_module()
class FlowODE(FlowStep):
    """Deterministic Euler step of the probability-flow ODE (the sampler outside SDE windows).

    Flow matching, Lipman et al. (arXiv 2210.02747); SD3's sampler (arXiv 2403.03206):
        x_next = x + v * dt,   dt = sigma_next - sigma
    ``std`` is 0 and ``log_prob`` is all zeros; ``noise`` and ``generator`` are ignored.
    """

    def is_stochastic(self) -> bool:
        return False

    def mean_std(
        self, velocity: Tensor, sigma: Tensor, sigma_next: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        # x_next = x + v dt
        mean = x + velocity * (sigma_next - sigma)
        return mean, torch.zeros_like(sigma)

    def __repr__(self) -> str:
        return "FlowODE()"


@SAMPLERS.register_module()
class FlowSDE(FlowStep):
    """Flow-GRPO's SDE step (Liu et al., arXiv 2505.05470: ODE-to-SDE conversion, Euler-Maruyama).

        std_t = a * sqrt(sigma / (1 - sigma))
        mean  = x * (1 + std_t^2 / (2 sigma) * dt)
              + v * (1 + std_t^2 * (1 - sigma) / (2 sigma)) * dt
        x_next = mean + std_t * sqrt(-dt) * eps,   so std = std_t * sqrt(-dt)

    ``a`` is ``noise_level`` (0.7 in the paper). At ``sigma == 1`` the ``1 - sigma`` in std_t
    would be 0; like the reference code (which uses the schedule's second sigma there) we use
    ``1 - sigma_next`` instead, so the first step injects variance ``a^2`` whatever its size.

    Honest caveat, checked in tests/samplers/test_flow_statistics.py: the diffusion
    ``std_t^2 = a^2 sigma / (1 - sigma)`` is not integrable at sigma = 1, so each of the first
    few steps injects O(a^2) variance however fine the grid, and only the following SDE steps'
    drift takes the excess out again. Run on every step of a fine grid the sampler reaches the
    data law, slowly (Gaussian test: variance 0.5-1 % high at 200 steps, 0.3 % at 10,000); a
    short SDE window at sigma = 1 followed by ODE steps keeps part of the excess (8 % high).
    """

    def __init__(self, noise_level: float = 0.7) -> None:
        if not (math.isfinite(noise_level) and noise_level >= 0):
            raise ValueError(f"FlowSDE noise_level must be a finite number >= 0, got {noise_level}")
        self.noise_level = float(noise_level)

    def is_stochastic(self) -> bool:
        return self.noise_level > 0

    def mean_std(
        self, velocity: Tensor, sigma: Tensor, sigma_next: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        dt = sigma_next - sigma
        sigma_in_denominator = torch.where(sigma == 1, sigma_next, sigma)
        # std_t = a sqrt(sigma / (1 - sigma))
        std_t = self.noise_level * torch.sqrt(sigma / (1 - sigma_in_denominator))
        variance_t = std_t.square()
        # mean = x (1 + std_t^2 dt / (2 sigma)) + v (1 + std_t^2 (1 - sigma) / (2 sigma)) dt
        mean = x * (1 + variance_t * dt / (2 * sigma)) + velocity * (
            (1 + variance_t * (1 - sigma) / (2 * sigma)) * dt
        )
        return mean, std_t * torch.sqrt(-dt)

    def __repr__(self) -> str:
        return f"FlowSDE(noise_level={self.noise_level})"


@SAMPLERS.register_module()
class DanceSDE(FlowStep):
    """DanceGRPO's eta-SDE step (Xue et al., arXiv 2505.07818: reverse SDE with constant eta).

        x0_hat = x - sigma * v
        score  = -(x - (1 - sigma) * x0_hat) / sigma^2
        mean   = x + (v - eta^2 / 2 * score) * dt
        x_next = mean + eta * sqrt(-dt) * eps,   so std = eta * sqrt(sigma - sigma_next)

    The diffusion is the constant ``eta`` (0.3 in DanceGRPO's FLUX recipe), so unlike
    :class:`FlowSDE` it has no singularity at sigma = 1.
    """

    def __init__(self, eta: float = 0.3) -> None:
        if not (math.isfinite(eta) and eta >= 0):
            raise ValueError(f"DanceSDE eta must be a finite number >= 0, got {eta}")
        self.eta = float(eta)

    def is_stochastic(self) -> bool:
        return self.eta > 0

    def mean_std(
        self, velocity: Tensor, sigma: Tensor, sigma_next: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        dt = sigma_next - sigma
        # score = -(x - (1 - sigma) x0_hat) / sigma^2 with x0_hat = x - sigma v, which is
        # -(x + (1 - sigma) v) / sigma: same number, without the cancellation at small sigma
        score = -(x + (1 - sigma) * velocity) / sigma
        # mean = x + (v - eta^2 / 2 * score) dt
        mean = x + (velocity - 0.5 * self.eta**2 * score) * dt
        return mean, self.eta * torch.sqrt(-dt)

    def __repr__(self) -> str:
        return f"DanceSDE(eta={self.eta})"


@SAMPLERS.register_module()
class CPS(FlowStep):
    """Coefficients-preserving sampling (Wang & Yu, arXiv 2509.05952: the DDIM-form update).

        std    = sigma_next * sin(a * pi / 2)
        x0_hat = x - sigma * v,   x1_hat = x + (1 - sigma) * v
        mean   = (1 - sigma_next) * x0_hat + sqrt(sigma_next^2 - std^2) * x1_hat
        x_next = mean + std * eps

    ``a`` is ``noise_level`` in [0, 1] (0.8 in Flow-GRPO-Fast's CPS recipe);
    ``sqrt(sigma_next^2 - std^2)`` is computed as ``sigma_next * cos(a pi / 2)``, which is the
    same number without the rounding that could make the square root's argument negative.
    Into ``sigma_next == 0`` the step is deterministic (``std`` 0, ``log_prob`` 0).

    Known property, checked in tests/samplers/test_flow_statistics.py: plugging the posterior
    means x0_hat, x1_hat into the DDIM update loses the posterior spread. If ``x`` has the true
    marginal at sigma, the next latent's covariance falls short of the true one at sigma_next
    by ``k^2 E[Cov(x0 | x)]`` with ``k = (1 - sigma_next) - cos(a pi / 2) sigma_next
    (1 - sigma) / sigma``, which is O(dt) only for a = 0. CPS on every step of a fine grid
    therefore under-disperses (Gaussian test: variance 30 % low at 200 steps); a short window
    near sigma = 1 (where k -> 0) costs little.
    """

    def __init__(self, noise_level: float = 0.8) -> None:
        if not (math.isfinite(noise_level) and 0 <= noise_level <= 1):
            raise ValueError(f"CPS noise_level must be in [0, 1], got {noise_level}")
        self.noise_level = float(noise_level)
        angle = noise_level * math.pi / 2
        self._noise_share = math.sin(angle)
        self._kept_share = math.cos(angle)

    def is_stochastic(self) -> bool:
        return self.noise_level > 0

    def mean_std(
        self, velocity: Tensor, sigma: Tensor, sigma_next: Tensor, x: Tensor
    ) -> tuple[Tensor, Tensor]:
        # x0_hat = x - sigma v;  x1_hat = x + (1 - sigma) v
        x0_hat = x - sigma * velocity
        x1_hat = x + (1 - sigma) * velocity
        # mean = (1 - sigma_next) x0_hat + sqrt(sigma_next^2 - std^2) x1_hat
        mean = (1 - sigma_next) * x0_hat + (self._kept_share * sigma_next) * x1_hat
        return mean, self._noise_share * sigma_next

    def __repr__(self) -> str:
        return f"CPS(noise_level={self.noise_level})"


def _gaussian_log_prob(sample: Tensor, mean: Tensor, std: Tensor, reduce: Reduce) -> Tensor:
    """log N(sample; mean, std^2) per row [B], reduced over the non-batch dims; 0 where std is 0.

    sample, mean: [B, ...] float32; std: [B, 1, ..., 1] float32.
    """
    batch = sample.shape[0]
    std_row = std.reshape(batch)
    deterministic = std_row == 0
    # std = 1 on deterministic rows keeps the arithmetic (and its gradient) finite before the
    # rows are zeroed below; torch.where alone would let a NaN gradient through.
    safe_std = torch.where(deterministic, torch.ones_like(std_row), std_row)
    z = (sample - mean).reshape(batch, -1) / safe_std[:, None]
    squared = z.square()
    per_element_constant = torch.log(safe_std) + _HALF_LOG_TWO_PI
    if reduce == "sum":
        log_prob = -0.5 * squared.sum(dim=1) - per_element_constant * z.shape[1]
    else:
        log_prob = -0.5 * squared.mean(dim=1) - per_element_constant
    return torch.where(deterministic, torch.zeros_like(log_prob), log_prob)


def _as_column(value: Sigma, x: Tensor, name: str) -> Tensor:
    """A float or a [B] tensor as a float32 column [B, 1, ..., 1] on ``x``'s device."""
    batch = x.shape[0]
    column_shape = (batch,) + (1,) * (x.dim() - 1)
    if not isinstance(value, Tensor):
        # torch.full writes the scalar on the device: no host-to-device copy, no sync.
        return torch.full(column_shape, float(value), dtype=torch.float32, device=x.device)
    if value.dim() == 0:
        value = value.expand(batch)
    if value.shape != (batch,):
        raise ValueError(
            f"{name} must be a float or a tensor of shape [B]=[{batch}], "
            f"got shape {list(value.shape)}"
        )
    return value.to(device=x.device, dtype=torch.float32).reshape(column_shape)


def _check_float_sigmas(sigma: Sigma, sigma_next: Sigma) -> None:
    """Range checks on whichever of the two sigmas is a python number."""
    if not isinstance(sigma, Tensor) and not 0 < sigma <= 1:
        raise ValueError(f"sigma must be in (0, 1] (1 = pure noise), got {sigma}")
    if not isinstance(sigma_next, Tensor) and not 0 <= sigma_next < 1:
        raise ValueError(f"sigma_next must be in [0, 1) (0 = data), got {sigma_next}")
    if not isinstance(sigma, Tensor) and not isinstance(sigma_next, Tensor):
        if not sigma_next < sigma:
            raise ValueError(
                f"sigma_next must be below sigma={sigma} (sigma decreases), got {sigma_next}"
            )


def _check_inputs(
    velocity: Tensor,
    x: Tensor,
    noise: Tensor | None,
    prev_sample: Tensor | None,
    reduce: str,
) -> None:
    if x.dim() < 1:
        raise ValueError("x must have a batch dimension, shape [B, ...]; got a scalar")
    if velocity.shape != x.shape:
        raise ValueError(
            f"velocity must have x's shape {list(x.shape)}, got {list(velocity.shape)}"
        )
    if noise is not None and prev_sample is not None:
        raise ValueError("pass noise (to draw a sample) or prev_sample (to score one), not both")
    for name, tensor in (("noise", noise), ("prev_sample", prev_sample)):
        if tensor is not None and tensor.shape != x.shape:
            raise ValueError(
                f"{name} must have x's shape {list(x.shape)}, got {list(tensor.shape)}"
            )
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
