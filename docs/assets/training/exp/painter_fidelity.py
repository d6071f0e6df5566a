# Experiment (issue "Learning that holds", item 2): the painter's own term from the judge where
# the reasoning is right. The default multi-round recipe; its denoising steps' advantage is
# A + A(f), f = the judge's partial score of the image plus its quality where the episode's
# reasoning states a right scene (no term elsewhere); the text keeps the judge's shared A.
_base_ = ["../../../../recipes/unified_multiround.py"]
algorithm = dict(
    image_reward=dict(type="PainterFidelity", mode="partial", quality_weight=1.0),
    image_reward_weight=1.0,
)
