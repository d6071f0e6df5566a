"""Samplers: flow-matching steps (ODE and SDEs), noise schedules, SDE windows, and text sampling."""

from .flow import CPS, DanceSDE, FlowODE, FlowSDE, FlowStep, StepOutput
from .schedules import FixedWindow, FullWindow, SDEWindow, SlidingWindow, shifted_sigmas
from .text import TextPolicy, TextSample, TextSampler

__all__ = [
    "CPS",
    "DanceSDE",
    "FixedWindow",
    "FlowODE",
    "FlowSDE",
    "FlowStep",
    "FullWindow",
    "SDEWindow",
    "SlidingWindow",
    "StepOutput",
    "TextPolicy",
    "TextSample",
    "TextSampler",
    "shifted_sigmas",
]
