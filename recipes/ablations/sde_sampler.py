# Which SDE explores best inside the SDE window? Flow-GRPO's SDE (noise_level 0.7), Coefficients-
# Preserving Sampling (CPS, noise_level 0.8 as in Flow-GRPO-Fast) and DanceGRPO's eta-SDE
# (eta 0.3). `_delete_=True` replaces the recipe's sampler dict instead of merging into it.
# Run on the image-only recipe: this is a question about the image expert, which there is the
# only learner (lr_image 3e-5; the unified recipes move it at 1e-5 to keep images clean).
#
#   unigrpo-kit ablate recipes/image_flowgrpo.py \
#       --grid-file recipes/ablations/sde_sampler.py --name sde_sampler --jobs 2
#
# Measured on a 2-core CPU with --jobs 2: 7.5 minutes for 6 runs (40 steps each).
base_overrides = {"schedule.steps": 40, "schedule.save_every": 5, "schedule.sample_every": 20}
variants = [
    dict(
        name="flow_sde",
        overrides={"rollout.image_sampler": dict(_delete_=True, type="FlowSDE", noise_level=0.7)},
    ),
    dict(
        name="cps",
        overrides={"rollout.image_sampler": dict(_delete_=True, type="CPS", noise_level=0.8)},
    ),
    dict(
        name="dance_sde",
        overrides={"rollout.image_sampler": dict(_delete_=True, type="DanceSDE", eta=0.3)},
    ),
]
seeds = [0, 1]
