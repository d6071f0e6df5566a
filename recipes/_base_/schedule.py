schedule = dict(steps=120, save_every=20, sample_every=20)
# split: "eval" (held-out phrasings, the reported score) or "train" (the phrasings RL saw).
evaluation = dict(num_prompts=140, steps=20, seed=0, split="eval")
# torchrun runs (train --nproc N): docs/distributed.md
distributed = dict(strategy="ddp", backend="auto", timeout_s=300)
seed = 0
threads = 2
