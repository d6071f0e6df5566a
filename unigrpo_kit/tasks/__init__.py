"""Tasks: prompt sources. The built-in one is ShapeWorld."""

from .arithmetic import Arithmetic  # noqa: F401  (registers the task)
from .shapeworld import ShapeWorld

__all__ = ["ShapeWorld"]
