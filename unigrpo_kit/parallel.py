"""How the model is held across ranks: ``distributed.strategy = "ddp" | "fsdp2"``.

The trainer sees one small interface (:class:`Replicated` is the default):

- ``prepare(modules)``: make the ranks' models one model, before the optimizer is built;
- ``gathered()``: a context in which every module holds its full parameters (a step's rollout,
  scoring and recomputation run inside it);
- ``reduce_gradients(params, max_norm)``: sum the ranks' gradients, clip their global norm to
  ``max_norm`` and leave them where the optimizer reads them; returns the norm before clipping;
- ``after_update()``: what follows ``optimizer.step()``.

**DDP** (:class:`Replicated`): every rank holds the whole model; gradients are summed with one
flat all-reduce per dtype (:func:`~unigrpo_kit.distributed.all_reduce_gradients`).

**FSDP2** (:class:`FullyShardedPolicy`): ``torch.distributed.fsdp.fully_shard`` on every
transformer block and then on the root, so that each rank stores 1/W of the parameters and of
the optimizer's moments (the fp32 master weights and Adam's two moments: 12 bytes per
parameter, where most of a large model's training memory goes). The policy protocol calls a
model's blocks a data-dependent number of times (one rank decodes 40 tokens, another 12; a rank
may hold no episode), while FSDP's own forward hooks all-gather a block on each call and expect
every rank to call it alike. The kit therefore drives FSDP explicitly: its hooks are removed,
every unit is all-gathered once when a step begins (``gathered()``, in ``param_dtype``) and
stays whole for the step's rollout, scoring and minibatches; after each backward the
gradients of the whole parameters are summed across ranks in float32, clipped, and each rank
keeps its shard of them as the sharded parameter's gradient; the optimizer steps on the shards;
the parameters are gathered again. A rank with no episode joins every collective with zero
gradients. What this costs: the whole model in ``param_dtype`` (and its gradient) must fit one
device during a step; what it saves: the master weights and the optimizer state, sharded.
Checkpoints are written with ``torch.distributed.checkpoint``
(:mod:`~unigrpo_kit.sharded_checkpoint`).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from . import distributed as dd

STRATEGIES = ("ddp", "fsdp2")


def build_strategy(cfg):
    """The strategy ``distributed.strategy`` names (``"ddp"`` when the key is absent)."""
    settings = dict(cfg.get("distributed", None) or {})
    name = settings.get("strategy", "ddp")
    if name == "fsdp2":
        return FullyShardedPolicy(settings)
    if name != "ddp":
        raise ValueError(
            f"distributed.strategy={name!r} is not a strategy; use one of {', '.join(STRATEGIES)}"
        )
    return Replicated()


class Replicated:
    """DDP: replicas of the whole model, gradients summed by one flat all-reduce per dtype."""

    name = "ddp"

    def prepare(self, modules: list[nn.Module], policy=None) -> None:
        for module in modules:
            dd.broadcast_parameters(module)  # replicas start equal

    @contextlib.contextmanager
    def gathered(self):
        yield

    def reduce_gradients(self, params: list[torch.Tensor], max_norm: float) -> float:
        dd.all_reduce_gradients(params)  # the ranks' shares summed: the minibatch's gradient
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))

    def after_update(self) -> None:
        pass


def transformer_blocks(module: nn.Module) -> list[nn.Module]:
    """The units FSDP2 shards one by one: the members of every ``nn.ModuleList`` whose members
    are all of one class and hold parameters (``TinyUnified.blocks``, a transformers model's
    ``layers``, a diffusers transformer's ``transformer_blocks``), outermost lists first."""
    units: list[nn.Module] = []
    taken: set[int] = set()
    for _, child in module.named_modules():
        if not isinstance(child, nn.ModuleList) or len(child) == 0:
            continue
        if len({type(m) for m in child}) != 1:
            continue
        if any(id(m) in taken for m in child.modules()):
            continue
        members = [m for m in child if any(True for _ in m.parameters())]
        units.extend(members)
        for member in members:
            taken.update(id(m) for m in member.modules())
    return units


def _roots(module: nn.Module) -> list[nn.Module]:
    """The modules to shard as roots: ``module`` itself, or, for a container without a
    forward (a composition's ``ModuleDict`` of reasoner and painter), each of its parts."""
    if isinstance(module, (nn.ModuleDict, nn.ModuleList)):
        return [root for child in module.children() for root in _roots(child)
                if any(True for _ in child.parameters())]  # fmt: skip
    return [module]


def _dtype(name):
    if name is None or isinstance(name, torch.dtype):
        return name
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        str(name)
    ]


