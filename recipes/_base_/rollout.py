# One round: prompt -> reasoning -> image; no classifier-free guidance (linear rollouts).
rollout = dict(
    mode="unified",
    reasoning=True,
    prompts_per_step=8,
    group_size=8,
    num_steps=10,
    shift=3.0,  # SD3 time shift, as in pretraining and in the paper: more steps at high noise
    max_rounds=1,
    guidance_scale=1.0,
    # DanceGRPO's shared start: the G images of a group begin from one initial noise, so that
    # they differ only by what the policy sampled (docs/training.md, Choices).
    shared_noise=False,
    split_groups=False,  # True: a group's episodes may spread over ranks (docs/distributed.md)
    # Which phrasings RL samples its prompts from: "train", or several, e.g. ["train",
    # "pretrain"]; never "eval", the held-out phrasings that eval scores.
    prompt_splits="train",
    # Off-policy guidance: how many of a group's G members write the prompt's reference
    # reasoning (its `reasoning`) instead of a sample; 0 is UniGRPO as published
    # (docs/training.md, "Off-policy guidance"; the three recipes that reason set 1).
    guided_members=0,
    text_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=32),
    reflection_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=16),
    image_sampler=dict(type="FlowSDE", noise_level=0.7),
    window=dict(type="FixedWindow", window_size=3, window_range=(0, 5)),
)
