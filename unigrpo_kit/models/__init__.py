"""Models: the policy protocol and its implementations (the built-in TinyUnified, Hugging Face
causal LMs), attention backends, the tokenizer and checkpoints."""

from .checkpoint import load_model, load_policy, save_model
from .composed import ComposedUnified
from .diffusers import DiffusersFlowPolicy, FluxPolicy, SD3Policy
from .hf_causal_lm import HFCausalLM
from .protocol import ImagePolicy, TextPolicy, TrainablePolicy, UnifiedPolicy
from .tiny_unified import TinyUnified, TinyUnifiedConfig
from .tiny_unified_policy import TinyUnifiedPolicy
from .tokenizer import WordTokenizer

__all__ = [
    "ComposedUnified",
    "DiffusersFlowPolicy",
    "FluxPolicy",
    "SD3Policy",
    "HFCausalLM",
    "ImagePolicy",
    "TextPolicy",
    "TinyUnified",
    "TinyUnifiedConfig",
    "TinyUnifiedPolicy",
    "TrainablePolicy",
    "UnifiedPolicy",
    "WordTokenizer",
    "load_model",
    "load_policy",
    "save_model",
]
