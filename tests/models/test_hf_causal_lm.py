"""HFCausalLM against the plain transformers model, on tiny random Qwen2 and Llama models.

Each model is built from its config class, saved with ``save_pretrained`` and loaded back
through ``HFCausalLM(path=folder)`` exactly as a user's folder is. The reference numbers come
from plain ``model(input_ids)`` calls on each row alone, unpadded, with no kit code.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from unigrpo_kit.models.hf_causal_lm import POLICY_FILE, HFCausalLM
from unigrpo_kit.models.layout import TextSegment
from unigrpo_kit.models.protocol import PARTS, TextPolicy, TextSession
from unigrpo_kit.models.tiny_random import IM_END, save_tiny_causal_lm, shrunk_config
from unigrpo_kit.registry import MODELS
from unigrpo_kit.samplers.text import TextSampler


def saved_spec(folder):
    """The MODELS.build config in ``folder``'s unigrpo_policy.json, "." read as the folder."""
    record = json.loads((folder / POLICY_FILE).read_text())
    kwargs = {k: str(folder) if v == "." else v for k, v in record["kwargs"].items()}
    return {"type": record["type"], **kwargs}


PROMPTS = ["hi", "what is 12 + 7?", "the cat sat on the mat and a red circle"]
# An eighth of the vocabulary stops a generation, so that with the seed of sample() rows stop
# after 5 and 7 tokens (then are fed pad columns) while one runs to the cap of 12.
STOPS = list(range(1, 320, 8))
LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{family: folder} of tiny random models: Qwen2 with a ChatML template, Llama plain with
    a bos token and grouped-query attention."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "qwen2": save_tiny_causal_lm(root / "qwen2", "qwen2", initializer_range=0.1),
        "llama": save_tiny_causal_lm(
            root / "llama", "llama", chat_template=False, num_key_value_heads=1, seed=1
        ),
    }


def sample(policy: HFCausalLM, seed: int = 1, **sampler_kwargs):
    """Prompts, the sampler and a sample of 12 tokens at temperature 1 through the session."""
    sampler = TextSampler(
        temperature=1.0,
        max_new_tokens=12,
        stop_token_ids=policy.stop_token_ids("reasoning"),
        pad_token_id=policy.pad_token_id,
        **sampler_kwargs,
    )
    ids, mask = policy.encode_prompts(PROMPTS)
    generator = torch.Generator().manual_seed(seed)
    out = sampler.generate(policy.text_session(None), ids, mask, generator=generator)
    return ids, mask, sampler, out


def plain_log_probs(model, ids, mask, tokens, token_mask) -> torch.Tensor:
    """[B, T] log softmax of each generated token by the plain model on its row alone (prompt
    without padding + the generation up to its stop); 0 where ``token_mask`` is False."""
    out = torch.zeros(tokens.shape)
    for row in range(ids.shape[0]):
        prompt = ids[row][mask[row]].tolist()
        generated = tokens[row][token_mask[row]].tolist()
        with torch.no_grad():
            logits = model(torch.tensor([prompt + generated])).logits[0].float()
        log_probs = logits.log_softmax(-1)[len(prompt) - 1 : -1]
        out[row, : len(generated)] = log_probs.gather(-1, torch.tensor(generated)[:, None])[:, 0]
    return out


def episode_log_probs(policy, ids, mask, sampler, tokens, token_mask) -> torch.Tensor:
    """[B, T] log-probs of the generation from forward_episode, the way recompute reads them."""
    prompt_logits, generated_logits = policy.forward_episode(
        [TextSegment(ids, mask), TextSegment(tokens, token_mask)]
    ).text_logits
    predicting = torch.cat([prompt_logits[:, -1:], generated_logits[:, :-1]], dim=1)
    return sampler.token_log_probs(predicting, tokens) * token_mask


