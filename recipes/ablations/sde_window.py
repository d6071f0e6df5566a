# How many SDE steps per rollout should be trained? A FixedWindow of 1, 3 (UniGRPO's choice) or
# 5 consecutive SDE steps inside the first 5 of 10 denoising steps; the other steps are ODE steps.
# Larger windows explore more but cost more per training step (see `s/step`).
# Run on the image-only recipe: this is a question about the image expert, which there is the
# only learner (lr_image 3e-5; the unified recipes move it at 1e-5 to keep images clean).
#
#   unigrpo-kit ablate recipes/image_flowgrpo.py \
#       --grid-file recipes/ablations/sde_window.py --name sde_window --jobs 2
#
# Measured on a 2-core CPU with --jobs 2: 8 minutes for 6 runs (40 steps each), a SIGKILL
# after 4 minutes and the rerun included.
base_overrides = {
    "rollout.window.window_range": (0, 5),
    "schedule.steps": 40,
    "schedule.save_every": 5,
    "schedule.sample_every": 20,
}
grid = {"rollout.window.window_size": [1, 3, 5]}
seeds = [0, 1]
