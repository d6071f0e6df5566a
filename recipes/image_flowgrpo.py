# Image-only Flow-GRPO: prompt -> image, no reasoning; only the image expert is trained.
_base_ = [
    "_base_/model.py",
    "_base_/task.py",
    "_base_/algorithm.py",
    "_base_/rollout.py",
    "_base_/schedule.py",
]
rollout = dict(mode="image", reasoning=False)
# The image expert is the only learner here, so it gets 3x the unified recipes' rate (1e-5,
# which they keep to protect image quality); 1e-4 scored lower and hurt quality more
# (docs/training.md, Results).
optimizer = dict(lr_image=3e-5)
