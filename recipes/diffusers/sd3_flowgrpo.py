# Flow-GRPO on Stable Diffusion 3 / 3.5 through diffusers, image only, on your own prompts.
#
#   unigrpo-kit train recipes/diffusers/sd3_flowgrpo.py \
#       --cfg-options model.path=/models/sd3.5-medium task.path=prompts.txt
#   unigrpo-kit train recipes/diffusers/sd3_flowgrpo.py --dry-run   # tiny random SD3, on a CPU
#
# Settings from Flow-GRPO (arXiv 2505.05470) and its public SD3.5-Medium configs (flow_grpo,
# config/grpo.py and scripts/train_sd3.py): 512 px; 10 sampling steps in training, 40 in
# evaluation; the SDE's noise level 0.7; LoRA rank 32, alpha 64, Gaussian init, on the joint
# attention's projections; lr 3e-4, AdamW betas (0.9, 0.999), weight decay 1e-4, gradient norm
# clipped at 1; PPO clip range 1e-4; advantages clipped at 5; latent KL beta 0.04; G = 24 images
# per prompt; one inner epoch. As in Flow-GRPO-Fast and UniGRPO, no classifier-free guidance in
# training (linear rollouts; evaluation CFG-free too) and only a window of 3 SDE steps among the
# first 5 is trained. The reward here is JPEG compressibility (DDPO's, offline, no weights);
# swap it for your own reward. See docs/diffusers.md.
model = dict(
    type="SD3Policy",
    path=None,  # required: a StableDiffusion3Pipeline folder (save_pretrained layout) or hub id
    resolution=512,
    lora=dict(
        r=32,
        lora_alpha=64,
        init_lora_weights="gaussian",
        target_modules=[
            "attn.add_k_proj",
            "attn.add_q_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "attn.to_k",
            "attn.to_out.0",
            "attn.to_q",
            "attn.to_v",
        ],
    ),  # fmt: skip
    dtype="bfloat16",  # bf16 compute, float32 master weights for what trains
    gradient_checkpointing=True,
    max_sequence_length=128,  # T5 tokens, as flow_grpo
    device="auto",
)
task = dict(type="PromptFile", path=None, eval_fraction=0.1, seed=0)
reward = dict(type="JpegCompressibility")
algorithm = dict(
    advantage=dict(type="GroupNorm", clip=5.0),
    text_loss=dict(type="GRPOLoss"),  # unused: image-only
    image_loss=dict(type="FlowGRPOLoss", clip_eps=1e-4, ratio_norm=False),
    image_loss_weight=1.0,
    # Flow-GRPO's KL to the reference (the adapter-disabled transformer under LoRA); UniGRPO's
    # velocity MSE is the alternative: dict(type="VelocityMSE", weight=1.0) (its 1.5e-5 summed
    # over a 16 x 64 x 64 latent, as a per-element mean).
    regularizers=[dict(type="LatentKL", weight=0.04)],
    inner_epochs=1,
    minibatch_size=8,
    grad_clip=1.0,
    self_check_tol=5e-2,  # bf16 forward passes agree with the rollout's to bf16 rounding
    skip_zero_advantage=True,
)
optimizer = dict(lr_image=3e-4, betas=(0.9, 0.999), weight_decay=1e-4, warmup_steps=0)
rollout = dict(
    mode="image",
    reasoning=False,
    prompts_per_step=4,
    group_size=24,
    num_steps=10,
    shift=3.0,  # unused: the pipeline's scheduler sets the schedule (SD3.5: shift 3)
    max_rounds=1,
    guidance_scale=1.0,
    shared_noise=False,
    split_groups=False,  # True: a group's episodes may spread over ranks (docs/distributed.md)
    prompt_splits="train",
    image_sampler=dict(type="FlowSDE", noise_level=0.7),
    window=dict(type="FixedWindow", window_size=3, window_range=(0, 5)),
)
schedule = dict(steps=300, save_every=20, sample_every=10, log_every=10)
evaluation = dict(num_prompts=64, steps=40, seed=0, split="eval", guidance_scale=1.0)
# torchrun runs (train --nproc N): docs/distributed.md
# strategy="fsdp2" shards parameters and optimizer state over the ranks when the master weights
# and Adam's moments do not fit one device (docs/distributed.md)
distributed = dict(strategy="ddp", backend="auto", timeout_s=300, param_dtype=None)
seed = 0
