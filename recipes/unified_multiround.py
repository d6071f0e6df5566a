# UniGRPO over rounds: reason, paint, look, reflect ("done" or an edit), paint again.
_base_ = ["_base_/model.py", "_base_/task.py", "_base_/algorithm.py", "_base_/rollout.py",
          "_base_/schedule.py"]
rollout = dict(max_rounds=2)
