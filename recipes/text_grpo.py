# Text-only GRPO: only the reasoning is trained; a frozen copy of the base model paints it.
_base_ = [
    "_base_/model.py",
    "_base_/task.py",
    "_base_/algorithm.py",
    "_base_/rollout.py",
    "_base_/schedule.py",
]
# One member of each group of 8 writes the prompt's reference reasoning (off-policy guidance,
# as in the multi-round recipe; docs/training.md, "Off-policy guidance").
rollout = dict(mode="text", guided_members=1)
# The recipe's regularizers: TokenKL holds the reasoning near the base model; VelocityMSE
# (image) does not apply, as the image expert is frozen.
