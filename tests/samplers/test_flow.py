"""One-step maths of the flow samplers, pinned against float64 formulas written here."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unigrpo_kit.registry import SAMPLERS
from unigrpo_kit.samplers.flow import CPS, DanceSDE, FlowODE, FlowSDE, StepOutput

SHAPE = (3, 2, 4, 5)


def make_inputs(seed: int = 0, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=generator).to(dtype)
    velocity = torch.randn(SHAPE, generator=generator).to(dtype)
    noise = torch.randn(SHAPE, generator=generator)
    return velocity, x, noise


# Independent float64 references, each written from its paper in a different algebraic form
# from the code: the SDE drift as "v - g^2 / 2 * score" and CPS with its square root.


def reference_ode(v, sigma, sigma_next, x):
    return x + v * (sigma_next - sigma), 0.0


def reference_flow_sde(v, sigma, sigma_next, x, a):
    dt = sigma_next - sigma
    one_minus = 1 - (sigma_next if sigma == 1 else sigma)
    g = a * math.sqrt(sigma / one_minus)
    # reverse SDE: dx = [v - g^2 / 2 * score] dt + g dW, score = -(x + (1 - sigma) v) / sigma
    score = -(x + (1 - sigma) * v) / sigma
    return x + (v - g**2 / 2 * score) * dt, g * math.sqrt(-dt)


def reference_dance(v, sigma, sigma_next, x, eta):
    dt = sigma_next - sigma
    noise_hat = (x - (1 - sigma) * (x - sigma * v)) / sigma
    score = -noise_hat / sigma
    return x + (v - eta**2 / 2 * score) * dt, eta * math.sqrt(sigma - sigma_next)


def reference_cps(v, sigma, sigma_next, x, a):
    std = sigma_next * math.sin(a * math.pi / 2)
    x0_hat, x1_hat = x - sigma * v, x + (1 - sigma) * v
    return (1 - sigma_next) * x0_hat + math.sqrt(sigma_next**2 - std**2) * x1_hat, std


def reference_log_prob(sample, mean, std):
    """Mean over non-batch dims of the float64 Gaussian log density."""
    density = torch.distributions.Normal(mean.double(), std).log_prob(sample.double())
    return density.flatten(1).mean(dim=1)


CASES = [
    pytest.param(FlowSDE(noise_level=0.7), lambda *a: reference_flow_sde(*a, 0.7), id="FlowSDE"),
    pytest.param(DanceSDE(eta=0.3), lambda *a: reference_dance(*a, 0.3), id="DanceSDE"),
    pytest.param(CPS(noise_level=0.8), lambda *a: reference_cps(*a, 0.8), id="CPS"),
]
ALL_SAMPLERS = [
    pytest.param(FlowODE(), id="FlowODE"),
    pytest.param(FlowSDE(0.7), id="FlowSDE"),
    pytest.param(DanceSDE(0.3), id="DanceSDE"),
    pytest.param(CPS(0.8), id="CPS"),
]


@pytest.mark.parametrize(("sampler", "reference"), CASES)
@pytest.mark.parametrize(("sigma", "sigma_next"), [(0.7, 0.6), (1.0, 0.9), (0.2, 0.0)])
def test_step_matches_float64_reference(sampler, reference, sigma, sigma_next):
    velocity, x, noise = make_inputs()
    out = sampler.step(velocity, sigma, sigma_next, x, noise=noise)

    mean, std = reference(velocity.double(), sigma, sigma_next, x.double())
    assert isinstance(out, StepOutput)
    assert out.std.shape == (SHAPE[0], 1, 1, 1)
    torch.testing.assert_close(out.mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.std.double(), torch.full_like(out.std.double(), std))
    expected_sample = mean + std * noise.double()
    torch.testing.assert_close(out.prev_sample.double(), expected_sample, rtol=1e-5, atol=1e-5)
    if std > 0:
        expected_log_prob = reference_log_prob(out.prev_sample, mean, std)
        torch.testing.assert_close(out.log_prob.double(), expected_log_prob, rtol=1e-5, atol=1e-5)
    else:
        assert torch.equal(out.log_prob, torch.zeros(SHAPE[0]))


def test_ode_is_euler_with_zero_log_prob():
    velocity, x, noise = make_inputs()
    out = FlowODE().step(velocity, 0.5, 0.25, x, noise=noise)

    mean, _ = reference_ode(velocity.double(), 0.5, 0.25, x.double())
    torch.testing.assert_close(out.prev_sample.double(), mean)
    assert torch.equal(out.prev_sample, out.mean)
    assert torch.equal(out.log_prob, torch.zeros(SHAPE[0]))
    assert torch.equal(out.std, torch.zeros(SHAPE[0], 1, 1, 1))


def test_is_stochastic():
    assert not FlowODE().is_stochastic()
    assert FlowSDE().is_stochastic() and DanceSDE().is_stochastic() and CPS().is_stochastic()
    assert not FlowSDE(noise_level=0.0).is_stochastic()
    assert not DanceSDE(eta=0.0).is_stochastic()
    assert not CPS(noise_level=0.0).is_stochastic()


@pytest.mark.parametrize("sampler", ALL_SAMPLERS[1:])
def test_drawn_sample_log_prob_is_its_density_and_rescoring_reproduces_it(sampler):
    velocity, x, _ = make_inputs(seed=1)
    drawn = sampler.step(velocity, 0.8, 0.7, x, generator=torch.Generator().manual_seed(3))

    expected = reference_log_prob(drawn.prev_sample, drawn.mean, drawn.std.double())
    torch.testing.assert_close(drawn.log_prob.double(), expected, rtol=1e-5, atol=1e-5)
    rescored = sampler.step(velocity, 0.8, 0.7, x, prev_sample=drawn.prev_sample)
    assert torch.equal(rescored.log_prob, drawn.log_prob)
    assert torch.equal(rescored.prev_sample, drawn.prev_sample)
    summed = sampler.step(velocity, 0.8, 0.7, x, prev_sample=drawn.prev_sample, reduce="sum")
    elements_per_row = math.prod(SHAPE[1:])
    torch.testing.assert_close(summed.log_prob, drawn.log_prob * elements_per_row)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS[1:])
def test_seeded_generator_reproduces_the_draw(sampler):
    velocity, x, _ = make_inputs()
    first = sampler.step(velocity, 0.5, 0.4, x, generator=torch.Generator().manual_seed(7))
    second = sampler.step(velocity, 0.5, 0.4, x, generator=torch.Generator().manual_seed(7))
    other = sampler.step(velocity, 0.5, 0.4, x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.prev_sample, second.prev_sample)
    assert not torch.equal(first.prev_sample, other.prev_sample)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
@pytest.mark.parametrize(("sigma", "sigma_next"), [(1.0, 0.96), (1.0, 0.0), (0.04, 0.0)])
def test_first_and_last_steps_are_finite(sampler, sigma, sigma_next):
    velocity, x, noise = make_inputs()
    out = sampler.step(velocity, sigma, sigma_next, x, noise=noise)
    for name, value in out._asdict().items():
        assert torch.isfinite(value).all(), name


def test_flow_sde_at_sigma_one_uses_sigma_next_in_the_denominator():
    # std_t = a sqrt(1 / (1 - sigma_next)), so std = std_t sqrt(1 - sigma_next) = a exactly.
    velocity, x, noise = make_inputs()
    out = FlowSDE(noise_level=0.7).step(velocity, 1.0, 0.9, x, noise=noise)
    torch.testing.assert_close(out.std, torch.full((SHAPE[0], 1, 1, 1), 0.7))
    # at sigma = 1 the v coefficient is exactly dt and the x coefficient 1 - a^2 / 2
    expected_mean = x.double() * (1 - 0.7**2 / 2) + velocity.double() * (0.9 - 1.0)
    torch.testing.assert_close(out.mean.double(), expected_mean, rtol=1e-5, atol=1e-6)


def test_cps_last_step_is_deterministic_with_zero_log_prob():
    velocity, x, noise = make_inputs()
    out = CPS(noise_level=0.8).step(velocity, 0.1, 0.0, x, noise=noise)
    assert torch.equal(out.std, torch.zeros(SHAPE[0], 1, 1, 1))
    assert torch.equal(out.prev_sample, out.mean)
    torch.testing.assert_close(out.mean.double(), x.double() - 0.1 * velocity.double())
    assert torch.equal(out.log_prob, torch.zeros(SHAPE[0]))


def test_dance_last_step_keeps_its_noise():
    velocity, x, noise = make_inputs()
    out = DanceSDE(eta=0.3).step(velocity, 0.1, 0.0, x, noise=noise)
    torch.testing.assert_close(out.std, torch.full((SHAPE[0], 1, 1, 1), 0.3 * math.sqrt(0.1)))
    assert torch.isfinite(out.log_prob).all() and (out.log_prob != 0).all()


@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_give_float32_maths(sampler, dtype):
    velocity, x, noise = make_inputs(dtype=dtype)
    out = sampler.step(velocity, 0.6, 0.5, x, noise=noise)
    assert out.prev_sample.dtype == dtype
    assert out.log_prob.dtype == out.mean.dtype == out.std.dtype == torch.float32
    # the maths ran on the upcast inputs, not in half precision
    full = sampler.step(velocity.float(), 0.6, 0.5, x.float(), noise=noise)
    assert torch.equal(out.mean, full.mean)
    # log_prob belongs to the returned (rounded) sample, so rescoring it reproduces it
    rescored = sampler.step(velocity, 0.6, 0.5, x, prev_sample=out.prev_sample)
    assert torch.equal(rescored.log_prob, out.log_prob)


@pytest.mark.parametrize("sampler", ALL_SAMPLERS)
def test_tensor_sigmas_match_per_row_float_steps(sampler):
    velocity, x, noise = make_inputs()
    sigmas = torch.tensor([1.0, 0.55, 0.1])
    sigmas_next = torch.tensor([0.9, 0.5, 0.0])
    batched = sampler.step(velocity, sigmas, sigmas_next, x, noise=noise)
    for row in range(SHAPE[0]):
        single = sampler.step(
            velocity[row : row + 1],
            float(sigmas[row]),
            float(sigmas_next[row]),
            x[row : row + 1],
            noise=noise[row : row + 1],
        )
        torch.testing.assert_close(batched.mean[row : row + 1], single.mean)
        torch.testing.assert_close(batched.std[row : row + 1], single.std)
        torch.testing.assert_close(batched.prev_sample[row : row + 1], single.prev_sample)
        torch.testing.assert_close(batched.log_prob[row : row + 1], single.log_prob)


def test_gradient_flows_to_velocity_and_stays_finite_on_deterministic_rows():
    velocity, x, noise = make_inputs()
    velocity.requires_grad_(True)
    sigmas = torch.tensor([0.5, 0.3, 0.2])
    sigmas_next = torch.tensor([0.4, 0.2, 0.0])  # row 2 lands on sigma 0: CPS std is 0 there
    drawn = CPS(0.8).step(velocity.detach(), sigmas, sigmas_next, x, noise=noise)
    out = CPS(0.8).step(velocity, sigmas, sigmas_next, x, prev_sample=drawn.prev_sample + 0.01)
    out.log_prob.sum().backward()
    assert torch.isfinite(velocity.grad).all()
    assert velocity.grad[:2].abs().sum() > 0
    assert torch.equal(velocity.grad[2], torch.zeros_like(velocity.grad[2]))


def test_registry_builds_each_sampler_with_its_settings():
    assert SAMPLERS.build(dict(type="FlowSDE", noise_level=0.8)).noise_level == 0.8
    assert SAMPLERS.build(dict(type="DanceSDE", eta=0.5)).eta == 0.5
    assert SAMPLERS.build(dict(type="CPS", noise_level=0.6)).noise_level == 0.6
    assert isinstance(SAMPLERS.build(dict(type="FlowODE")), FlowODE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(sigma=0.5, sigma_next=0.5), "sigma_next must be below sigma"),
        (dict(sigma=1.5, sigma_next=0.5), r"sigma must be in \(0, 1\]"),
        (dict(sigma=0.0, sigma_next=0.0), r"sigma must be in \(0, 1\]"),
        (dict(sigma=0.5, sigma_next=-0.1), r"sigma_next must be in \[0, 1\)"),
        (dict(sigma=torch.ones(2), sigma_next=0.5), r"sigma must be a float or a tensor of shape"),
        (dict(reduce="max"), "reduce must be 'mean' or 'sum'"),
        (dict(noise=torch.zeros(SHAPE), prev_sample=torch.zeros(SHAPE)), "not both"),
        (dict(noise=torch.zeros(2, 3)), "noise must have x's shape"),
    ],
)
def test_bad_step_arguments_raise_one_line_errors(kwargs, message):
    velocity, x, _ = make_inputs()
    call = dict(sigma=0.5, sigma_next=0.4) | kwargs
    with pytest.raises(ValueError, match=message) as error:
        FlowSDE().step(velocity, call.pop("sigma"), call.pop("sigma_next"), x, **call)
    assert "\n" not in str(error.value)


def test_mismatched_velocity_and_bad_settings_raise():
    _, x, _ = make_inputs()
    with pytest.raises(ValueError, match="velocity must have x's shape"):
        FlowODE().step(torch.zeros(3, 4), 0.5, 0.4, x)
    with pytest.raises(ValueError, match=r"CPS noise_level must be in \[0, 1\]"):
        CPS(noise_level=1.5)
    with pytest.raises(ValueError, match="DanceSDE eta must be"):
        DanceSDE(eta=-0.1)
    with pytest.raises(ValueError, match="FlowSDE noise_level must be"):
        FlowSDE(noise_level=float("nan"))


@st.composite
def step_arguments(draw):
    # Sigma steps of at least 1e-4 and sigmas of at least 1e-4: a 10,000-step schedule.
    sigma = draw(st.one_of(st.just(1.0), st.floats(2e-4, 1.0)))
    sigma_next = draw(st.one_of(st.just(0.0), st.floats(0.0, sigma - 1e-4)))
    values = st.floats(-1e3, 1e3, width=32)
    x = torch.tensor(draw(st.lists(values, min_size=6, max_size=6))).reshape(2, 3)
    velocity = torch.tensor(draw(st.lists(values, min_size=6, max_size=6))).reshape(2, 3)
    return velocity, sigma, sigma_next, x


@settings(max_examples=60, deadline=None)
@given(arguments=step_arguments(), seed=st.integers(0, 2**31 - 1))
def test_finite_inputs_give_finite_outputs(arguments, seed):
    velocity, sigma, sigma_next, x = arguments
    for sampler in (FlowODE(), FlowSDE(0.7), DanceSDE(0.3), CPS(0.8), CPS(1.0)):
        out = sampler.step(
            velocity, sigma, sigma_next, x, generator=torch.Generator().manual_seed(seed)
        )
        for name, value in out._asdict().items():
            assert torch.isfinite(value).all(), (repr(sampler), name, sigma, sigma_next)
