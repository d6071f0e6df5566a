# The composition of recipes/composed/*.py on the built-in world: a reasoner and a painter
# built from two copies of the shipped tiny-base, trained as one policy with
# recipes/unified_multiround.py's settings (one round: ComposedUnified's reasoner does not look
# at its image). The reasoner is TinyUnified's text part (GRPO on its reasoning tokens), the
# painter its image part (Flow-GRPO on the SDE-window steps), told the reasoning as its prompt
# (template "{reasoning}", think-then-generate's final description); one advantage per episode.
#
#   unigrpo-kit train recipes/composed/shapeworld_tiny.py
#
# Results beside the built-in unified model's: docs/unified.md.
_base_ = ["../unified_multiround.py"]
model = dict(
    _delete_=True,
    type="ComposedUnified",
    reasoner=dict(type="TinyUnified", checkpoint="tiny-base"),
    painter=dict(type="TinyUnified", checkpoint="tiny-base"),
    template="{reasoning}",
)
rollout = dict(max_rounds=1)
