"""Tokenizer round trip and checkpoint save/load, including mismatch errors and atomic writes."""

from __future__ import annotations

import pytest
import torch

from unigrpo_kit.models.checkpoint import (
    atomic_write_dir,
    load_model,
    resolve_checkpoint,
    save_model,
)
from unigrpo_kit.models.tiny_unified import TinyUnified, TinyUnifiedConfig
from unigrpo_kit.models.tokenizer import SPECIAL_TOKENS, WordTokenizer


def test_tokenizer_round_trip(tmp_path):
    tok = WordTokenizer(["circle", "red", ";", "top", "left"])
    text = "red circle top left ; red circle"
    ids = tok.encode(text)
    assert ids[0] == len(SPECIAL_TOKENS) + 1  # "red" follows the special tokens
    assert tok.decode(ids) == text
    assert tok.encode("blue") == [tok.unk_id]
    tok.save(tmp_path / "t.json")
    again = WordTokenizer.load(tmp_path / "t.json")
    assert again.itos == tok.itos and again.end_think_id == tok.stoi["</think>"]


def test_tokenizer_rejects_bad_vocabulary():
    with pytest.raises(ValueError, match="repeats"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="special tokens"):
        WordTokenizer(["<pad>"])


def small(vocab=20, d=16):
    return TinyUnified(
        TinyUnifiedConfig(
            vocab_size=vocab,
            d_model=d,
            n_layers=1,
            n_heads=2,
            image_size=8,
            patch_size=4,
            banned_token_ids=(0,),
        )
    )


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = small()
    tok = WordTokenizer([f"w{i}" for i in range(20 - len(SPECIAL_TOKENS))])
    save_model(model, tok, tmp_path / "ck")
    loaded, tok2 = load_model(tmp_path / "ck")
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert tok2.itos == tok.itos
    assert loaded.config.banned_token_ids == (0,)


def test_mismatched_checkpoint_is_a_one_line_error(tmp_path):
    tok = WordTokenizer([f"w{i}" for i in range(20 - len(SPECIAL_TOKENS))])
    save_model(small(), tok, tmp_path / "ck")
    from unigrpo_kit.models.checkpoint import load_weights

    with pytest.raises(ValueError, match="does not match the model: shape of") as err:
        load_weights(small(d=32), tmp_path / "ck" / "model.safetensors")
    assert "\n" not in str(err.value)


def test_unknown_checkpoint_name():
    with pytest.raises(FileNotFoundError, match="neither a folder nor a shipped name"):
        resolve_checkpoint("no-such-model")


def test_interrupted_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "ck"
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("old"))

    def crash(d):
        (d / "a.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write_dir(target, crash)
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    atomic_write_dir(target, lambda d: (d / "a.txt").write_text("new"))
    assert (target / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
