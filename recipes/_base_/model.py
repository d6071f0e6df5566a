# The policy: the shipped TinyUnified base model (or a checkpoint folder / run work dir).
# device: "auto" (CUDA when torch sees one, else CPU), "cpu", "cuda" or "cuda:N"; random draws
# stay on the CPU, so a CUDA run draws the same noise as a CPU run.
model = dict(checkpoint="tiny-base", attention_backend="auto", device="auto")
