# Experiment (issue "Learning that holds", item 2): a reward term of the painter's own. The
# default multi-round recipe; its denoising steps' advantage is A + w * A(quality), the text keeps
# the judge's shared A; the velocity guard 10x weaker (0.0046), since at 0.046 it cancels even a
# brightness reward (docs/training.md, "Image-only Flow-GRPO") and the quality term now stands
# against the texture hack.
_base_ = ["../../../../recipes/unified_multiround.py"]
algorithm = dict(
    image_reward=dict(type="QualityReward"),
    image_reward_weight=1.0,
    regularizers=[dict(type="VelocityMSE", weight=0.0046), dict(type="TokenKL", weight=0.04)],
)
