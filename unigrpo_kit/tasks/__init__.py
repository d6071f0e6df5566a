"""Tasks: prompt sources with their evaluation. Built in: ShapeWorld (scenes, riddles, a judge)
and Arithmetic (verifiable problems for language models)."""

from .arithmetic import Arithmetic
from .shapeworld import ShapeWorld

__all__ = ["Arithmetic", "ShapeWorld"]
