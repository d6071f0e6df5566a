# Which expert should RL train? Text-only GRPO vs image-only Flow-GRPO vs joint UniGRPO
# (the structure of UniGRPO's Table 1, arXiv 2603.23500). All three reason before painting and
# are scored by the same judge; only what is trained differs (text-only freezes the painter,
# image-only freezes the reasoning, joint trains both with one shared advantage).
#
#   unigrpo-kit ablate recipes/unified_single_round.py --grid-file recipes/ablations/modes.py \
#       --name modes --jobs 2
#
# Measured on a 2-core CPU with --jobs 2: 15 minutes for 9 runs (60 steps each).
base_overrides = {
    # Sampled reasoning only, as when this sweep ran (before the recipes added off-policy
    # guidance; an image-only variant cannot be guided).
    "rollout.guided_members": 0,
    # torch's Adam eps for the painter, as when this sweep ran (before the unified recipes
    # sized the painter's steps by its gradient, docs/training.md).
    "optimizer.eps_image": 1e-8,
    "schedule.steps": 60,
    "schedule.save_every": 10,
    "schedule.sample_every": 30,
    # The regularizers this sweep ran with (docs/ablations.md), before the recipes added TokenKL
    # on the reasoning: pinned so that the documented command reproduces the documented numbers.
    "algorithm.regularizers": [dict(type="VelocityMSE", weight=0.046)],
}
variants = [
    dict(name="text_only", overrides={"rollout.mode": "text", "algorithm.regularizers": []}),
    dict(name="image_only", overrides={"rollout.mode": "image"}),
    dict(name="joint", overrides={"rollout.mode": "unified"}),
]
seeds = [0, 1, 2]
