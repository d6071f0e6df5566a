# UniGRPO: GRPO on tokens + Flow-GRPO on SDE-window steps, one shared group advantage,
# velocity-MSE instead of the latent KL. Rates for the 2M-parameter model: see docs/training.md.
algorithm = dict(
    advantage=dict(type="GroupNorm", clip=5.0),
    text_loss=dict(type="GRPOLoss", clip_eps=0.2, agg="seq-mean-token-mean"),
    image_loss=dict(type="FlowGRPOLoss", clip_eps=1e-3, ratio_norm=False),
    image_loss_weight=1.0,
    # The paper's 1.5e-5 weighs a squared norm summed over the latent; VelocityMSE takes the
    # mean over the 3 x 32 x 32 latent, so the same per-element strength is 1.5e-5 * 3072.
    # TokenKL is GRPO's beta (k3, 0.04); the paper runs without it (beta_txt = 0) at lr 1e-6, but
    # at this model's lr_text 3e-4 the reasoning format eroded without it (16% of greedy
    # reasonings no longer parsed after 180 multi-round steps; docs/training.md, Choices).
    # Each regularizer applies only where its expert trains (TokenKL: text, VelocityMSE: image).
    regularizers=[dict(type="VelocityMSE", weight=0.046), dict(type="TokenKL", weight=0.04)],
    inner_epochs=2,
    minibatch_size=32,
    grad_clip=1.0,
    self_check_tol=1e-3,
    # DAPO's dynamic sampling: groups whose rewards are all equal (A = 0) are not trained on.
    skip_zero_advantage=True,
    # With off-policy guidance (rollout.guided_members): "shared" gives the painter's steps the
    # episode's one advantage (UniGRPO); "sampled" computes the painter's advantage over each
    # group's sampled members only and leaves the guided episodes' pictures untrained.
    guided_image_advantage="shared",
)
# The reasoning is where this world's eval prompts are won (docs/training.md: Results); the image
# expert moves 30x slower so that its pictures stay clean (the quality metric). The 10-step
# linear warm-up keeps Adam's first step (a sign step of size lr on every parameter) from
# throwing the policy far from the one that sampled (docs/training.md: the first-update shock).
# eps_<part>: Adam's denominator floor per part (torch's 1e-8); see docs/training.md.
optimizer = dict(
    lr_text=3e-4,
    lr_image=1e-5,
    eps_text=1e-8,
    eps_image=1e-8,
    betas=(0.9, 0.999),
    weight_decay=0.0,
    warmup_steps=10,
)
