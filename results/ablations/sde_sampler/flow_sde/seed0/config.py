algorithm = dict(
    advantage=dict(clip=5.0, type='GroupNorm'),
    grad_clip=1.0,
    image_loss=dict(clip_eps=0.001, ratio_norm=False, type='FlowGRPOLoss'),
    image_loss_weight=1.0,
    inner_epochs=2,
    minibatch_size=32,
    regularizers=[
        dict(type='VelocityMSE', weight=0.046),
        dict(type='TokenKL', weight=0.04),
    ],
    self_check_tol=0.001,
    skip_zero_advantage=True,
    text_loss=dict(agg='seq-mean-token-mean', clip_eps=0.2, type='GRPOLoss'))
evaluation = dict(num_prompts=140, seed=0, steps=20)
model = dict(attention_backend='auto', checkpoint='tiny-base', device='auto')
optimizer = dict(
    betas=(
        0.9,
        0.999,
    ), lr_image=3e-05, lr_text=0.0003, weight_decay=0.0)
recipe_name = 'image_flowgrpo'
reward = dict(mode='strict', type='ShapeWorldJudge')
rollout = dict(
    group_size=8,
    guidance_scale=1.0,
    image_sampler=dict(noise_level=0.7, type='FlowSDE'),
    max_rounds=1,
    mode='image',
    num_steps=10,
    prompts_per_step=8,
    reasoning=False,
    reflection_sampler=dict(
        max_new_tokens=16, temperature=1.0, type='TextSampler'),
    shift=3.0,
    text_sampler=dict(max_new_tokens=32, temperature=1.0, type='TextSampler'),
    window=dict(type='FixedWindow', window_range=(
        0,
        5,
    ), window_size=3))
schedule = dict(sample_every=20, save_every=5, steps=40)
seed = 0
task = dict(resolution=32, seed=0, type='ShapeWorld')
threads = 1
