"""Rewards: the protocol, the ShapeWorld judge, text rewards, JPEG compressibility, composites."""

from .base import Reward, RewardOutput
from .composite import WeightedSum
from .jpeg import JpegCompressibility
from .judge import QualityReward, ShapeWorldJudge
from .text import ReasoningReward

__all__ = [
    "JpegCompressibility",
    "QualityReward",
    "ReasoningReward",
    "Reward",
    "RewardOutput",
    "ShapeWorldJudge",
    "WeightedSum",
]