def test_protocol_prompts_and_stops(folders):
    policy = HFCausalLM(path=str(folders["qwen2"]), device="cpu")
    assert isinstance(policy, TextPolicy)
    assert isinstance(policy.text_session(None), TextSession)
    groups = policy.parameter_groups()
    assert set(groups) == set(PARTS) and groups["image"] == []
    assert len(groups["text"]) == len(list(policy.module.parameters()))
    im_end = policy.tokenizer.convert_tokens_to_ids(IM_END)
    # eos of the tokenizer, then the generation config's extra <|im_end|>
    assert policy.stop_token_ids("reasoning") == (1, im_end) == policy.stop_token_ids("reflection")
    assert policy.pad_token_id == 1
    ids, mask = policy.encode_prompts(PROMPTS)
    assert ids.dtype == torch.long and mask.dtype == torch.bool and ids.shape == mask.shape
    lengths = mask.sum(1).tolist()
    assert len(set(lengths)) == 3 and mask[:, -1].all()  # left padding: last column real
    for row, length in zip(range(3), lengths):
        assert not mask[row, : ids.shape[1] - length].any()
    text = policy.tokenizer.decode(ids[1][mask[1]])
    assert text == "<|im_start|>user\nwhat is 12 + 7?<|im_end|>\n<|im_start|>assistant\n"
    words = policy.tokenizer(" the cat", add_special_tokens=False)["input_ids"]
    decoded = policy.decode_text(
        torch.tensor([words + [im_end, 5], words + [1, 1]]),
        torch.tensor([[True] * len(words) + [True, False], [True] * len(words) + [True, False]]),
    )
    assert decoded == ["the cat", "the cat"]
    # a reference completion (off-policy guidance): the tokenizer's ids, then the first stop
    ref, ref_mask = policy.encode_completion([" the cat", " a"], "reasoning")
    a = policy.tokenizer(" a", add_special_tokens=False)["input_ids"]
    assert ref[0][ref_mask[0]].tolist() == words + [1]
    assert ref[1][ref_mask[1]].tolist() == a + [1]
    assert ref[1][~ref_mask[1]].eq(policy.pad_token_id).all()
    with pytest.raises(ValueError, match="reasoning=True"):
        policy.encode_prompts(PROMPTS, reasoning=False)
    with pytest.raises(ValueError, match="context=None"):
        policy.text_session(object())

    plain = HFCausalLM(path=str(folders["llama"]), device="cpu", prompt_template="Q: {prompt} A:")
    ids, mask = plain.encode_prompts(["hi"])
    bos = plain.tokenizer.bos_token_id
    assert (
        ids[0].tolist()
        == [bos] + plain.tokenizer("Q: hi A:", add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_sampled_log_probs_are_exact(folders, family):
    """The session's recorded log-probs equal the plain model's on each row alone, and
    forward_episode + token_log_probs recomputes them (the PPO ratio is 1)."""
    policy = HFCausalLM(path=str(folders[family]), device="cpu", stop_token_ids=STOPS)
    ids, mask, sampler, out = sample(policy)
    lengths = out.mask.sum(1)
    # some rows stopped early and were fed pad columns while another went on
    assert out.tokens.shape[1] == 12 and not out.finished.all()
    assert out.finished.sum() == 2 and lengths.min() <= 7 and len(set(lengths.tolist())) == 3
    assert mask.sum(1).unique().numel() == 3

    model = AutoModelForCausalLM.from_pretrained(folders[family], dtype=torch.float32)
    expected = plain_log_probs(model, ids, mask, out.tokens, out.mask)
    assert out.mask.sum() >= 8
    torch.testing.assert_close(out.log_probs, expected, atol=1e-5, rtol=0)
    recomputed = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask)
    torch.testing.assert_close(recomputed, out.log_probs, atol=1e-5, rtol=0)


def test_session_tracks_visibility_itself(folders):
    """The pad id (eos here) fed as a real token stays visible; after a stop token the pad
    columns are invisible and do not advance the row's position."""
    policy = HFCausalLM(path=str(folders["qwen2"]), device="cpu", stop_token_ids=[7])
    pad = policy.pad_token_id
    ids, mask = policy.encode_prompts(PROMPTS[:2])
    session = policy.text_session(None)
    _, state = session.prefill(ids, mask)
    # row 0 writes 5, pad, 9 (no stop); row 1 writes its stop 7, then is fed pads
    steps = [torch.tensor([5, 7]), torch.tensor([pad, pad]), torch.tensor([9, pad])]
    all_logits = []
    for token_ids in steps:
        logits, state = session.decode(state, token_ids)
        all_logits.append(logits)
    assert state.mask[:, -3:].tolist() == [[True] * 3, [True, False, False]]
    lengths = mask.sum(1)
    assert state.next_position.tolist() == [lengths[0] + 3, lengths[1] + 1]
    assert state.alive.tolist() == [True, False]

    model = AutoModelForCausalLM.from_pretrained(folders["qwen2"], dtype=torch.float32)

    def plain_last_logits(row, generated):
        with torch.no_grad():
            return model(torch.tensor([ids[row][mask[row]].tolist() + generated])).logits[0, -1]

    torch.testing.assert_close(
        all_logits[-1][0], plain_last_logits(0, [5, pad, 9]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(all_logits[0][1], plain_last_logits(1, [7]), atol=1e-5, rtol=0)


def test_top_k_session_matches_recomputation(folders):
    """With top-k, the recorded log-probs are those of the truncated distribution, and the
    recomputation applies the same truncation."""
    policy = HFCausalLM(path=str(folders["qwen2"]), device="cpu", stop_token_ids=STOPS)
    ids, mask, sampler, out = sample(policy, seed=3, top_k=20)
    recomputed = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask)
    torch.testing.assert_close(recomputed, out.log_probs, atol=1e-5, rtol=0)
    assert (out.log_probs[out.mask] > -torch.log(torch.tensor(20.0)) - 3).all()


def test_padding_and_post_stop_tokens_get_no_gradient(folders):
    policy = HFCausalLM(path=str(folders["qwen2"]), device="cpu", stop_token_ids=STOPS)
    ids, mask, sampler, out = sample(policy)
    assert (~out.mask).any()
    embedded = []

    def keep_embeddings(module, args, output):
        output.retain_grad()
        embedded.append(output)

    hook = policy.module.get_input_embeddings().register_forward_hook(keep_embeddings)
    prompt_logits, generated_logits = policy.forward_episode(
        [TextSegment(ids, mask), TextSegment(out.tokens, out.mask)]
    ).text_logits
    hook.remove()
    assert prompt_logits.shape[1] == 1  # the prompt's last column only
    assert generated_logits.shape[:2] == out.tokens.shape
    generated_logits.retain_grad()
    predicting = torch.cat([prompt_logits[:, -1:], generated_logits[:, :-1]], dim=1)
    loss = (sampler.token_log_probs(predicting, out.tokens) * out.mask).sum()
    loss.backward()

    # Column j of the generation predicts token j + 1: no gradient where that token is masked.
    unused = torch.cat([~out.mask[:, 1:], torch.ones_like(out.mask[:, :1])], dim=1)
    assert generated_logits.grad[unused].abs().max() == 0
    assert generated_logits.grad[~unused].abs().sum(-1).min() > 0
    # The embeddings of left padding and of post-stop tokens: exactly zero gradient.
    grad = embedded[0].grad
    invisible = ~torch.cat([mask, out.mask], dim=1)
    assert invisible.sum() > 4
    assert grad[invisible].abs().max() == 0
    # every other token but each row's last (which predicts nothing) moves the loss
    columns = torch.arange(invisible.shape[1])
    last = torch.where(~invisible, columns, -1).amax(dim=1, keepdim=True)
    assert grad[~invisible & (columns != last)].abs().sum(-1).min() > 0
    assert grad[columns == last].abs().max() == 0

    # Other ids behind the masks change no log-prob of a real token.
    other = (out.tokens + 7) % 320
    other_prompt = torch.where(mask, ids, 5)
    with torch.no_grad():
        before = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask)
        tokens = torch.where(out.mask, out.tokens, other)
        after = episode_log_probs(policy, other_prompt, mask, sampler, tokens, out.mask)
    torch.testing.assert_close(after, before, atol=1e-6, rtol=0)


def perturb(parameters, scale: float, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in parameters:
            parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)


def test_lora_reference_save_and_load(folders, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel

    folder = folders["qwen2"]
    policy = HFCausalLM(path=str(folder), device="cpu", lora=LORA, stop_token_ids=STOPS)
    trained = policy.parameter_groups()["text"]
    assert trained and all(
        "lora_" in name for name, p in policy.module.named_parameters() if p.requires_grad
    )
    perturb([p for n, p in policy.module.named_parameters() if "lora_B" in n], 0.5)
    ids, mask, sampler, out = sample(policy)

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    base_log_probs = plain_log_probs(base, ids, mask, out.tokens, out.mask)
    reference = policy.reference()
    assert policy.reference() is reference and reference.parameter_groups()["text"] == []
    policy.train()
    reference_log_probs = episode_log_probs(reference, ids, mask, sampler, out.tokens, out.mask)
    assert policy.module.training  # the reference's eval() is undone
    assert not reference_log_probs.requires_grad
    torch.testing.assert_close(reference_log_probs, base_log_probs, atol=1e-6, rtol=0)
    policy_log_probs = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask)
    assert (policy_log_probs - base_log_probs).abs().max() > 1e-2
    torch.testing.assert_close(policy_log_probs.detach(), out.log_probs, atol=1e-5, rtol=0)
    # the reference also samples: its session runs the base model
    _, _, _, reference_out = sample(reference)
    expected = plain_log_probs(base, ids, mask, reference_out.tokens, reference_out.mask)
    torch.testing.assert_close(reference_out.log_probs, expected, atol=1e-5, rtol=0)

    policy.save(tmp_path / "lora")
    assert (tmp_path / "lora" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "lora" / "model.safetensors").exists()
    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tmp_path / "lora"
    )
    expected = plain_log_probs(loaded, ids, mask, out.tokens, out.mask)
    torch.testing.assert_close(expected, out.log_probs, atol=1e-5, rtol=0)

    spec = saved_spec(tmp_path / "lora")
    assert spec["type"] == "HFCausalLM" and spec["lora"] is None
    assert spec["adapter"] == str(tmp_path / "lora") and spec["path"] == str(folder)
    rebuilt = MODELS.build(spec)
    rebuilt_log_probs = episode_log_probs(rebuilt, ids, mask, sampler, out.tokens, out.mask)
    torch.testing.assert_close(rebuilt_log_probs.detach(), out.log_probs, atol=1e-5, rtol=0)
    assert len(rebuilt.parameter_groups()["text"]) == len(trained)

    saved = [p.detach().clone() for p in trained]
    with torch.no_grad():
        for parameter in trained:
            parameter.zero_()
    policy.load_weights(tmp_path / "lora")
    assert all(a is b for a, b in zip(policy.parameter_groups()["text"], trained))
    for parameter, value in zip(trained, saved):
        assert torch.equal(parameter, value)


