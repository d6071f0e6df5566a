# UniGRPO, one round: the model reasons about the prompt, then paints; both are trained.
_base_ = [
    "_base_/model.py",
    "_base_/task.py",
    "_base_/algorithm.py",
    "_base_/rollout.py",
    "_base_/schedule.py",
]
# One member of each group of 8 writes the prompt's reference reasoning (off-policy guidance,
# as in the multi-round recipe; docs/training.md, "Off-policy guidance").
rollout = dict(guided_members=1)
# The painter's Adam steps sized by its gradient, as in the multi-round recipe (6-run protocol:
# quality -0.025 against -0.045 with torch's 1e-8, strict +0.161 against +0.172;
# docs/training.md, "The painter's Adam steps").
optimizer = dict(eps_image=1e-3)
