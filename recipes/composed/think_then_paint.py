# UniGRPO on real models, one round: a Hugging Face causal LM reasons about the prompt, and
# Stable Diffusion 3.5 Medium paints from the reasoning; both are trained, with one advantage
# per episode (GRPO on the reasoning's tokens + Flow-GRPO on the SDE window's steps).
#
#   unigrpo-kit train recipes/composed/think_then_paint.py --cfg-options \
#       model.reasoner.path=/models/Qwen2.5-1.5B-Instruct \
#       model.painter.path=/models/stable-diffusion-3.5-medium task.path=prompts.txt
#   unigrpo-kit train recipes/composed/think_then_paint.py --dry-run   # tiny random parts, CPU
#
# Settings from UniGRPO (arXiv 2603.23500; ../shared/PAPERS.md) where they fit: clip 0.2 on the
# tokens (Eq. 2, 1/|y_i| per episode), flow clip range 1e-6 with GRPO-Guard's RatioNorm ratio
# (Eqs. 5-6), lambda = 1 (Eq. 7), the velocity MSE instead of the latent KL (Eq. 8), no
# classifier-free guidance in training, 25 training steps (timestep shift 3: SD3.5's scheduler
# config), an SDE window of 3 steps inside steps [0, 5) at noise level 0.8, 2 PPO epochs,
# temperature 1, no token KL. Deviations (docs/unified.md): LoRA on both parts instead of the
# paper's full fine-tuning of Bagel (so the learning rates are LoRA rates, not the paper's 1e-6
# and 3e-5), G = 8 instead of 24, and JPEG compressibility as an offline stand-in reward.
model = dict(
    type="ComposedUnified",
    reasoner=dict(
        type="HFCausalLM",
        path=None,  # required: a causal LM folder (save_pretrained layout) or hub id
        lora=dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"),
        dtype="bfloat16",  # bf16 compute, float32 master weights
        gradient_checkpointing=False,
        system_prompt=(
            "You write prompts for an image generator. Think about what the user's request "
            "shows, then answer with one detailed description of the image, under 60 words."
        ),
        prompt_template="{prompt}",
    ),
    painter=dict(
        type="SD3Policy",
        path=None,  # required: a StableDiffusion3Pipeline folder (SD3.5-Medium) or hub id
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
        dtype="bfloat16",
        gradient_checkpointing=True,
        max_sequence_length=256,  # T5 tokens: room for the reasoning's description
    ),
    # The painter's prompt: the reasoning's final description (think-then-generate); e.g.
    # "{prompt}. {reasoning}" keeps the user's words in front of it.
    template="{reasoning}",
    device="auto",  # both parts' ("auto": CUDA when torch sees one, else the CPU)
)
task = dict(type="PromptFile", path=None, eval_fraction=0.1, seed=0)
# Offline, no weights: swap in a model reward (PickScore, CLIPScore, a VLM judge; docs/rewards.md).
reward = dict(type="JpegCompressibility")
algorithm = dict(
    advantage=dict(type="GroupNorm", clip=5.0),
    text_loss=dict(type="GRPOLoss", clip_eps=0.2, agg="seq-mean-token-mean"),
    image_loss=dict(type="FlowGRPOLoss", clip_eps=1e-6, ratio_norm=True),
    image_loss_weight=1.0,
    # Eq. 8's 1.5e-5 weighs ||v - v_ref||^2 summed over the latent; VelocityMSE takes the mean
    # over its elements, so the same strength is 1.5e-5 x 16 x 64 x 64 (SD3.5 at 512 px) =
    # 0.98304 (x4 at 1024 px).
    regularizers=[dict(type="VelocityMSE", weight=0.98304)],
    inner_epochs=2,
    minibatch_size=8,
    grad_clip=1.0,
    self_check_tol=5e-2,  # bf16 forward passes agree with the rollout's to bf16 rounding
    skip_zero_advantage=True,
)
# LoRA rates (the paper's 1e-6 / 3e-5 are full fine-tuning rates): Flow-GRPO's SD3.5 LoRA rate
# for the painter; 10x the full fine-tuning text rate for the reasoner's adapter (not tuned).
optimizer = dict(lr_text=1e-5, lr_image=3e-4, betas=(0.9, 0.999), weight_decay=0.0)
rollout = dict(
    mode="unified",
    reasoning=True,
    prompts_per_step=4,
    group_size=8,  # the paper's G = 24 triples the rollout; set rollout.group_size=24 for it
    num_steps=25,
    shift=3.0,  # unused: the pipeline's scheduler sets the schedule (SD3.5: shift 3)
    max_rounds=1,
    guidance_scale=1.0,
    shared_noise=False,
    split_groups=False,  # True: a group's episodes may spread over ranks (docs/distributed.md)
    prompt_splits="train",
    text_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=128),
    image_sampler=dict(type="FlowSDE", noise_level=0.8),
    window=dict(type="FixedWindow", window_size=3, window_range=(0, 5)),
)
schedule = dict(steps=300, save_every=20, sample_every=10)
evaluation = dict(num_prompts=64, steps=50, seed=0, split="eval", guidance_scale=1.0)
# torchrun runs (train --nproc N): docs/distributed.md
# strategy="fsdp2" shards parameters and optimizer state over the ranks when the master weights
# and Adam's moments do not fit one device (docs/distributed.md)
distributed = dict(strategy="ddp", backend="auto", timeout_s=300, param_dtype=None)
seed = 0