class FullyShardedPolicy:
    """FSDP2 driven explicitly (the module docstring). ``settings``: the recipe's
    ``distributed`` dict; ``param_dtype`` (default: the model's own) is the dtype the gathered
    parameters take; gradients are always reduced in float32."""

    name = "fsdp2"

    def __init__(self, settings: dict):
        self.param_dtype = _dtype(settings.get("param_dtype"))
        self.modules: list[nn.Module] = []
        self.units: list[nn.Module] = []  # every fully_shard'ed module, in a fixed order
        self.depth = 0  # nesting of gathered()

    def prepare(self, modules: list[nn.Module], policy=None) -> None:
        """Shard each distinct module (blocks first, then the root). In a world of one there is
        nothing to shard: the modules stay as they are and checkpoints still take the sharded
        format, so that a run saved at world W resumes here. ``policy``: the trained policy,
        whose forward passes must run under autocast to ``param_dtype`` if that is not
        float32 (gathered bf16 weights meet float32 activations otherwise)."""
        low = self.param_dtype not in (None, torch.float32)
        if low and getattr(policy, "autocast_dtype", None) != self.param_dtype:
            name = type(policy).__name__
            raise ValueError(
                f"distributed.param_dtype={str(self.param_dtype).split('.')[-1]!r} needs a "
                f"policy whose forward passes run under autocast to that dtype "
                f"(model.dtype='bfloat16' for the transformers and diffusers policies); {name} "
                "computes in float32 here: set distributed.param_dtype=None"
            )
        unique = list({id(m): m for m in modules}.values())
        self.modules = unique
        if dd.world_size() == 1:
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        for module in unique:
            dd.broadcast_parameters(module)
        policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, cast_forward_inputs=False)
        covered: set[int] = set()  # modules inside a sharded root (shared parts shard once)
        for module in [root for m in unique for root in _roots(m)]:
            if id(module) in covered:
                continue
            covered.update(id(m) for m in module.modules())
            blocks = transformer_blocks(module)
            for block in blocks:
                fully_shard(block, mp_policy=policy, reshard_after_forward=False)
            fully_shard(module, mp_policy=policy, reshard_after_forward=False)
            for unit in [*blocks, module]:
                state = fully_shard.state(unit)
                # the kit gathers and reduces itself: FSDP's per-call hooks would issue a
                # collective per block call, and the ranks call blocks unequally
                state._pre_forward_hook_handle.remove()
                state._post_forward_hook_handle.remove()
            fully_shard.state(module)._lazy_init()
            for unit in [*blocks, module]:
                for group in fully_shard.state(unit)._fsdp_param_groups:
                    # state_dict() returns what the module holds: the whole parameters inside
                    # gathered() (a policy's save), the shards outside it (the sharded
                    # checkpoint); FSDP's hooks would reshard first. The handles stay in their
                    # dicts, so that FSDP does not register them again.
                    for handle in (
                        *group._module_to_pre_save_state_dict_hook_handle.values(),
                        *group._module_to_pre_load_state_dict_hook_handle.values(),
                    ):
                        handle.remove()
            self.units.extend([module, *blocks])

    # ------------------------------------------------------------------ gather / release
    def _unshard(self) -> None:
        for unit in self.units:
            unit.unshard()

    def _reshard(self) -> None:
        for unit in self.units:
            unit.reshard()

    @contextlib.contextmanager
    def gathered(self):
        """Every unit whole for the duration (re-entrant); sharded again on leaving."""
        if not self.units:
            yield
            return
        self.depth += 1
        if self.depth == 1:
            self._unshard()
        try:
            yield
        finally:
            self.depth -= 1
            if self.depth == 0:
                self._reshard()

    def reduce_gradients(self, params: list[torch.Tensor], max_norm: float) -> float:
        """Sum the whole parameters' gradients over the ranks (float32), clip their norm, and
        give each sharded parameter its shard; the model is left sharded until
        :meth:`after_update` gathers it again."""
        if not self.units:
            return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        trained = {id(p) for p in params}
        whole: dict[str, torch.Tensor] = {}
        for key, p in self._named_parameters():
            if p.grad is not None:
                whole[key] = p.grad.float()
                p.grad = None
        self._reshard()
        sharded = {key: p for key, p in self._named_parameters() if id(p) in trained}
        keys = sorted(sharded)
        grads = [
            whole[k] if k in whole else torch.zeros(sharded[k].shape, device=sharded[k].device)
            for k in keys
        ]
        flat = torch.cat([g.reshape(-1) for g in grads]) if grads else torch.zeros(0)
        if dd.world_size() > 1 and flat.numel():
            torch.distributed.all_reduce(flat)
        # the norm as clip_grad_norm_ takes it: of the per-tensor norms
        spans = zip(_offsets(grads), grads, strict=True)
        norms = [flat[o : o + g.numel()].norm() for o, g in spans]
        norm = float(torch.stack(norms).norm()) if norms else 0.0
        coef = min(1.0, max_norm / (norm + 1e-6)) if math.isfinite(norm) else 1.0
        offset = 0
        for key, grad in zip(keys, grads, strict=True):
            n = grad.numel()
            full = flat[offset : offset + n].view(grad.shape) * coef
            offset += n
            param = sharded[key]
            param.grad = _shard_like(param, full)
        return norm

    def _named_parameters(self):
        """``(key, parameter)`` of every held module, each parameter once (a LoRA reference
        shares the policy's module), keyed alike whether gathered or sharded."""
        seen: set[int] = set()
        for index, module in enumerate(self.modules):
            for name, p in module.named_parameters(remove_duplicate=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    yield f"{index}.{name}", p

    def after_update(self) -> None:
        if self.units and self.depth > 0:
            self._unshard()


def _offsets(tensors: list[torch.Tensor]) -> list[int]:
    out, offset = [], 0
    for t in tensors:
        out.append(offset)
        offset += t.numel()
    return out


def _shard_like(param, full: torch.Tensor):
    """This rank's shard of ``full`` as a tensor of ``param``'s kind (a DTensor sharded as the
    parameter is)."""
    from torch.distributed.tensor import DTensor

    if not isinstance(param, DTensor):
        return full.to(param.dtype)
    chunks = torch.chunk(full, param.device_mesh.size(), dim=0)
    index = param.device_mesh.get_local_rank()
    local = chunks[index] if index < len(chunks) else full.new_zeros((0, *full.shape[1:]))
    local = local.to(device=param.to_local().device, dtype=param.dtype).contiguous()
    return DTensor.from_local(
        local, param.device_mesh, param.placements, shape=param.shape, stride=param.stride(),
        run_check=False,
    )  # fmt: skip
