"""Rewards: the protocol, the ShapeWorld judge, text rewards, JPEG compressibility, composites,
and, for control runs, a placebo and a brightness probe."""

from .answer import AnswerFormat, ExactAnswer  # noqa: F401  (registers them)
from .base import Reward, RewardOutput
from .brightness import Brightness
from .composite import Gated, WeightedSum
from .jpeg import JpegCompressibility
from .judge import QualityReward, ShapeWorldJudge
from .models import Aesthetic, CLIPScore, PickScore, TextSimilarity, VLMJudge  # noqa: F401
from .placebo import CoinFlip
from .remote import RemoteReward  # noqa: F401  (registers it)
from .text import ReasoningReward

__all__ = [
    "Brightness",
    "CoinFlip",
    "Gated",
    "JpegCompressibility",
    "QualityReward",
    "ReasoningReward",
    "Reward",
    "RewardOutput",
    "ShapeWorldJudge",
    "WeightedSum",
]
