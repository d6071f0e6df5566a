"""How large each regularizer's gradient is beside the policy-gradient term's; print the numbers.

    python tools/grad_balance.py RECIPE [--steps 12] [--every 3] [--cfg-options key=value ...]

Trains RECIPE for ``--steps`` steps (as ``unigrpo-kit train`` would, in memory, nothing
written) and, after every ``--every``-th step, takes that step's episodes and computes, on the
trained parameters, the gradient of the policy-gradient terms (J_text + lambda J_flow) and of
each weighted regularizer separately. It prints their norms and the cosine between each
regularizer's gradient and the policy-gradient one. A regularizer whose gradient is as large as
the policy gradient's and points against it holds the policy in place: the reward cannot move
it (docs/training.md, image-only section, measured with the Brightness probe).
"""

from __future__ import annotations

import argparse

import torch

from unigrpo_kit.recipe import load_recipe
from unigrpo_kit.runner import build_trainer


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
    )


def gradients(trainer, batch) -> dict[str, torch.Tensor]:
    """``{"policy": g, "<Regularizer>": g, ...}``: flat gradients of each weighted term."""
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    trainer.policy.train()
    current = trainer._recompute(trainer.policy, batch)
    reference = trainer.reference_terms(batch)
    terms = trainer.objective.terms(current, reference, batch.advantages.to(trainer.device))
    grads = {}
    for name, value in {"policy": terms.policy, **terms.regularizers}.items():
        trainer.optimizer.zero_grad(set_to_none=True)
        value.backward(retain_graph=True)
        grads[name] = flat_grad(params).clone()
    trainer.optimizer.zero_grad(set_to_none=True)
    return grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--cfg-options", nargs="*", default=[])
    args = parser.parse_args()
    cfg = load_recipe(args.recipe, args.cfg_options)
    torch.set_num_threads(cfg.get("threads", 2))
    trainer = build_trainer(cfg)
    for _ in range(args.steps):
        result = trainer.train_step()
        if trainer.step % args.every:
            continue
        grads = gradients(trainer, result.batch)
        policy = grads.pop("policy")
        line = f"step {trainer.step:4d}  reward {result.metrics['reward/mean']:.4f}  "
        line += f"|g_policy| {policy.norm():.2e}"
        for name, grad in grads.items():
            cosine = torch.nn.functional.cosine_similarity(grad, policy, dim=0)
            line += f"  |g_{name}| {grad.norm():.2e} (cos {cosine:+.2f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
