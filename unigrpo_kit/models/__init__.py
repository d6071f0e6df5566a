"""Models: the policy protocol and its implementations (the built-in TinyUnified, Hugging Face
causal LMs and vision-language models, diffusers painters and editors, their compositions),
attention backends, the tokenizer and checkpoints."""

from .checkpoint import load_model, load_policy, save_model
from .composed import ComposedUnified
from .composed_multiround import ComposedMultiRound
from .diffusers import DiffusersFlowPolicy, FluxKontextPolicy, FluxPolicy, SD3Policy
from .hf_causal_lm import HFCausalLM
from .hf_vision_lm import HFVisionLM
from .protocol import ImagePolicy, TextPolicy, TrainablePolicy, UnifiedPolicy
from .tiny_unified import TinyUnified, TinyUnifiedConfig
from .tiny_unified_policy import TinyUnifiedPolicy
from .tokenizer import WordTokenizer

__all__ = [
    "ComposedMultiRound",
    "ComposedUnified",
    "DiffusersFlowPolicy",
    "FluxKontextPolicy",
    "FluxPolicy",
    "SD3Policy",
    "HFCausalLM",
    "HFVisionLM",
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
