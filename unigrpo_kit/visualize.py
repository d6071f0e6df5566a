"""PNG grids of episodes: each row shows the prompt, the reasoning, every painted image, the
reflections between them, the reward and, for prompts the ShapeWorld judge scores, its verdict
on the final image (which constraints failed and what it saw), with a green or red bar at the
row's left edge."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 128  # pixels per painted image in the grid
TEXT_WIDTH = 360
LINE = 12


def _to_pil(image) -> Image.Image:
    """[3, H, W] in [0, 1] -> an upscaled RGB picture with hard pixel edges."""
    array = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255
    return Image.fromarray(array.astype(np.uint8)).resize((CELL, CELL), Image.NEAREST)


MARK_COLORS = {True: (40, 160, 60), False: (210, 40, 40)}  # pass, fail
MARK_WIDTH = 4


def grid(rows: list[dict], path: str | Path) -> Path:
    """Write a grid; each row is ``dict(lines=[str, ...], images=[tensor [3, H, W], ...])`` with
    an optional ``passed`` (bool): a green (True) or red (False) bar at the row's left edge and
    its last line in that colour."""
    font = ImageFont.load_default()
    columns = max(1, max(len(r["images"]) for r in rows))
    width = TEXT_WIDTH + columns * (CELL + 4)
    height = len(rows) * (CELL + 8)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        top = i * (CELL + 8) + 4
        passed = row.get("passed")
        wrapped = [
            (w, n == len(row["lines"]) - 1)
            for n, line in enumerate(row["lines"])
            for w in textwrap.wrap(line, 57) or [""]
        ]
        for j, (line, last) in enumerate(wrapped[: CELL // LINE]):
            color = MARK_COLORS[passed] if passed is not None and last else "black"
            draw.text((4 + MARK_WIDTH + 2, top + j * LINE), line, fill=color, font=font)
        if passed is not None:
            draw.rectangle((0, top, MARK_WIDTH - 1, top + CELL - 1), fill=MARK_COLORS[passed])
        for j, image in enumerate(row["images"]):
            canvas.paste(_to_pil(image), (TEXT_WIDTH + j * (CELL + 4), top))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def episode_grid(batch, path: str | Path, max_rows: int = 8) -> Path:
    """One row per group (its first episode): prompt, reasoning, images, reflections, reward."""
    rows = []
    group_firsts = [
        i
        for i in range(len(batch))
        if i == 0 or int(batch.group_ids[i]) != int(batch.group_ids[i - 1])
    ]
    for i in group_firsts[:max_rows]:
        lines = [f"prompt: {batch.prompts[i].text}"]
        if batch.texts and batch.texts[i]:
            lines.append(f"reasoning: {batch.texts[i]}")
        for r, said in enumerate(batch.reflections):
            lines.append(f"look {r + 1}: {said[i]}")
        if batch.rewards is not None:
            lines.append(f"reward: {float(batch.rewards[i]):.3f}")
        images = [seg.images[i] for seg in batch.image_segments if bool(seg.active[i])]
        row = {"lines": lines, "images": images}
        judged = _verdict(batch.prompts[i], images[-1] if images else None)
        if judged is not None:
            lines.append(judged.line())
            row["passed"] = judged.passed
        rows.append(row)
    return grid(rows, path)


def _verdict(prompt, image):
    """The ShapeWorld judge's verdict on the final image, for prompts that carry its spec;
    None for other tasks' prompts and for text-only episodes."""
    from unigrpo_kit.tasks.shapeworld.spec import Spec
    from unigrpo_kit.tasks.shapeworld.verdict import verdicts

    spec = getattr(prompt, "spec", None)
    if image is None or not isinstance(spec, Spec):
        return None
    return verdicts(image.detach().float().cpu().unsqueeze(0), [spec])[0]
