"""Sharded RL for policies that do not fit one device (``[run] sharding = "fsdp"``).

The policy's model is sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``):
each decoder layer on its own, then the model whose forward every pass goes through
(the policy says which, through :class:`~rlaif.core.protocols.Shardable`). Parameters
live as DTensor shards; a forward all-gathers each layer's weights just before it
runs, and the backward reduce-scatters (averages) the gradients, so the loop no longer
averages them itself. Frozen base weights and trainable LoRA weights may share a layer:
FSDP2 keeps ``requires_grad`` per parameter.

Because a forward is a collective, every rank must run the same passes: the loop gives
each rank the same number of prompts, the policy decodes until *every* rank's rows
are done (the stop flag is all-reduced), and evaluation runs on every rank (rank 0
writes). Checkpoints hold full tensors, gathered on every rank, in the same format as
an unsharded run's, so a run can resume sharded or not.

Why not ``accelerate``'s FSDP plugin: accelerate 1.15 ignores it on CPU (the process
group comes up as plain ``MULTI_CPU`` data parallel), and the loop needs the sharded
module tree itself for lock-step decoding; calling ``fully_shard`` here works on
``gloo`` (CPU) and ``nccl`` alike. An ``accelerate launch`` FSDP config selects this
mode; DeepSpeed and Megatron configs are still refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rlaif.core.errors import UsageError

#: ``[run] sharding`` values.
SHARDINGS = ("none", "fsdp")


def sharding_mode(setting: str) -> str:
    """The run's sharding: ``[run] sharding``, or ``"fsdp"`` when ``accelerate launch``
    was given an FSDP config (it exports ``ACCELERATE_USE_FSDP``)."""
    if setting == "none" and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return setting


def is_sharded(tensor: Any) -> bool:
    """Whether ``tensor`` is a DTensor (a shard of a parameter, its gradient or state)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch build without distributed
        return False
    return isinstance(tensor, DTensor)


def check_shardable(policy: Any, world: int, prompts_per_step: int) -> None:
    """One-line errors for a sharded run that cannot keep its ranks in step."""
    from rlaif.core.protocols import Shardable

    if not isinstance(policy, Shardable):
        raise UsageError(f"[run] sharding = \"fsdp\" needs a policy that can be sharded (a shard() method), and "
                         f"{getattr(policy, 'name', type(policy).__name__)} has none")
    if prompts_per_step % world:
        raise UsageError(f"[run] sharding = \"fsdp\" gives every process the same number of prompts; "
                         f"prompts_per_step = {prompts_per_step} is not a multiple of the {world} processes")


def shard_policy(policy: Any, device: Any, world: int) -> None:
    """Shard ``policy``'s model across the ``world`` processes (FSDP2, one mesh dimension)."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(torch.device(device).type, (world,))
    policy.shard(lambda module: fully_shard(module, mesh=mesh))


def full_tensor(tensor: Any) -> Any:
    """The whole tensor (a collective for a DTensor: call it on every rank)."""
    return tensor.full_tensor() if is_sharded(tensor) else tensor


def shard_like(param: Any, full: Any) -> Any:
    """``full`` cut as ``param`` is (this rank's shard), or ``full`` for a plain param.
    Every rank holds ``full`` (read from the checkpoint), so no data moves."""
    if not is_sharded(param):
        return full
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements,
                             src_data_rank=None)


def full_optimizer_state(optimizer: Any) -> dict[str, Any]:
    """``optimizer.state_dict()`` with every sharded state tensor gathered whole, in the
    format of an unsharded optimizer (a collective: call it on every rank)."""
    state = optimizer.state_dict()
    state["state"] = {index: {key: full_tensor(value) for key, value in entry.items()}
                      for index, entry in sorted(state["state"].items())}
    return state


def sharded_optimizer_state(optimizer: Any, state: dict[str, Any]) -> dict[str, Any]:
    """A whole optimizer state (:func:`full_optimizer_state`, or an unsharded run's)
    cut to this rank's shards, ready for ``optimizer.load_state_dict``."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    out = dict(state)
    out["state"] = {index: {key: shard_like(params[int(index)], value)
                            if getattr(value, "shape", None) == params[int(index)].shape else value
                            for key, value in entry.items()}
                    for index, entry in state["state"].items()}
    return out


@contextmanager
def gathered(policy: Any) -> Iterator[None]:
    """Every sharded parameter of ``policy`` swapped for a plain copy of the whole tensor
    (for ``policy.save``, which reads plain tensors), put back on exit; a collective, so
    enter it on every rank. Holds the whole model on each rank for the duration.
    (FSDP2's own ``unshard()`` leaves tensors whose storage safetensors cannot read.)"""
    from torch import nn

    swapped = []
    for root in _roots(policy):
        for module in root.modules():
            for name, param in list(module._parameters.items()):
                if param is not None and is_sharded(param):
                    whole = nn.Parameter(param.detach().full_tensor().clone(), requires_grad=param.requires_grad)
                    module._parameters[name] = whole
                    swapped.append((module, name, param))
    try:
        yield
    finally:
        for module, name, param in swapped:
            module._parameters[name] = param


def _roots(policy: Any) -> list[Any]:
    roots = [getattr(policy, "model", None), getattr(policy, "value_head", None)]
    return [r for r in roots if r is not None]


def from_main(value: Any, accelerator: Any) -> Any:
    """Rank 0's ``value`` on every rank (e.g. whether to evaluate now: only rank 0 reads
    the metrics log, and a sharded evaluation needs every rank)."""
    if accelerator.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def all_ranks_done(done: bool, device: Any) -> bool:
    """Whether every rank's decoding is done: a rank whose rows finished keeps stepping
    (one all-gather per layer per step) until the others' have too."""
    import torch
    import torch.distributed as dist

    flag = torch.tensor([0.0 if done else 1.0], device=device)
    dist.all_reduce(flag)
    return bool(flag.item() == 0.0)
