from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from unigrpo_kit.registry import SAMPLERS
from unigrpo_kit.samplers.text import TextPolicy, TextSampler

VOCAB = 11
PAD = 0


class TinyCausalLM(nn.Module):
    """A two-layer causal transformer with random weights and its own KV cache (a TextPolicy).

    Prompts are left-padded: padded keys are never attended to, positions count real tokens
    only, and a padded query attends to itself alone so that its (ignored) output stays finite.
    """

    def __init__(self, dim: int = 16, heads: int = 2, layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.heads = heads
            self.token_embedding = nn.Embedding(VOCAB, dim)
            self.position_embedding = nn.Embedding(64, dim)
            self.blocks = nn.ModuleList(
                nn.ModuleDict(
                    dict(
                        norm1=nn.LayerNorm(dim),
                        qkv=nn.Linear(dim, 3 * dim),
                        out=nn.Linear(dim, dim),
                        norm2=nn.LayerNorm(dim),
                        mlp=nn.Sequential(
                            nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
                        ),
                    )
                )
                for _ in range(layers)
            )
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, VOCAB)
            # Larger logits than the default init so that sampling is far from uniform.
            nn.init.normal_(self.head.weight, std=1.0)

    def run(
        self, ids: Tensor, positions: Tensor, key_valid: Tensor, past: list | None
    ) -> tuple[Tensor, list]:
        """ids, positions: [B, L]; key_valid: [B, P + L]; past: per-block (k, v) [B, H, P, D]."""
        batch, length = ids.shape
        past_length = 0 if past is None else past[0][0].shape[2]
        query_index = torch.arange(past_length, past_length + length)[:, None]
        key_index = torch.arange(past_length + length)[None, :]
        allowed = (key_index <= query_index) & key_valid[:, None, :] | (key_index == query_index)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        cache = []
        for i, block in enumerate(self.blocks):
            qkv = block.qkv(block.norm1(x)).view(batch, length, 3, self.heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            if past is not None:
                k = torch.cat([past[i][0], k], dim=2)
                v = torch.cat([past[i][1], v], dim=2)
            cache.append((k, v))
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            weights = scores.masked_fill(~allowed[:, None], float("-inf")).softmax(dim=-1)
            x = x + block.out((weights @ v).transpose(1, 2).reshape(batch, length, -1))
            x = x + block.mlp(block.norm2(x))
        return self.head(self.norm(x)), cache

    def forward(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Cache-free reference: logits [B, L, V] for every position of ids [B, L]."""
        mask = attention_mask.bool()
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        return self.run(ids, positions, mask, None)[0]

    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, tuple]:
        mask = attention_mask.bool()
        positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
        logits, cache = self.run(input_ids, positions, mask, None)
        return logits[:, -1], (cache, mask, positions[:, -1] + 1)

    def decode(self, state: tuple, token_ids: Tensor) -> tuple[Tensor, tuple]:
        cache, key_valid, position = state
        key_valid = torch.cat([key_valid, torch.ones_like(key_valid[:, :1])], dim=1)
        logits, cache = self.run(token_ids[:, None], position[:, None], key_valid, cache)
        return logits[:, -1], (cache, key_valid, position + 1)


class RecomputingPolicy:
    """The same LM with no cache: every step reruns the whole sequence so far."""

    def __init__(self, lm: TinyCausalLM) -> None:
        self.lm = lm

    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, tuple]:
        return self.lm(input_ids, attention_mask)[:, -1], (input_ids, attention_mask)

    def decode(self, state: tuple, token_ids: Tensor) -> tuple[Tensor, tuple]:
        ids = torch.cat([state[0], token_ids[:, None]], dim=1)
        mask = torch.cat([state[1], torch.ones_like(state[1][:, :1])], dim=1)
        return self.lm(ids, mask)[:, -1], (ids, mask)


class ScriptedPolicy:
    """Row b emits scripts[b][t] at step t (logit 4 on it, 0 elsewhere); records what it is fed."""

    def __init__(self, scripts: list[list[int]], vocab: int = 8) -> None:
        self.scripts = scripts
        self.vocab = vocab
        self.fed: list[list[int]] = []

    def logits(self, step: int) -> Tensor:
        logits = torch.zeros(len(self.scripts), self.vocab)
        for row, script in enumerate(self.scripts):
            logits[row, script[min(step, len(script) - 1)]] = 4.0
        return logits

    def prefill(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, int]:
        return self.logits(0), 0

    def decode(self, state: int, token_ids: Tensor) -> tuple[Tensor, int]:
        self.fed.append(token_ids.tolist())
        return self.logits(state + 1), state + 1


def left_padded_prompts() -> tuple[Tensor, Tensor]:
    """Four prompts of lengths 5, 3, 1 and 4, left-padded with PAD: ids and mask [4, 5]."""
    lengths = [5, 3, 1, 4]
    ids = torch.full((4, 5), PAD)
    mask = torch.zeros(4, 5, dtype=torch.long)
    generator = torch.Generator().manual_seed(7)
    for row, length in enumerate(lengths):
        ids[row, 5 - length :] = torch.randint(1, VOCAB, (length,), generator=generator)
        mask[row, 5 - length :] = 1
    return ids, mask


def reference_distribution(
    logits: list[float], temperature: float, top_k: int | None, top_p: float | None
) -> list[float]:
    """The documented truncated distribution, in float64 with plain Python."""
    scaled = [value / temperature for value in logits]
    order = sorted(range(len(scaled)), key=lambda token: (-scaled[token], token))
    kept = order[: top_k or len(order)]
    peak = scaled[kept[0]]
    weights = {token: math.exp(scaled[token] - peak) for token in kept}
    if top_p is not None:
        total = sum(weights.values())
        prefix, mass = [], 0.0
        for token in kept:
            prefix.append(token)
            mass += weights[token] / total
            if mass >= top_p:
                break
        weights = {token: weights[token] for token in prefix}
    total = sum(weights.values())
    return [weights.get(token, 0.0) / total for token in range(len(scaled))]


def log_softmax64(logits: list[float]) -> list[float]:
    peak = max(logits)
    log_total = peak + math.log(sum(math.exp(value - peak) for value in logits))
    return [value - log_total for value in logits]


def full_sequence_logits(lm: TinyCausalLM, ids: Tensor, mask: Tensor, tokens: Tensor) -> Tensor:
    """Logits [B, T, V] that predicted each generated token, from one cache-free pass."""
    sequence = torch.cat([ids, tokens], dim=1)
    sequence_mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
    with torch.no_grad():
        logits = lm(sequence, sequence_mask)
    return logits[:, ids.shape[1] - 1 : -1]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # Ops this small only pay thread start-up costs, which multiply when the cores are busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lm() -> TinyCausalLM:
    return TinyCausalLM().eval()


def test_tiny_lm_implements_the_protocol(lm: TinyCausalLM) -> None:
    assert isinstance(lm, TextPolicy)
    assert isinstance(RecomputingPolicy(lm), TextPolicy)


def test_cached_generation_equals_cache_free_recomputation(lm: TinyCausalLM) -> None:
    ids, mask = left_padded_prompts()
    sampler = TextSampler(temperature=1.3, top_k=8, max_new_tokens=10, stop_token_ids=(3,))
    cached = sampler.generate(lm, ids, mask, generator=torch.Generator().manual_seed(1))
    recomputed = sampler.generate(
        RecomputingPolicy(lm), ids, mask, generator=torch.Generator().manual_seed(1)
    )
    # The seed must exercise rows that stop at different times and a row that never stops.
    lengths = cached.mask.sum(dim=1)
    assert cached.finished.any() and not cached.finished.all()
    assert len(set(lengths[cached.finished].tolist())) > 1
    assert torch.equal(cached.tokens, recomputed.tokens)
    assert torch.equal(cached.mask, recomputed.mask)
    assert torch.equal(cached.finished, recomputed.finished)
    torch.testing.assert_close(cached.log_probs, recomputed.log_probs, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=4),
        dict(temperature=1.5, top_p=0.6),
        dict(temperature=0.9, top_k=5, top_p=0.8),
        dict(temperature=0.0),
    ],
)
def test_recorded_log_probs_equal_recomputed_ones(lm: TinyCausalLM, settings: dict) -> None:
    ids, mask = left_padded_prompts()
    sampler = TextSampler(max_new_tokens=8, stop_token_ids=(3, 5), **settings)
    sample = sampler.generate(lm, ids, mask, generator=torch.Generator().manual_seed(2))
    logits = full_sequence_logits(lm, ids, mask, sample.tokens)
    recomputed = sampler.token_log_probs(logits, sample.tokens)
    torch.testing.assert_close(
        sample.log_probs[sample.mask], recomputed[sample.mask], rtol=0, atol=1e-5
    )
    assert torch.all(sample.log_probs[~sample.mask] == 0)
    assert torch.all(sample.log_probs[sample.mask] <= 0)


def test_sampling_and_recomputation_agree_exactly_on_the_same_logits() -> None:
    logits = torch.randn(64, VOCAB, generator=torch.Generator().manual_seed(3)) * 3
    sampler = TextSampler(temperature=0.8, top_k=6, top_p=0.7)
    token, log_prob = sampler.sample_from_logits(logits, torch.Generator().manual_seed(4))
    recomputed = sampler.token_log_probs(logits[:, None], token[:, None])[:, 0]
    torch.testing.assert_close(log_prob, recomputed, rtol=0, atol=1e-6)
    assert log_prob.dtype == torch.float32 and token.dtype == torch.long


def test_greedy_generation_matches_an_independent_per_row_loop(lm: TinyCausalLM) -> None:
    ids, mask = left_padded_prompts()
    stop, max_new_tokens = (6, 8), 7
    sample = TextSampler(
        temperature=0, max_new_tokens=max_new_tokens, stop_token_ids=stop
    ).generate(lm, ids, mask)
    for row in range(ids.shape[0]):
        sequence = ids[row, mask[row].bool()].tolist()
        expected_tokens, expected_log_probs, stopped = [], [], False
        with torch.no_grad():
            while len(expected_tokens) < max_new_tokens and not stopped:
                logits = lm(torch.tensor([sequence]), torch.ones(1, len(sequence)))[0, -1]
                log_probs = log_softmax64(logits.double().tolist())
                token = max(range(VOCAB), key=lambda candidate: log_probs[candidate])
                expected_tokens.append(token)
                expected_log_probs.append(log_probs[token])
                sequence.append(token)
                stopped = token in stop
        length = len(expected_tokens)
        assert sample.tokens[row, :length].tolist() == expected_tokens
        assert torch.all(sample.tokens[row, length:] == PAD)
        assert sample.mask[row].tolist() == [True] * length + [False] * (
            sample.mask.shape[1] - length
        )
        assert sample.finished[row].item() == stopped
        torch.testing.assert_close(
            sample.log_probs[row, :length].double(),
            torch.tensor(expected_log_probs, dtype=torch.float64),
            rtol=0,
            atol=1e-5,
        )
    assert sample.finished.any() and not sample.finished.all()


@pytest.mark.parametrize("truncation", [dict(top_k=1), dict(top_p=1e-6)])
def test_top_k_one_and_tiny_top_p_are_greedy(lm: TinyCausalLM, truncation: dict) -> None:
    ids, mask = left_padded_prompts()
    greedy = TextSampler(temperature=0, max_new_tokens=6).generate(lm, ids, mask)
    truncated = TextSampler(temperature=1.7, max_new_tokens=6, **truncation).generate(
        lm, ids, mask, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(truncated.tokens, greedy.tokens)
    # The kept set is the argmax alone, so the distribution sampled from is a point mass.
    assert torch.all(truncated.log_probs == 0)


def test_one_step_frequencies_match_the_truncated_distribution() -> None:
    logits = [1.2, -0.3, 2.0, 0.4, 1.9, -1.0, 0.9]
    temperature, top_k, top_p, draws = 0.8, 5, 0.85, 40_000
    expected = reference_distribution(logits, temperature, top_k, top_p)
    sampler = TextSampler(temperature=temperature, top_k=top_k, top_p=top_p)
    token, log_prob = sampler.sample_from_logits(
        torch.tensor([logits]).expand(draws, -1), torch.Generator().manual_seed(6)
    )
    counts = torch.bincount(token, minlength=len(logits)).tolist()
    assert sum(probability > 0 for probability in expected) == 3  # truncation really bites
    for count, probability in zip(counts, expected, strict=True):
        if probability == 0:
            assert count == 0
            continue
        # Each frequency is a binomial proportion with standard error sqrt(p (1 - p) / N);
        # 5 standard errors puts a false alarm below 1e-6 per token.
        standard_error = math.sqrt(probability * (1 - probability) / draws)
        assert abs(count / draws - probability) < 5 * standard_error
    expected_log_probs = torch.tensor(
        [math.log(max(p, 1e-300)) for p in expected], dtype=torch.float64
    )
    torch.testing.assert_close(log_prob.double(), expected_log_probs[token], rtol=0, atol=1e-6)


def test_truncated_distribution_against_float64_with_ties() -> None:
    # Tokens 2, 3 and 5 tie at 2.0; the lower ids win the last top-k slots.
    logits = [1.0, 3.0, 2.0, 2.0, -1.0, 2.0, 0.5]
    cases = [
        (0.5, 3, None, {1, 2, 3}),
        # q(1) = .43 and q(2) = q(3) = q(5) = .16: the mass is .74 after token 3, .90 after 5.
        (1.0, None, 0.75, {1, 2, 3, 5}),
        (1.0, None, 0.7, {1, 2, 3}),
        (2.0, 4, 0.5, {1, 2}),
        (1.0, 3, 0.99, {1, 2, 3}),
        (1.3, None, None, set(range(7))),
    ]
    for temperature, top_k, top_p, kept in cases:
        expected = reference_distribution(logits, temperature, top_k, top_p)
        assert {token for token, p in enumerate(expected) if p > 0} == kept
        sampler = TextSampler(temperature=temperature, top_k=top_k, top_p=top_p)
        tokens = torch.arange(len(logits))[None]
        log_probs = sampler.token_log_probs(torch.tensor([[logits] * len(logits)]), tokens)[0]
        for token in kept:
            assert abs(log_probs[token].item() - math.log(expected[token])) < 1e-6
        # A dropped token is added back to the kept set when asked about, never -inf.
        kept_scaled = [logits[token] / temperature for token in sorted(kept)]
        for token in set(range(len(logits))) - kept:
            scaled = logits[token] / temperature
            added_back = log_softmax64(kept_scaled + [scaled])[-1]
            assert abs(log_probs[token].item() - added_back) < 1e-6


def test_recomputed_log_probs_have_the_truncated_softmax_gradient() -> None:
    # d log pi(a) / d l_b = (1[a = b] - pi(b)) / temperature on kept tokens, 0 on dropped ones.
    values = [0.3, 1.5, -0.2, 1.1, 0.9]
    temperature, top_k, token = 0.5, 3, 3
    logits = torch.tensor([[values]], requires_grad=True)
    sampler = TextSampler(temperature=temperature, top_k=top_k)
    sampler.token_log_probs(logits, torch.tensor([[token]])).sum().backward()
    distribution = reference_distribution(values, temperature, top_k, None)
    expected = [
        ((b == token) - p) / temperature if p > 0 else 0.0 for b, p in enumerate(distribution)
    ]
    torch.testing.assert_close(
        logits.grad[0, 0].double(), torch.tensor(expected, dtype=torch.float64)
    )


def test_top_p_ties_keep_the_lowest_ids_and_the_exact_mass() -> None:
    # Four equal tokens of mass 1/4: two reach top_p = 0.5 exactly, and ties go to ids 0 and 1.
    sampler = TextSampler(top_p=0.5)
    token, _ = sampler.sample_from_logits(torch.zeros(2000, 4), torch.Generator().manual_seed(8))
    assert set(token.tolist()) == {0, 1}
    log_probs = sampler.token_log_probs(torch.zeros(1, 2, 4), torch.tensor([[0, 1]]))
    torch.testing.assert_close(log_probs, torch.full((1, 2), math.log(0.5)))


def test_greedy_ties_pick_the_lowest_id_with_untempered_log_probs() -> None:
    logits = torch.tensor([[0.5, 2.0, 2.0, -1.0], [3.0, 3.0, 0.0, 0.0]])
    token, log_prob = TextSampler(temperature=0, top_k=2).sample_from_logits(logits)
    assert token.tolist() == [1, 0]
    for row in range(2):
        expected = log_softmax64(logits[row].tolist())[token[row]]
        assert abs(log_prob[row].item() - expected) < 1e-6


def test_rows_stop_at_their_own_stop_token_and_finished_rows_are_fed_padding() -> None:
    pad, stop = 7, 1
    policy = ScriptedPolicy([[4, 5, stop], [stop], [2, 3, 4, 5, 6, 2, 3], [6, stop]])
    sampler = TextSampler(temperature=0, max_new_tokens=5, stop_token_ids=(stop,), pad_token_id=pad)
    sample = sampler.generate(policy, torch.ones(4, 2, dtype=torch.long), torch.ones(4, 2))
    assert sample.tokens.tolist() == [
        [4, 5, stop, pad, pad],
        [stop, pad, pad, pad, pad],
        [2, 3, 4, 5, 6],
        [6, stop, pad, pad, pad],
    ]
    assert sample.mask.sum(dim=1).tolist() == [3, 1, 5, 2]
    assert torch.equal(sample.mask, sample.tokens != pad)
    assert sample.finished.tolist() == [True, True, False, True]
    # Each decode gets the previous step's tokens, with padding once a row has stopped.
    assert policy.fed == [
        [4, stop, 2, 6],
        [5, pad, 3, stop],
        [stop, pad, 4, pad],
        [pad, pad, 5, pad],
    ]
    log_prob_of_peak = log_softmax64([4.0] + [0.0] * 7)[0]
    expected = torch.where(sample.mask, log_prob_of_peak, 0.0)
    torch.testing.assert_close(sample.log_probs, expected.float(), rtol=0, atol=1e-6)


def test_generation_stops_early_once_every_row_has_finished() -> None:
    policy = ScriptedPolicy([[3, 1], [1], [2, 2, 1]])
    sample = TextSampler(temperature=0, max_new_tokens=10, stop_token_ids=(1,)).generate(
        policy, torch.ones(3, 1, dtype=torch.long), torch.ones(3, 1)
    )
    assert sample.tokens.shape == (3, 3)
    assert len(policy.fed) == 2
    assert sample.finished.all()


def test_a_stop_token_at_the_length_limit_counts_as_finished() -> None:
    policy = ScriptedPolicy([[2, 1], [2, 2, 2]])
    sample = TextSampler(temperature=0, max_new_tokens=2, stop_token_ids=(1,)).generate(
        policy, torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1)
    )
    assert sample.finished.tolist() == [True, False]
    assert sample.mask.all()


def test_built_from_the_registry() -> None:
    sampler = SAMPLERS.build(dict(type="TextSampler", top_k=3, stop_token_ids=[2]))
    assert isinstance(sampler, TextSampler)
    assert sampler.top_k == 3 and sampler.stop_token_ids == (2,)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(temperature=-0.5), "temperature must be >= 0"),
        (dict(top_k=0), "top_k must be None or an int >= 1"),
        (dict(top_p=0.0), r"top_p must be None or in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be None or in \(0, 1\]"),
        (dict(max_new_tokens=0), "max_new_tokens must be an int >= 1"),
        (dict(stop_token_ids=[-1]), "stop_token_ids must be non-negative ints"),
        (dict(pad_token_id=-2), "pad_token_id must be an int >= 0"),
    ],
)
def test_bad_settings_fail_with_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        TextSampler(**settings)
    assert "\n" not in str(error.value)


def test_bad_calls_fail_with_one_line(lm: TinyCausalLM) -> None:
    sampler = TextSampler()
    with pytest.raises(TypeError, match="policy must implement TextPolicy"):
        sampler.generate(object(), torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2))
    with pytest.raises(ValueError, match=r"must both be \[B, n\], got \(2, 3\) and \(2, 4\)"):
        sampler.generate(lm, torch.ones(2, 3, dtype=torch.long), torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"logits must be \[B, T, V\]"):
        sampler.token_log_probs(torch.zeros(2, 3, VOCAB), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits must be \[B, V\]"):
        sampler.sample_from_logits(torch.zeros(2, 3, VOCAB))


def test_forced_rows_write_the_reference_with_its_log_probs_and_leave_the_others_alone(
    lm: TinyCausalLM,
) -> None:
    """Off-policy guidance: rows 1 and 3 emit a given reference (ending in the stop token 3),
    recorded with log pi of the truncated, tempered distribution computed here in float64 from
    a cache-free pass; rows 0 and 2 draw exactly what they draw without forcing."""
    ids, mask = left_padded_prompts()
    sampler = TextSampler(temperature=1.3, top_k=6, max_new_tokens=8, stop_token_ids=(3,))
    reference = torch.tensor([[9, 9, 9, 3], [5, 7, 3, 0], [9, 9, 9, 3], [10, 1, 2, 3]])
    rows = torch.tensor([False, True, False, True])
    free = sampler.generate(lm, ids, mask, generator=torch.Generator().manual_seed(4))
    guided = sampler.generate(
        lm, ids, mask, generator=torch.Generator().manual_seed(4), forced=reference,
        forced_rows=rows,
    )  # fmt: skip
    for row in (0, 2):  # unforced rows: the same tokens and log-probs as without forcing
        length = int(free.mask[row].sum())
        assert guided.tokens[row, :length].tolist() == free.tokens[row, :length].tolist()
        assert torch.equal(guided.log_probs[row, :length], free.log_probs[row, :length])
    assert guided.tokens[1, :3].tolist() == [5, 7, 3] and guided.mask[1].sum() == 3
    assert guided.tokens[3, :4].tolist() == [10, 1, 2, 3] and guided.mask[3].sum() == 4
    assert guided.finished[1] and guided.finished[3]
    width = guided.tokens.shape[1]
    logits = full_sequence_logits(lm, ids, mask, guided.tokens)
    for row, length in ((1, 3), (3, 4)):
        for t in range(length):
            token = int(guided.tokens[row, t])
            # the reference token is kept even where top-k would drop it (token_log_probs' rule)
            scaled = [v / 1.3 for v in logits[row, t].double().tolist()]
            order = sorted(range(VOCAB), key=lambda a: (-scaled[a], a))
            kept = set(order[:6]) | {token}
            peak = max(scaled[a] for a in kept)
            log_total = peak + math.log(sum(math.exp(scaled[a] - peak) for a in kept))
            expected = scaled[token] - log_total
            assert guided.log_probs[row, t].item() == pytest.approx(expected, abs=1e-5)
        assert not guided.log_probs[row, length:width].any()
