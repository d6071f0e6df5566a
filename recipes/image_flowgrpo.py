# Image-only Flow-GRPO: prompt -> image, no reasoning; only the image expert is trained.
_base_ = ["_base_/model.py", "_base_/task.py", "_base_/algorithm.py", "_base_/rollout.py",
          "_base_/schedule.py"]
rollout = dict(mode="image", reasoning=False)
