schedule = dict(steps=120, save_every=20, sample_every=20)
evaluation = dict(num_prompts=140, steps=20, seed=0)
seed = 0
threads = 2
