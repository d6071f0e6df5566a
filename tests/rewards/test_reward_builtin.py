from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from unigrpo_kit.registry import REWARDS, UnknownComponentError
from unigrpo_kit.rewards.brightness import Brightness
from unigrpo_kit.rewards.composite import WeightedSum
from unigrpo_kit.rewards.jpeg import JpegCompressibility
from unigrpo_kit.rewards.judge import QualityReward, ShapeWorldJudge
from unigrpo_kit.rewards.text import ReasoningReward
from unigrpo_kit.tasks.shapeworld.prompts import Prompt
from unigrpo_kit.tasks.shapeworld.renderer import render_batch
from unigrpo_kit.tasks.shapeworld.scene import Obj, Scene, describe
from unigrpo_kit.tasks.shapeworld.spec import Rel, Req, Spec

SPEC = Spec((Req("red", "circle"), Req(None, "square")), (Rel(0, "left of", 1),))
GOOD = Scene((Obj("red", "circle", 0), Obj("green", "square", 1)))
SWAPPED = Scene((Obj("red", "circle", 1), Obj("green", "square", 0)))  # relation fails: 3/4
WRONG = Scene((Obj("blue", "triangle", 3),))  # only "nothing extra" met: 1/4
PROMPT = Prompt("a red circle left of a square", "position", SPEC, describe(GOOD), GOOD, "train")
PROMPTS = [PROMPT] * 3
IMAGES = render_batch([GOOD, SWAPPED, WRONG])


def test_judge_strict_and_partial() -> None:
    strict = ShapeWorldJudge("strict")(prompts=PROMPTS, images=IMAGES)
    partial = ShapeWorldJudge(mode="partial")(prompts=PROMPTS, images=IMAGES)
    assert strict.scores.tolist() == [1.0, 0.0, 0.0]
    assert partial.scores.tolist() == pytest.approx([1.0, 3 / 4, 1 / 4])
    assert strict.scores.dtype == torch.float32
    assert set(strict.metrics) == {"judge/strict", "judge/partial", "quality"}
    assert torch.equal(strict.metrics["judge/partial"], partial.scores)
    assert strict.metrics["quality"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="mode"):
        ShapeWorldJudge("lenient")


def test_reasoning_reward_modes() -> None:
    texts = [describe(GOOD), describe(SWAPPED), "red circle somewhere"]
    outputs = {m: ReasoningReward(m)(prompts=PROMPTS, texts=texts) for m in ("valid", "strict")}
    partial = ReasoningReward("partial")(prompts=PROMPTS, texts=texts)
    assert outputs["valid"].scores.tolist() == [1.0, 1.0, 0.0]
    assert outputs["strict"].scores.tolist() == [1.0, 0.0, 0.0]
    assert partial.scores.tolist() == pytest.approx([1.0, 3 / 4, 0.0])
    assert torch.equal(partial.metrics["reasoning/valid"], outputs["valid"].scores)


def test_quality_reward_drops_for_noise() -> None:
    noisy = IMAGES + 0.05 * torch.randn(IMAGES.shape, generator=torch.Generator().manual_seed(0))
    output = QualityReward()(prompts=PROMPTS, images=torch.cat([IMAGES[:1], noisy[:2].clamp(0, 1)]))
    assert output.scores[0] == 1.0 and (output.scores[1:] < 0.6).all()
    assert torch.equal(output.metrics["quality"], output.scores)