def test_full_save_load_and_reference(folders, tmp_path):
    folder = folders["llama"]
    policy = HFCausalLM(path=str(folder), device="cpu", stop_token_ids=STOPS)
    reference = policy.reference()
    assert reference.module is not policy.module and not reference.module.training
    assert all(not p.requires_grad for p in reference.module.parameters())
    head = policy.module.get_output_embeddings().weight
    perturb([head], 0.3)
    ids, mask, sampler, out = sample(policy)

    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    reference_log_probs = episode_log_probs(reference, ids, mask, sampler, out.tokens, out.mask)
    expected = plain_log_probs(base, ids, mask, out.tokens, out.mask)
    torch.testing.assert_close(reference_log_probs, expected, atol=1e-6, rtol=0)
    assert (out.log_probs - expected).abs().max() > 1e-2

    policy.save(tmp_path / "full")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    expected = plain_log_probs(loaded, ids, mask, out.tokens, out.mask)
    torch.testing.assert_close(expected, out.log_probs, atol=1e-5, rtol=0)
    spec = saved_spec(tmp_path / "full")
    assert spec["path"] == str(tmp_path / "full") and spec["adapter"] is None
    rebuilt = MODELS.build(spec)
    assert torch.equal(rebuilt.module.get_output_embeddings().weight, head)
    assert rebuilt.stop_token_ids("reasoning") == tuple(STOPS)

    saved = head.detach().clone()
    with torch.no_grad():
        head.zero_()
    policy.load_weights(tmp_path / "full")
    assert policy.module.get_output_embeddings().weight is head and torch.equal(head, saved)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        policy.load_weights(tmp_path)


