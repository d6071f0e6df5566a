# GRPO on any Hugging Face causal LM over ShapeWorld's riddles, text only: the model reads a
# riddle ("a shape with four equal sides, the colour of grass") and describes the scene; the
# reasoning reward judges the description against the prompt's spec.
#
#   unigrpo-kit train recipes/hf/shapeworld_text.py --cfg-options model.path=/path/to/model
_base_ = ["text_grpo.py"]
model = dict(
    prompt_template=(
        "Describe the picture this prompt asks for, one clause per object, clauses separated "
        "by ' ; ', each clause '<colour> <shape> <place>' with a colour among red green blue "
        "yellow purple orange, a shape among circle square triangle, and a place among "
        "'top left', 'top right', 'bottom left', 'bottom right'. Write only the clauses, in "
        "lower case. Prompt: {prompt}"
    ),
)
task = dict(_delete_=True, type="ShapeWorld", resolution=32, seed=0)
reward = dict(_delete_=True, type="ReasoningReward", mode="strict")
rollout = dict(text_sampler=dict(max_new_tokens=64))
evaluation = dict(num_prompts=140, seed=0, split="eval")
