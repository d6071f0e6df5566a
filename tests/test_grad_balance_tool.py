"""tools/grad_balance.py: the regularizer's gradient is zero at the reference, the sum adds up."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("grad_balance", REPO / "tools" / "grad_balance.py")
grad_balance = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(grad_balance)


def test_terms_are_zero_at_the_reference_and_sum_to_the_trainers_loss(make_trainer):
    trainer = make_trainer(
        "image_flowgrpo",
        **{
            "algorithm.regularizers": [dict(type="VelocityMSE", weight=0.5)],
            "reward": dict(_delete_=True, type="Brightness"),  # never a tie: A != 0
        },
    )
    batch = trainer.collect()
    trainer.score(batch)
    grads = grad_balance.gradients(trainer, batch)
    assert set(grads) == {"policy", "VelocityMSE"}
    # the policy still equals its frozen reference: the velocity MSE pulls nowhere yet
    assert float(grads["VelocityMSE"].abs().max()) == 0.0
    assert float(grads["policy"].norm()) > 0.0
    # after an update the pull appears, and the parts add up to the trainer's own loss gradient
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.loss(batch)[0].backward()
    trainer.optimizer.step()
    grads = grad_balance.gradients(trainer, batch)
    assert float(grads["VelocityMSE"].norm()) > 0.0
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.loss(batch)[0].backward()
    total = grad_balance.flat_grad(params)
    torch.testing.assert_close(grads["policy"] + grads["VelocityMSE"], total)