def test_bfloat16_keeps_float32_master_weights(folders):
    policy = HFCausalLM(
        path=str(folders["qwen2"]), device="cpu", dtype="bfloat16", stop_token_ids=STOPS
    )
    assert all(p.dtype == torch.float32 for p in policy.module.parameters())
    ids, mask, sampler, out = sample(policy)
    assert torch.isfinite(out.log_probs).all() and out.mask.sum() > 0
    recomputed = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask)
    assert recomputed.dtype == torch.float32 and torch.isfinite(recomputed).all()
    exact = HFCausalLM(path=str(folders["qwen2"]), device="cpu")
    in_float32 = episode_log_probs(exact, ids, mask, sampler, out.tokens, out.mask)
    difference = (recomputed - in_float32).abs().max()
    assert 0 < difference < 0.1  # bfloat16 rounding, not garbage


def test_errors_name_the_key(folders, tmp_path):
    def one_line_error(match, **kwargs):
        with pytest.raises(ValueError, match=match) as caught:
            HFCausalLM(device="cpu", **kwargs)
        assert "\n" not in str(caught.value)

    one_line_error("model.dtype", path=str(folders["qwen2"]), dtype="float16")
    one_line_error("model.path", path="")
    one_line_error("model.path", path=str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    one_line_error("model.path", path=str(tmp_path / "empty"))
    one_line_error("model.chat_template", path=str(folders["llama"]), chat_template=True)
    one_line_error("model.stop_token_ids", path=str(folders["llama"]), stop_token_ids=[10**6])
    one_line_error("model.adapter", path=str(folders["llama"]), adapter=str(tmp_path))


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_gradient_checkpointing_changes_nothing(folders, lora):
    if lora is not None:
        pytest.importorskip("peft")
    losses, grads = [], []
    episode = None
    for checkpointing in (False, True):
        torch.manual_seed(0)  # the same LoRA initialisation in both runs
        policy = HFCausalLM(
            path=str(folders["qwen2"]),
            device="cpu",
            lora=lora,
            gradient_checkpointing=checkpointing,
            stop_token_ids=STOPS,
        ).train()
        if lora is not None:
            perturb([p for n, p in policy.module.named_parameters() if "lora_B" in n], 0.5)
        if episode is None:
            episode = sample(policy)
        ids, mask, sampler, out = episode
        loss = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask).sum()
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in policy.parameter_groups()["text"]])
    assert policy._lm.model.gradient_checkpointing  # it was on in the second run
    assert all(g is not None for g in grads[1]) and len(grads[1]) == len(grads[0])
    assert sum(g.abs().sum() for g in grads[1]) > 0
    torch.testing.assert_close(losses[1], losses[0], atol=1e-5, rtol=0)
    for on, off in zip(grads[1], grads[0]):
        torch.testing.assert_close(on, off, atol=1e-5, rtol=1e-5)


