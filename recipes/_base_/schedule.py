# log_every: one compact progress line every N steps when the output is not a terminal.
schedule = dict(steps=120, save_every=20, sample_every=20, log_every=10)
# split: "eval" (held-out phrasings, the reported score) or "train" (the phrasings RL saw).
evaluation = dict(num_prompts=140, steps=20, seed=0, split="eval")
# torchrun runs (train --nproc N): docs/distributed.md
distributed = dict(strategy="ddp", backend="auto", timeout_s=300, param_dtype=None)
seed = 0
threads = 2
# Experiment trackers beside TensorBoard (always on), e.g.
# [dict(type="wandb", project="unigrpo", mode="offline"), dict(type="mlflow")]: see
# unigrpo_kit/trackers.py and the `wandb` / `mlflow` extras.
trackers = []
