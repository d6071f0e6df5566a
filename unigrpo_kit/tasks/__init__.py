"""Tasks: prompt sources with their evaluation. Built in: ShapeWorld (scenes, riddles, a judge),
Arithmetic (verifiable problems for language models) and PromptFile (a user's own prompts)."""

from .arithmetic import Arithmetic
from .prompt_file import PromptFile
from .shapeworld import ShapeWorld

__all__ = ["Arithmetic", "PromptFile", "ShapeWorld"]