def test_shrunk_config_keeps_the_architecture(folders):
    from transformers import AutoConfig, Qwen2Config

    real = Qwen2Config(
        hidden_size=896,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        intermediate_size=4864,
        vocab_size=1000,
    )
    small = shrunk_config(real)
    assert type(small) is Qwen2Config and small.model_type == "qwen2"
    assert (small.hidden_size, small.num_hidden_layers, small.num_attention_heads) == (32, 2, 2)
    assert small.num_key_value_heads == 2 and small.intermediate_size == 64
    assert small.vocab_size == 1000 and len(small.layer_types) == 2
    model = AutoModelForCausalLM.from_config(small)
    assert model.model.embed_tokens.weight.shape == (1000, 32)
    llama = shrunk_config(AutoConfig.from_pretrained(folders["llama"]))
    assert llama.model_type == "llama" and llama.head_dim == 16


def test_dry_run_spec_builds_a_loadable_tiny_model(folders, tmp_path):
    """No path: a tiny Qwen2 with a ChatML tokenizer; a user's folder: its architecture and
    tokenizer at width 32, its weights unread."""
    spec = HFCausalLM.dry_run_spec({"type": "HFCausalLM", "path": None}, None, tmp_path / "a")
    policy = MODELS.build({**spec, "device": "cpu"})
    assert type(policy._lm).__name__ == "Qwen2ForCausalLM" and policy._use_chat_template

    user = {"type": "HFCausalLM", "path": str(folders["llama"]), "lora": LORA}
    spec = HFCausalLM.dry_run_spec(user, None, tmp_path / "b")
    assert spec["path"] == str(tmp_path / "b") and spec["lora"] == LORA
    policy = MODELS.build({**spec, "device": "cpu"})
    assert type(policy._lm).__name__ == "LlamaForCausalLM"
    assert policy._lm.config.num_key_value_heads == 2  # shrunk, not the folder's 1
    assert policy.tokenizer.bos_token == "<s>" and not policy._use_chat_template
    _, _, _, out = sample(policy)
    assert torch.isfinite(out.log_probs).all() and out.mask[:, 0].all()


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_a_group_shares_its_prompt_pass_and_stays_exact(folders, family):
    """Rows that repeat a prompt (the G episodes of a group) run the prompt once: the sampled
    log-probs still equal the plain model's on each row alone, and the recomputed log-probs
    and their gradients equal those of one pass over every row (checkpointing forces it)."""
    shared = HFCausalLM(path=str(folders[family]), device="cpu", stop_token_ids=STOPS)
    sampler = TextSampler(
        temperature=1.0, max_new_tokens=12, stop_token_ids=STOPS, pad_token_id=shared.pad_token_id
    )
    texts = [text for text in PROMPTS for _ in range(3)]  # groups of 3, rows adjacent
    ids, mask = shared.encode_prompts(texts)
    generator = torch.Generator().manual_seed(2)
    out = sampler.generate(shared.text_session(None), ids, mask, generator=generator)
    assert (~out.mask).any() and out.mask.all(dim=1).any()  # some rows stopped, some did not
    expected = plain_log_probs(shared.module, ids, mask, out.tokens, out.mask)
    torch.testing.assert_close(out.log_probs, expected, atol=1e-5, rtol=0)

    one_pass = HFCausalLM(
        path=str(folders[family]), device="cpu", stop_token_ids=STOPS, gradient_checkpointing=True
    )
    results = []
    for policy in (shared, one_pass):
        policy.train()
        log_probs = episode_log_probs(policy, ids, mask, sampler, out.tokens, out.mask)
        policy.module.zero_grad(set_to_none=True)
        log_probs.sum().backward()
        grads = [p.grad.clone() for p in policy.module.parameters()]
        results.append((log_probs.detach(), grads))
    torch.testing.assert_close(results[0][0], out.log_probs, atol=1e-5, rtol=0)
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-5, rtol=0)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
