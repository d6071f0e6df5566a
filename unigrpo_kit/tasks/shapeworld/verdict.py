"""The judge's verdict in words: which constraints of a prompt an image failed, and what the
judge saw instead, for the rows of sample grids.

The decisions are the judge's own: :func:`verdict` parses the image with
:func:`~unigrpo_kit.tasks.shapeworld.judge.parse_images` and checks it with
:func:`~unigrpo_kit.tasks.shapeworld.spec.check`, as the score does; this module only names
the constraints, in ``check``'s order (per Req presence then count; then Rels; then "nothing
extra").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unigrpo_kit.tasks.shapeworld.judge import Detected, parse_images
from unigrpo_kit.tasks.shapeworld.spec import Located, Req, Spec, check


def _objects(req: Req, plural: bool = False) -> str:
    words = [w for w in (req.color, req.kind) if w is not None]
    noun = " ".join(words) if req.kind is not None else f"{req.color} shape"
    return noun + ("s" if plural else "")


def constraint_names(spec: Spec) -> list[str]:
    """One short name per constraint of ``spec``, in :func:`check`'s order, e.g.
    ``["a green triangle", "exactly 3 green triangles", "nothing extra (at most 3 shapes)"]``."""
    names = []
    for req in spec.reqs:
        names.append(f"a {_objects(req)}")
        if req.count is not None:
            names.append(f"exactly {req.count} {_objects(req, plural=req.count != 1)}")
    for rel in spec.rels:
        names.append(f"{_objects(spec.reqs[rel.a])} {rel.relation} {_objects(spec.reqs[rel.b])}")
    budget = spec.object_budget
    names.append(f"nothing extra (at most {budget} shape{'s' if budget != 1 else ''})")
    return names


@dataclass(frozen=True)
class Verdict:
    """What the judge made of one image: the constraints it failed (by name) and the objects
    it found, as ``"green triangle"`` words."""

    failed: tuple[str, ...]
    seen: tuple[str, ...]
    total: int

    @property
    def passed(self) -> bool:
        return not self.failed

    def line(self) -> str:
        """``verdict: pass (2/2)`` or ``verdict: FAIL 3/4: exactly 3 green triangles (saw green
        triangle, red triangle)``: constraints met of all, the failed ones, what the judge saw."""
        met = f"{self.total - len(self.failed)}/{self.total}"
        if self.passed:
            return f"verdict: pass ({met})"
        seen = ", ".join(self.seen) or "nothing"
        return f"verdict: FAIL {met}: {'; '.join(self.failed)} (saw {seen})"


def verdicts(images: torch.Tensor, specs: list[Spec]) -> list[Verdict]:
    """The judge's :class:`Verdict` on each image ``[N, 3, H, W]`` (values in [0, 1])."""
    height, width = images.shape[-2:]
    found_per_image = parse_images(images)
    out = []
    for found, spec in zip(found_per_image, specs, strict=True):
        located = [Located(d.color, d.kind, d.cx / width, d.cy / height) for d in found]
        results = check(located, spec)
        failed = tuple(n for n, ok in zip(constraint_names(spec), results, strict=True) if not ok)
        out.append(Verdict(failed, tuple(_seen(d) for d in found), len(results)))
    return out


def _seen(detected: Detected) -> str:
    return f"{detected.color} {detected.kind}"
