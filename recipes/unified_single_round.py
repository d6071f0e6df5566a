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
