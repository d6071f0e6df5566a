"""An offline word-level tokenizer over a task vocabulary (no download), saved with checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<think>", "</think>", "<look>", "</look>")


class WordTokenizer:
    """Maps whitespace-separated words to ids; special tokens come first (``<pad>`` is 0).

    The sequence grammar of the built-in world:
    ``<bos> prompt <think> reasoning </think> [image] <look> instruction </look> [image] ...``.
    ``</think>`` ends the reasoning and ``</look>`` ends a reflection; both are stop tokens.
    """

    def __init__(self, words: list[str]):
        duplicates = sorted({w for w in words if words.count(w) > 1})
        if duplicates:
            raise ValueError(f"tokenizer vocabulary repeats words: {duplicates[:5]}")
        clash = sorted(set(words) & set(SPECIAL_TOKENS))
        if clash:
            raise ValueError(f"tokenizer vocabulary contains special tokens {clash}")
        self.words = list(words)
        self.itos = list(SPECIAL_TOKENS) + self.words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad_id, self.unk_id, self.bos_id = 0, 1, 2
        self.think_id, self.end_think_id, self.look_id, self.end_look_id = 3, 4, 5, 6

    @property
    def never_generated_ids(self) -> tuple[int, ...]:
        """Ids a model never emits: padding, unknown, and the markers that the caller writes
        (``<bos>``, ``<think>``, ``<look>``); a model bans them from its LM head."""
        return (self.pad_id, self.unk_id, self.bos_id, self.think_id, self.look_id)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the whitespace-separated words; unknown words map to ``<unk>``."""
        unk = self.stoi["<unk>"]
        return [self.stoi.get(w, unk) for w in text.split()]

    def decode(self, ids: list[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Words of ``ids`` joined by spaces, without special tokens unless asked."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        n_special = len(SPECIAL_TOKENS)
        return " ".join(self.itos[i] for i in ids if not (skip_special and i < n_special))

    def batch_encode(
        self, texts: list[str], prefix: list[int] = (), suffix: list[int] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded ids [B, T] and mask [B, T] of ``prefix + encode(text) + suffix``."""
        rows = [list(prefix) + self.encode(t) + list(suffix) for t in texts]
        length = max(1, max(len(r) for r in rows))
        ids = torch.full((len(rows), length), self.stoi["<pad>"], dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"special": list(SPECIAL_TOKENS), "words": self.words}))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """The tokenizer saved at ``path``; a one-line ValueError naming the file when it is
        not one (malformed or truncated JSON, missing or wrong fields)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"tokenizer file {path} is not valid JSON ({error}); the checkpoint is truncated "
                "or corrupt"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("words"), list):
            raise ValueError(
                f'tokenizer file {path} needs {{"special": [...], "words": [...]}}, a word list '
                "as WordTokenizer.save writes it"
            )
        special = data.get("special", [])
        if not isinstance(special, list) or tuple(special) != SPECIAL_TOKENS:
            raise ValueError(
                f"{path}: special tokens {data.get('special')} differ from {SPECIAL_TOKENS}"
            )
        bad = [w for w in data["words"] if not isinstance(w, str) or w.split() != [w]]
        if bad:
            raise ValueError(
                f"tokenizer file {path}: words must be non-empty strings without spaces, got "
                f"{bad[0]!r}"
            )
        try:
            return cls(data["words"])
        except ValueError as error:
            raise ValueError(f"tokenizer file {path}: {error}") from None
