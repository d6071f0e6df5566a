# Experiment (issue "Learning that holds", item 2): an image reward term the velocity guard does
# not cancel. The default recipe with the judge's strict score plus 0.25 x the quality metric.
_base_ = ["../../../../recipes/unified_multiround.py"]
reward = dict(
    _delete_=True,
    type="WeightedSum",
    rewards=[dict(type="ShapeWorldJudge", mode="strict"), dict(type="QualityReward")],
    weights=[1.0, 0.25],
)
