"""Models: attention backends, the built-in TinyUnified model, its tokenizer and checkpoints."""

from .checkpoint import load_model, save_model
from .tiny_unified import TinyUnified, TinyUnifiedConfig
from .tokenizer import WordTokenizer

__all__ = ["TinyUnified", "TinyUnifiedConfig", "WordTokenizer", "load_model", "save_model"]
