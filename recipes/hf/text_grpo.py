# GRPO on any Hugging Face causal LM: text-only RL on the built-in Arithmetic task (problems
# generated offline from a seed; an exact-answer reward plus a small format bonus).
#
#   unigrpo-kit train recipes/hf/text_grpo.py \
#       --cfg-options model.path=/path/to/Qwen2.5-0.5B-Instruct
#   unigrpo-kit train recipes/hf/text_grpo.py --dry-run     # tiny random Qwen2, no weights needed
#
# Defaults follow the UniGRPO paper's text settings where they fit (lr 1e-6 for full
# fine-tuning, clip 0.2, G = 8, 2 PPO epochs, temperature 1, no KL); see docs/models.md.
model = dict(
    type="HFCausalLM",
    path=None,  # required: a local folder (save_pretrained layout) or a hub id
    # LoRA (pip install -e ".[peft]"): e.g. dict(r=16, lora_alpha=32, target_modules="all-linear")
    lora=None,
    dtype="float32",  # or "bfloat16": bf16 compute, float32 master weights
    gradient_checkpointing=False,
    device="auto",
    prompt_template="{prompt}",  # the user message; the tokenizer's chat template wraps it
    system_prompt=None,
)
task = dict(type="Arithmetic", seed=0)
reward = dict(
    type="WeightedSum",
    rewards=[dict(type="ExactAnswer"), dict(type="AnswerFormat")],
    weights=[1.0, 0.1],
)
algorithm = dict(
    advantage=dict(type="GroupNorm", clip=5.0),
    text_loss=dict(type="GRPOLoss", clip_eps=0.2, agg="seq-mean-token-mean"),
    # GRPO's KL to the reference is optional (the paper runs without it, beta_txt = 0); to add
    # it: regularizers=[dict(type="TokenKL", estimator="k3", weight=0.04)]. Under LoRA the
    # reference is the adapter-disabled model (no second copy of the weights).
    regularizers=[],
    inner_epochs=2,
    minibatch_size=16,
    grad_clip=1.0,
    # float32 rollouts recompute their log-probs to ~1e-6; under bfloat16 raise this (docs).
    self_check_tol=1e-3,
    skip_zero_advantage=True,
)
optimizer = dict(lr_text=1e-6, betas=(0.9, 0.999), weight_decay=0.0, warmup_steps=0)
rollout = dict(
    mode="text",
    reasoning=True,
    prompts_per_step=8,
    group_size=8,
    prompt_splits="train",
    split_groups=False,  # True: a group's episodes may spread over ranks (docs/distributed.md)
    text_sampler=dict(type="TextSampler", temperature=1.0, max_new_tokens=256),
)
schedule = dict(steps=200, save_every=50, sample_every=10, log_every=10)
evaluation = dict(num_prompts=300, seed=0, split="eval")
# torchrun runs (train --nproc N): docs/distributed.md
# strategy="fsdp2" shards parameters and optimizer state over the ranks when the master weights
# and Adam's moments do not fit one device (docs/distributed.md)
distributed = dict(strategy="ddp", backend="auto", timeout_s=300, param_dtype=None)
seed = 0