def test_jpeg_reward_is_minus_kilobytes() -> None:
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images = torch.cat([IMAGES[:1], noise, torch.full((1, 3, 32, 32), 0.5)])
    output = JpegCompressibility(quality=95)(prompts=PROMPTS, images=images)
    buffer = io.BytesIO()
    pixels = (noise[0] * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
    assert output.scores[1].item() == pytest.approx(-len(buffer.getvalue()) / 1000)
    assert output.scores[2] > output.scores[0] > output.scores[1]  # flat > shapes > noise
    assert torch.equal(output.metrics["jpeg/kb"], -output.scores)


def test_brightness_is_the_mean_pixel_value_with_its_sign_and_logs_the_judge() -> None:
    images = torch.stack([torch.zeros(3, 2, 2), torch.ones(3, 2, 2), torch.zeros(3, 2, 2)])
    images[2, 0] = 1.0  # one channel of three lit: 1/3
    up = Brightness()(prompts=PROMPTS, images=images)
    assert up.scores.tolist() == pytest.approx([0.0, 1.0, 1 / 3])
    down = REWARDS.build(dict(type="Brightness", sign=-1, log=dict(type="ShapeWorldJudge")))
    out = down(prompts=PROMPTS, images=IMAGES)
    assert out.scores.tolist() == pytest.approx([-float(i.mean()) for i in IMAGES])
    assert out.metrics["judge/strict"].tolist() == [1.0, 0.0, 0.0]
    assert down.needs == {"images"}
    with pytest.raises(ValueError, match="sign must be 1 or -1"):
        Brightness(sign=2)


def test_weighted_sum_built_from_the_registry() -> None:
    reward = REWARDS.build(
        dict(
            type="WeightedSum",
            rewards=[dict(type="ShapeWorldJudge", mode="partial"), dict(type="ReasoningReward")],
            weights=[2.0, 0.5],
        )
    )
    assert isinstance(reward, WeightedSum) and reward.needs == {"images", "texts"}
    texts = [describe(GOOD), describe(GOOD), describe(WRONG)]
    output = reward(prompts=PROMPTS, images=IMAGES, texts=texts)
    assert output.scores.tolist() == pytest.approx([2.5, 2 * 3 / 4 + 0.5, 2 * 1 / 4])
    assert {"judge/strict", "reasoning/valid", "ShapeWorldJudge/score"} <= set(output.metrics)
    with pytest.raises(ValueError, match="needs images"):
        reward(prompts=PROMPTS, texts=texts)


def test_weighted_sum_errors_and_repeats() -> None:
    with pytest.raises(ValueError, match="one weight per reward"):
        WeightedSum([dict(type="QualityReward")], weights=[1.0, 2.0])
    with pytest.raises(UnknownComponentError, match="ShapeWorldJudge"):
        WeightedSum([dict(type="ShapeWorldJudg")])
    twice = WeightedSum([QualityReward(), QualityReward()], weights=[1.0, -1.0])
    output = twice(prompts=PROMPTS, images=IMAGES)
    assert output.scores.tolist() == [0.0, 0.0, 0.0]
    assert {"QualityReward#0/score", "QualityReward#1/score"} <= set(output.metrics)


def test_gated_judge_scores_zero_where_the_reasoning_does_not_parse() -> None:
    reward = REWARDS.build(
        dict(
            type="Gated",
            reward=dict(type="ShapeWorldJudge", mode="strict"),
            gate=dict(type="ReasoningReward", mode="valid"),
        )
    )
    assert reward.needs == {"images", "texts"}
    # three right pictures; the second reasoning runs two clauses together, the third is empty
    images = render_batch([GOOD, GOOD, GOOD])
    texts = [describe(GOOD), describe(GOOD).replace(" ;", ""), ""]
    output = reward(prompts=PROMPTS, images=images, texts=texts)
    assert output.scores.tolist() == [1.0, 0.0, 0.0]
    assert output.metrics["judge/strict"].tolist() == [1.0, 1.0, 1.0]  # the picture is right
    assert output.metrics["gate/open"].tolist() == [1.0, 0.0, 0.0]
    assert output.metrics["reasoning/valid"].tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="needs texts"):
        reward(prompts=PROMPTS, images=images)


def test_painter_fidelity_scores_the_image_only_where_the_reasoning_is_right() -> None:
    from unigrpo_kit.rewards.judge import PainterFidelity

    # rows: right reasoning + right picture, right reasoning + a picture with the relation
    # wrong, a reasoning with the relation wrong (its faithful picture is no evidence), no scene
    texts = [describe(GOOD), describe(GOOD), describe(SWAPPED), "red circle somewhere"]
    images = render_batch([GOOD, SWAPPED, SWAPPED, GOOD])
    prompts = [PROMPT] * 4
    partial = PainterFidelity()(prompts=prompts, images=images, texts=texts)
    assert partial.scores[:2].tolist() == pytest.approx([1.0, 3 / 4])
    assert torch.isnan(partial.scores[2:]).all()
    strict = PainterFidelity(mode="strict")(prompts=prompts, images=images, texts=texts)
    assert strict.scores[:2].tolist() == [1.0, 0.0]
    noisy = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    noisy = torch.cat([images[:1], noisy[1:2].clamp(0, 1), images[2:]])
    with_quality = PainterFidelity(quality_weight=0.5)(prompts=prompts, images=noisy, texts=texts)
    judged = ShapeWorldJudge("partial")(prompts=prompts, images=noisy)
    expected = judged.scores[:2] + 0.5 * judged.metrics["quality"][:2]
    assert with_quality.scores[:2].tolist() == pytest.approx(expected.tolist())
    assert with_quality.scores[0] == pytest.approx(1.5)  # an exact render: quality 1
    assert torch.isnan(with_quality.metrics["painter/fidelity"][2:]).all()
    with pytest.raises(ValueError, match="mode"):
        PainterFidelity(mode="lenient")
    with pytest.raises(ValueError, match="quality_weight"):
        PainterFidelity(quality_weight=-1)
