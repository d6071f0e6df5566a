"""PNG grids of episodes: each row shows the prompt, the reasoning, every painted image, the
reflections between them and the reward."""

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


def grid(rows: list[dict], path: str | Path) -> Path:
    """Write a grid; each row is ``dict(lines=[str, ...], images=[tensor [3, H, W], ...])``."""
    font = ImageFont.load_default()
    columns = max(1, max(len(r["images"]) for r in rows))
    width = TEXT_WIDTH + columns * (CELL + 4)
    height = len(rows) * (CELL + 8)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, row in enumerate(rows):
        top = i * (CELL + 8) + 4
        wrapped = [w for line in row["lines"] for w in textwrap.wrap(line, 58) or [""]]
        for j, line in enumerate(wrapped[: CELL // LINE]):
            draw.text((4, top + j * LINE), line, fill="black", font=font)
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
        rows.append({"lines": lines, "images": images})
    return grid(rows, path)
