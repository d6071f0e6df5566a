# What does the multi-round setting buy? One round (reason, paint) vs two rounds (reason, paint,
# look, reflect "done" or an edit, paint again), same recipe otherwise. Eval uses as many rounds
# as the run trained with; `rounds/mean` in each run's result.json says how often it edited.
#
#   unigrpo-kit ablate recipes/unified_multiround.py --grid-file recipes/ablations/rounds.py \
#       --name rounds --jobs 2
#
# Cost on a 2-core CPU, assuming ~10 s per step at the default batch for one round and up to
# ~20 s for two: 2 x 2 runs x 40 steps x (10 + 20) / 2 s + eval ~ 42 min.
base_overrides = {"schedule.steps": 60, "schedule.save_every": 10, "schedule.sample_every": 30}
grid = {"rollout.max_rounds": [1, 2]}
seeds = [0, 1]
