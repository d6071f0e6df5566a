# Image-only Flow-GRPO: prompt -> image, no reasoning; only the image expert is trained.
_base_ = ["_base_/model.py", "_base_/task.py", "_base_/algorithm.py", "_base_/rollout.py",
          "_base_/schedule.py"]
rollout = dict(mode="image", reasoning=False)
# The image expert is the only learner here, so it gets the rate of the paper's image expert
# scaled to the tiny model (the unified recipes keep it at 1e-5 to protect image quality).
optimizer = dict(lr_image=3e-5)
