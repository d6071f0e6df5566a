# What does classifier-free guidance during training cost, and does it buy anything? Rollouts
# with CFG (w = 3) vs without (UniGRPO trains CFG-free; Figure 4's question, arXiv 2603.23500).
# Compare the `s/step` column (wall time per step) with the eval score; evaluation is CFG-free
# for both, so the score measures the trained policy itself.
# Run on the image-only recipe: this is a question about the image expert, which there is the
# only learner (lr_image 3e-5; the unified recipes move it at 1e-5 to keep images clean).
#
#   unigrpo-kit ablate recipes/image_flowgrpo.py --grid-file recipes/ablations/cfg.py \
#       --name cfg --jobs 2
#
# Measured on a 2-core CPU with --jobs 2: 6 minutes for 4 runs (40 steps each).
base_overrides = {"schedule.steps": 40, "schedule.save_every": 5, "schedule.sample_every": 20}
grid = {"rollout.guidance_scale": [1.0, 3.0]}
seeds = [0, 1]
