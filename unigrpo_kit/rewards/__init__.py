"""Rewards: the protocol, the ShapeWorld judge, text rewards, JPEG compressibility, composites,
and a placebo for control runs."""

from .base import Reward, RewardOutput
from .composite import Gated, WeightedSum
from .jpeg import JpegCompressibility
from .judge import QualityReward, ShapeWorldJudge
from .placebo import CoinFlip
from .text import ReasoningReward

__all__ = [
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
