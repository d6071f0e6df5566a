"""Rewards: the protocol, the ShapeWorld judge, text rewards, JPEG compressibility, composites,
and a placebo for control runs."""

from .base import Reward, RewardOutput
from .composite import WeightedSum
from .jpeg import JpegCompressibility
from .judge import QualityReward, ShapeWorldJudge
from .placebo import CoinFlip
from .text import ReasoningReward

__all__ = [
    "CoinFlip",
    "JpegCompressibility",
    "QualityReward",
    "ReasoningReward",
    "Reward",
    "RewardOutput",
    "ShapeWorldJudge",
    "WeightedSum",
]
