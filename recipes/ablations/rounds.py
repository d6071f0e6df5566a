# What does the multi-round setting buy? One round (reason, paint) vs two rounds (reason, paint,
# look, reflect "done" or an edit, paint again), same recipe otherwise. Eval uses as many rounds
# as the run trained with; `rounds/mean` in each run's result.json says how often it edited.
#
#   unigrpo-kit ablate recipes/unified_multiround.py --grid-file recipes/ablations/rounds.py \
#       --name rounds --jobs 2
#
# Measured on a 2-core CPU with --jobs 2: 7 minutes for 4 runs (60 steps each).
base_overrides = {
    # Sampled reasoning only, as when this sweep ran (before the recipes added off-policy
    # guidance; an image-only variant cannot be guided).
    "rollout.guided_members": 0,
    # torch's Adam eps for the painter, as when this sweep ran (before the multi-round recipe
    # sized the painter's steps by its gradient, docs/training.md).
    "optimizer.eps_image": 1e-8,
    "schedule.steps": 60,
    "schedule.save_every": 10,
    "schedule.sample_every": 30,
    # The regularizers this sweep ran with (docs/ablations.md), before the recipes added TokenKL
    # on the reasoning: pinned so that the documented command reproduces the documented numbers.
    "algorithm.regularizers": [dict(type="VelocityMSE", weight=0.046)],
}
grid = {"rollout.max_rounds": [1, 2]}
seeds = [0, 1]
