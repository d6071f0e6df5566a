# The policy: the shipped TinyUnified base model (or a checkpoint folder / run work dir).
model = dict(checkpoint="tiny-base", attention_backend="auto")
