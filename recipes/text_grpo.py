# Text-only GRPO: only the reasoning is trained; a frozen copy of the base model paints it.
_base_ = [
    "_base_/model.py",
    "_base_/task.py",
    "_base_/algorithm.py",
    "_base_/rollout.py",
    "_base_/schedule.py",
]
rollout = dict(mode="text")
# The recipe's regularizers: TokenKL holds the reasoning near the base model; VelocityMSE
# (image) does not apply, as the image expert is frozen.
