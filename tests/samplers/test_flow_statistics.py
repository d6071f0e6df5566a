"""Do the samplers, driven by the exact velocity field, reproduce the data distribution?

For Gaussian data x0 ~ N(m, s^2) (independently per dimension) and noise ~ N(0, 1),
x_sigma = (1 - sigma) x0 + sigma noise is Gaussian with mean (1 - sigma) m and variance
V(sigma) = (1 - sigma)^2 s^2 + sigma^2, jointly Gaussian with v = noise - x0. So the exact
marginal velocity E[v | x_sigma] is linear in x_sigma:

    v(x, sigma) = -m + (sigma - (1 - sigma) s^2) / V(sigma) * (x - (1 - sigma) m)

(E[v] = -m; Cov(v, x_sigma) = sigma - (1 - sigma) s^2.) Every sampler step is then affine in x
plus Gaussian noise, so the law of a whole discrete chain is Gaussian and its mean and
variance follow exactly from a scalar float64 recursion (``discrete_law`` below, written from
the papers' formulas, not by calling the samplers). That splits each check into

- sampling error of the Monte Carlo estimate: the sample mean has standard error s / sqrt(n),
  the sample variance s^2 sqrt(2 / (n - 1)); we allow 4 standard errors, and
- discretisation error of the chain: the recursion gives it exactly; at 200 steps it is below
  1.5 % of s^2 in variance for the ODE, FlowSDE and DanceSDE (first-order Euler error), and
  exactly 0 in the mean (an affine flow keeps E[x_sigma] = (1 - sigma) m at every step), so we
  allow DISCRETISATION_TOL = 2 % of s^2 and assert that the recursion stays inside it.

CPS and short FlowSDE windows at sigma = 1 do not reproduce the variance; the tests below pin
how far off they are and why (see the CPS and FlowSDE docstrings).
"""

from __future__ import annotations

import math

import pytest
import torch

from unigrpo_kit.samplers.flow import CPS, DanceSDE, FlowODE, FlowSDE
from unigrpo_kit.samplers.schedules import shifted_sigmas

DATA_MEAN = (0.5, -1.0)
DATA_STD = (0.6, 1.5)
NUM_SAMPLES = 16384
NUM_STEPS = 200
STANDARD_ERRORS = 4.0
DISCRETISATION_TOL = 0.02


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """The chains are many tiny ops: extra threads only add waits on a busy, shared CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def exact_velocity(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[noise - x0 | x_sigma = x] for the Gaussian data above; x: [n, 2]."""
    m = torch.tensor(DATA_MEAN)
    s2 = torch.tensor(DATA_STD) ** 2
    variance = (1 - sigma) ** 2 * s2 + sigma**2
    return -m + (sigma - (1 - sigma) * s2) / variance * (x - (1 - sigma) * m)


