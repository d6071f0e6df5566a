"""Tasks: prompt sources. The built-in one is ShapeWorld."""

from .shapeworld import ShapeWorld

__all__ = ["ShapeWorld"]
