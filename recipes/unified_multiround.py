# UniGRPO over rounds: reason, paint, look, reflect ("done" or an edit), paint again.
_base_ = [
    "_base_/model.py",
    "_base_/task.py",
    "_base_/algorithm.py",
    "_base_/rollout.py",
    "_base_/schedule.py",
]
# One member of each group of 8 writes the prompt's reference reasoning (off-policy guidance,
# LUFFY): the training phrasings of "three" that tiny-base never gets right then have a success
# to learn from, and the counting lottery ends (docs/training.md, "Off-policy guidance").
rollout = dict(max_rounds=2, guided_members=1)
# 180 steps at 2 threads took 6.8 to 7.2 minutes on one 2-core AMD EPYC and 11.0 on another
# (docs/training.md, Results).
schedule = dict(steps=180)
# The painter's Adam steps sized by its gradient (eps above the sqrt(v) of 99% of the image
# coordinates): with torch's 1e-8 every coordinate moved about lr per step, noise included, and
# the painter's pictures drifted (quality -0.066 against -0.027 with this; docs/training.md,
# "The painter's Adam steps").
optimizer = dict(eps_image=1e-3)