def run_chain(samplers: list, sigmas: torch.Tensor, seed: int) -> torch.Tensor:
    """Start from pure noise and take step i with samplers[i]; returns x at sigma = 0, [n, 2]."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(NUM_SAMPLES, 2, generator=generator)
    sigma_values = sigmas.tolist()
    for sampler, sigma, sigma_next in zip(
        samplers, sigma_values[:-1], sigma_values[1:], strict=True
    ):
        x = sampler.step(exact_velocity(x, sigma), sigma, sigma_next, x, generator=generator)[0]
    return x


# Scalar float64 step formulas for the recursion: (mean as a function of x and v, std).


def ode_step(x, v, sigma, sigma_next):
    return x + v * (sigma_next - sigma), 0.0


def flow_sde_step(x, v, sigma, sigma_next, a=0.7):
    dt = sigma_next - sigma
    g = a * math.sqrt(sigma / (1 - (sigma_next if sigma == 1 else sigma)))
    score = -(x + (1 - sigma) * v) / sigma
    return x + (v - g**2 / 2 * score) * dt, g * math.sqrt(-dt)


def dance_step(x, v, sigma, sigma_next, eta=0.3):
    dt = sigma_next - sigma
    score = -(x + (1 - sigma) * v) / sigma
    return x + (v - eta**2 / 2 * score) * dt, eta * math.sqrt(-dt)


def cps_step(x, v, sigma, sigma_next, a=0.8):
    std = sigma_next * math.sin(a * math.pi / 2)
    x0_hat, x1_hat = x - sigma * v, x + (1 - sigma) * v
    return (1 - sigma_next) * x0_hat + math.sqrt(sigma_next**2 - std**2) * x1_hat, std


def discrete_law(steps: list, sigmas: list[float], m: float, s: float) -> tuple[float, float]:
    """Exact mean and variance of the chain's final sample, in float64.

    Each step maps x to A x + B + std * eps; A and B come from evaluating the step's mean
    (with the exact, affine velocity) at x = 0 and x = 1.
    """
    mean, variance = 0.0, 1.0
    for step, sigma, sigma_next in zip(steps, sigmas[:-1], sigmas[1:], strict=True):
        v_variance = (1 - sigma) ** 2 * s**2 + sigma**2
        slope = (sigma - (1 - sigma) * s**2) / v_variance

        def velocity(x, sigma=sigma, slope=slope):
            return -m + slope * (x - (1 - sigma) * m)

        offset, std = step(0.0, velocity(0.0), sigma, sigma_next)
        gain = step(1.0, velocity(1.0), sigma, sigma_next)[0] - offset
        mean, variance = gain * mean + offset, gain**2 * variance + std**2
    return mean, variance


def assert_matches(samples: torch.Tensor, means, variances, variance_allowance=0.0) -> None:
    """Per dimension: sample mean and variance within 4 standard errors.

    ``variance_allowance`` is added to the variance tolerance as a fraction of each
    dimension's variance (the discretisation error, when comparing with the data law).
    """
    n = samples.shape[0]
    for dim, (mean, variance) in enumerate(zip(means, variances, strict=True)):
        column = samples[:, dim].double()
        mean_tol = STANDARD_ERRORS * math.sqrt(variance / n)
        variance_tol = variance * (STANDARD_ERRORS * math.sqrt(2 / (n - 1)) + variance_allowance)
        assert abs(column.mean().item() - mean) < mean_tol, (dim, column.mean().item(), mean)
        assert abs(column.var().item() - variance) < variance_tol, (
            dim,
            column.var().item(),
            variance,
        )


CONSISTENT = [
    pytest.param(FlowODE(), ode_step, id="FlowODE"),
    pytest.param(FlowSDE(0.7), flow_sde_step, id="FlowSDE"),
    pytest.param(DanceSDE(0.3), dance_step, id="DanceSDE"),
    pytest.param(DanceSDE(1.0), lambda *a: dance_step(*a, eta=1.0), id="DanceSDE-eta1"),
]


@pytest.mark.parametrize(("sampler", "formula"), CONSISTENT)
def test_every_step_sampling_reproduces_the_data_marginals(sampler, formula):
    sigmas = shifted_sigmas(NUM_STEPS)
    samples = run_chain([sampler] * NUM_STEPS, sigmas, seed=0)

    for m, s in zip(DATA_MEAN, DATA_STD, strict=True):
        law_mean, law_variance = discrete_law([formula] * NUM_STEPS, sigmas.tolist(), m, s)
        assert law_mean == pytest.approx(m, abs=1e-9)
        assert abs(law_variance - s**2) < DISCRETISATION_TOL * s**2
    assert_matches(samples, DATA_MEAN, [s**2 for s in DATA_STD], DISCRETISATION_TOL)


def test_cps_on_every_step_keeps_the_mean_but_under_disperses_as_predicted():
    sigmas = shifted_sigmas(NUM_STEPS)
    samples = run_chain([CPS(0.8)] * NUM_STEPS, sigmas, seed=1)

    laws = [
        discrete_law([cps_step] * NUM_STEPS, sigmas.tolist(), m, s)
        for m, s in zip(DATA_MEAN, DATA_STD, strict=True)
    ]
    assert_matches(samples, [law[0] for law in laws], [law[1] for law in laws])
    # The documented property, not a tolerance: each CPS step drops k^2 Var(x0 | x), with
    # k = O(1) for a > 0, so over 200 steps the variance ends about 30 % short.
    for (law_mean, law_variance), m, s in zip(laws, DATA_MEAN, DATA_STD, strict=True):
        assert law_mean == pytest.approx(m, abs=1e-9)
        assert law_variance < 0.75 * s**2


@pytest.mark.parametrize(("sigma", "sigma_next"), [(0.6, 0.5), (0.9, 0.3)])
def test_one_cps_step_loses_exactly_the_plug_in_posterior_variance(sigma, sigma_next):
    # Start from the exact marginal at sigma, take one CPS step and compare with
    # V(sigma') - k^2 Var(x0 | x_sigma), where sigma' = sigma_next and
    # k = (1 - sigma') - cos(a pi / 2) sigma' (1 - sigma) / sigma
    a = 0.8
    generator = torch.Generator().manual_seed(2)
    m, s = torch.tensor(DATA_MEAN), torch.tensor(DATA_STD)
    x0 = m + s * torch.randn(NUM_SAMPLES, 2, generator=generator)
    x = (1 - sigma) * x0 + sigma * torch.randn(NUM_SAMPLES, 2, generator=generator)
    out = CPS(a).step(exact_velocity(x, sigma), sigma, sigma_next, x, generator=generator)

    k = (1 - sigma_next) - math.cos(a * math.pi / 2) * sigma_next * (1 - sigma) / sigma
    means, variances = [], []
    for m_dim, s_dim in zip(DATA_MEAN, DATA_STD, strict=True):
        variance_here = (1 - sigma) ** 2 * s_dim**2 + sigma**2
        posterior_variance = s_dim**2 * sigma**2 / variance_here
        true_next = (1 - sigma_next) ** 2 * s_dim**2 + sigma_next**2
        means.append((1 - sigma_next) * m_dim)
        variances.append(true_next - k**2 * posterior_variance)
        assert k**2 * posterior_variance > 0.02 * true_next  # a real, visible shortfall
    assert_matches(out.prev_sample, means, variances)


def test_cps_window_at_sigma_one_costs_little():
    # Flow-GRPO-Fast / UniGRPO use CPS on a few steps near sigma = 1, where k -> 0.
    sigmas = shifted_sigmas(NUM_STEPS)
    steps = [CPS(0.8)] * 3 + [FlowODE()] * (NUM_STEPS - 3)
    samples = run_chain(steps, sigmas, seed=3)
    formulas = [cps_step] * 3 + [ode_step] * (NUM_STEPS - 3)
    for m, s in zip(DATA_MEAN, DATA_STD, strict=True):
        law_variance = discrete_law(formulas, sigmas.tolist(), m, s)[1]
        assert abs(law_variance - s**2) < DISCRETISATION_TOL * s**2
    assert_matches(samples, DATA_MEAN, [s**2 for s in DATA_STD], DISCRETISATION_TOL)


def test_flow_sde_window_at_sigma_one_keeps_excess_variance():
    # The caveat in FlowSDE's docstring: the first steps inject O(a^2) variance however fine
    # the grid, and ODE steps after the window do not take it out again.
    sigmas = shifted_sigmas(NUM_STEPS)
    steps = [FlowSDE(0.7)] * 3 + [FlowODE()] * (NUM_STEPS - 3)
    samples = run_chain(steps, sigmas, seed=4)
    formulas = [flow_sde_step] * 3 + [ode_step] * (NUM_STEPS - 3)
    laws = [
        discrete_law(formulas, sigmas.tolist(), m, s)
        for m, s in zip(DATA_MEAN, DATA_STD, strict=True)
    ]
    assert_matches(samples, [law[0] for law in laws], [law[1] for law in laws])
    for (_, law_variance), s in zip(laws, DATA_STD, strict=True):
        assert law_variance > (1 + 2 * DISCRETISATION_TOL) * s**2


def test_flow_sde_first_step_injects_a_squared_whatever_the_step_size():
    # At sigma = 1 the velocity is exactly x - m and the step is x (1 - a^2/2 + dt) + ... with
    # variance a^2 added: the result exceeds V(sigma_next) by about a^4 / 4 as dt -> 0.
    a = 0.7
    for num_steps in (100, 1000):
        sigma_next = 1 - 1 / num_steps
        generator = torch.Generator().manual_seed(num_steps)
        x = torch.randn(NUM_SAMPLES, 2, generator=generator)
        out = FlowSDE(a).step(exact_velocity(x, 1.0), 1.0, sigma_next, x, generator=generator)
        dt = sigma_next - 1
        predicted = [(1 - a**2 / 2 + dt) ** 2 + a**2] * 2
        assert_matches(out.prev_sample, [-dt * m for m in DATA_MEAN], predicted)
        true_next = [(1 - sigma_next) ** 2 * s**2 + sigma_next**2 for s in DATA_STD]
        excess = [p - t for p, t in zip(predicted, true_next, strict=True)]
        assert all(abs(e - a**4 / 4) < 0.03 for e in excess)
