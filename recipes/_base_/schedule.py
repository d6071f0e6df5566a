schedule = dict(steps=60, save_every=10, sample_every=10)
evaluation = dict(num_prompts=140, steps=20, seed=0)
seed = 0
threads = 2
