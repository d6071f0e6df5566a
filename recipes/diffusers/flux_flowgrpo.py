# Flow-GRPO on FLUX.1 through diffusers, image only, on your own prompts.
#
#   unigrpo-kit train recipes/diffusers/flux_flowgrpo.py \
#       --cfg-options model.path=/models/FLUX.1-dev task.path=prompts.txt
#   unigrpo-kit train recipes/diffusers/flux_flowgrpo.py --dry-run   # tiny random Flux
#
# The SD3 recipe's Flow-GRPO settings (sd3_flowgrpo.py) on Flux: packed 2x2 latents, the
# distilled guidance embedding at 3.5 (FLUX.1-dev's default; no true CFG, so rollouts stay one
# transformer call per step), and the pipeline's resolution-dependent time shift. LoRA on the
# attention projections of the double and single stream blocks.
_base_ = ["sd3_flowgrpo.py"]
model = dict(
    _delete_=True,
    type="FluxPolicy",
    path=None,  # required: a FluxPipeline folder or hub id
    resolution=512,
    guidance=3.5,
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
    max_sequence_length=512,
    device="auto",
)
