# Does a regularizer stop reward hacking, and which one? No regularizer vs Flow-GRPO's latent KL
# vs UniGRPO's velocity MSE (Figure 5's question, arXiv 2603.23500). Watch the eval `quality`
# column (off-palette pixels and noise): hacking shows as a reward that rises while quality
# falls. The runs are longer than the other sweeps' so that hacking has time to appear.
#
#   unigrpo-kit ablate recipes/unified_single_round.py \
#       --grid-file recipes/ablations/regularizers.py --name regularizers --jobs 2
#
# Measured on a 2-core CPU with --jobs 2: 19 minutes for 6 runs (120 steps each).
# If a spread is small, add a third seed with --seeds 0,1,2 (the finished runs are kept).
base_overrides = {
    # Sampled reasoning only, as when this sweep ran (before the recipes added off-policy
    # guidance; an image-only variant cannot be guided).
    "rollout.guided_members": 0,
    # torch's Adam eps for the painter, as when this sweep ran (before the unified recipes
    # sized the painter's steps by its gradient, docs/training.md).
    "optimizer.eps_image": 1e-8,
    # The recipe's image rate (1e-5) is chosen to keep images clean; at 1e-4 the unregularised
    # image expert has room to hack, which is what this sweep asks about.
    "optimizer.lr_image": 1e-4,
    "schedule.steps": 120,
    "schedule.save_every": 20,
    "schedule.sample_every": 40,
}
variants = [
    dict(name="none", overrides={"algorithm.regularizers": []}),
    dict(
        name="latent_kl", overrides={"algorithm.regularizers": [dict(type="LatentKL", weight=0.04)]}
    ),
    dict(
        name="velocity_mse",
        overrides={"algorithm.regularizers": [dict(type="VelocityMSE", weight=0.046)]},
    ),
]
seeds = [0, 1]
