# The built-in world and its GenEval-style judge (strict: 1 only if every constraint holds).
task = dict(type="ShapeWorld", resolution=32, seed=0)
reward = dict(type="ShapeWorldJudge", mode="strict")
# Gating the judge on a parsable reasoning (`Gated`) was tried and is not the default: see
# docs/training.md, Choices.
