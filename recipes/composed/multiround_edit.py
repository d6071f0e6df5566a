# UniGRPO on real models over several rounds: a Qwen2.5-VL reasons about the prompt, FLUX.1
# Kontext paints, the Qwen2.5-VL looks at the image and answers "done" or an edit instruction,
# Kontext edits its own image from that instruction, up to rollout.max_rounds images. Both are
# trained, with one advantage per episode on every token of every text segment (reasoning and
# reflections, GRPO) and every SDE-window step of every image (Flow-GRPO); the reward scores
# the last image each episode painted.
#
#   unigrpo-kit train recipes/composed/multiround_edit.py --cfg-options \
#       model.reasoner.path=/models/Qwen2.5-VL-3B-Instruct \
#       model.painter.path=/models/FLUX.1-Kontext-dev task.path=prompts.txt
#   unigrpo-kit train recipes/composed/multiround_edit.py --dry-run   # tiny random parts, CPU
#
# Settings as recipes/composed/think_then_paint.py (UniGRPO, arXiv 2603.23500: clip 0.2 on the
# tokens, flow clip 1e-6 with RatioNorm, lambda = 1, the velocity MSE, no CFG in training, an
# SDE window of 3 steps inside [0, 5) at noise level 0.8, 2 PPO epochs, temperature 1), with
# FLUX.1's 28 steps (Kontext's own schedule, resolution-dependent shift) and its distilled
# guidance 2.5 (the pipeline's default for Kontext-dev). Deviations (docs/unified.md): LoRA on
# both parts (the vision tower and the editor's encoders and VAE frozen), G = 8, JPEG
# compressibility as an offline stand-in reward, 2 rounds.
model = dict(
    type="ComposedMultiRound",
    reasoner=dict(
        type="HFVisionLM",
        path=None,  # required: a Qwen2-VL / Qwen2.5-VL folder (save_pretrained layout) or hub id
        # the language model's projections only: the vision tower stays frozen
        lora=dict(
            r=16,
            lora_alpha=32,
            lora_dropout=0.0,
            target_modules=(
                r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
            ),
        ),
        dtype="bfloat16",
        gradient_checkpointing=False,
        system_prompt=(
            "You write prompts for an image generator and check its images. Think about what "
            "the user's request shows, then answer with one detailed description of the image, "
            "under 60 words."
        ),
        # a user turn that opens with the image (Qwen2-VL's chat template for an image)
        image_block="\n<|im_start|>user\n<|vision_start|>{image}<|vision_end|>\n",
    ),
    painter=dict(
        type="FluxKontextPolicy",
        path=None,  # required: a FluxKontextPipeline folder (FLUX.1-Kontext-dev) or hub id
        resolution=512,
        guidance=2.5,
        reference="latents",  # the edit starts from the painted latents ("pixels": re-encoded)
        lora=dict(
            r=32,
            lora_alpha=64,
            init_lora_weights="gaussian",
            target_modules=[
                "attn.to_k",
                "attn.to_q",
                "attn.to_v",
                "attn.to_out.0",
                "attn.add_k_proj",
                "attn.add_q_proj",
                "attn.add_v_proj",
                "attn.to_add_out",
            ],
        ),  # fmt: skip
        dtype="bfloat16",
        gradient_checkpointing=True,
        max_sequence_length=256,
    ),
    template="{reasoning}",  # the first image's prompt: the reasoning's description
    edit_template="{reflection}",  # each edit's instruction: the reflection
    reflection_prompt=(
        "Does the image show the request? Answer done, or write one instruction that edits "
        "it.<|im_end|>\n<|im_start|>assistant\n"
    ),
    device="auto",
)
task = dict(type="PromptFile", path=None, eval_fraction=0.1, seed=0)
# Offline, no weights: swap in a model reward (a VLM judge, PickScore; docs/rewards.md).
reward = dict(type="JpegCompressibility")
algorithm = dict(
    advantage=dict(type="GroupNorm", clip=5.0),
    text_loss=dict(type="GRPOLoss", clip_eps=0.2, agg="seq-mean-token-mean"),
    image_loss=dict(type="FlowGRPOLoss", clip_eps=1e-6, ratio_norm=True),
    image_loss_weight=1.0,
    # Eq. 8's 1.5e-5 on ||v - v_ref||^2 summed over the latent; VelocityMSE averages over its
    # elements: 1.5e-5 x 1024 tokens x 64 channels (FLUX at 512 px) = 0.98304.
    regularizers=[dict(type="VelocityMSE", weight=0.98304)],
    inner_epochs=2,
    minibatch_size=8,
    grad_clip=1.0,
    self_check_tol=5e-2,  # bf16 forward passes agree with the rollout's to bf16 rounding
    skip_zero_advantage=True,
)
optimizer = dict(lr_text=1e-5, lr_image=3e-4, betas=(0.9, 0.999), weight_decay=0.0)
rollout = dict(
    mode="unified",
    reasoning=True,
    prompts_per_step=4,
    group_size=8,
    num_steps=28,
    shift=3.0,  # unused: the pipeline's scheduler sets the schedule
    max_rounds=2,
    guidance_scale=1.0,
    shared_noise=False,
    split_groups=False,  # True: a group's episodes may spread over ranks (docs/distributed.md)
    prompt_splits="train",
    text_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=128),
    reflection_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=48),
    image_sampler=dict(type="FlowSDE", noise_level=0.8),
    window=dict(type="FixedWindow", window_size=3, window_range=(0, 5)),
)
schedule = dict(steps=300, save_every=20, sample_every=10)
evaluation = dict(num_prompts=64, steps=28, seed=0, split="eval", guidance_scale=1.0)
# torchrun runs (train --nproc N): docs/distributed.md
# strategy="fsdp2" shards parameters and optimizer state over the ranks when the master weights
# and Adam's moments do not fit one device (docs/distributed.md)
distributed = dict(strategy="ddp", backend="auto", timeout_s=300, param_dtype=None)
seed = 0
