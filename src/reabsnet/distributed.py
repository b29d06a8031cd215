"""Scale-out under `torchrun` (torch.distributed): the same commands, spread over processes, GPUs and nodes.

Under torchrun (WORLD_SIZE > 1) every rank runs the same stages in the same order; what differs is who computes
and who writes:
- per-image stages (the guardian's DeepFool shards, every attack set) are cut into shards of whole images, each
  owned by one rank (`owns`), computed exactly as one process computes them (the shard is the unit; its seed does
  not depend on the rank), and written atomically; after a `barrier` every rank reads all of them;
- training is data-parallel: each rank takes its slice of every global batch (same global batch size and schedule)
  and the gradients are averaged across ranks before each step (`average_gradients`), as DistributedDataParallel
  does; parameters start identical (`broadcast_parameters`);
- rank 0 alone writes checkpoints, merged attack sets and reports; the other ranks wait for it at a barrier.
Without torchrun every function here is a no-op for a single process and nothing changes.

Several nodes need one shared filesystem for $REABSNET_HOME (every rank reads what the others wrote).
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import typing

import torch
import torch.distributed as dist

# a barrier may wait for a whole stage of another rank (hours on a CPU); a rank that dies ends the run anyway
# (torchrun stops the others), so the timeout only has to outlast the longest stage
_TIMEOUT = datetime.timedelta(hours=12)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def owns(index: int) -> bool:
    """Whether this rank computes shard `index` (round robin)."""
    return index % size() == rank()


def barrier() -> None:
    if active():
        dist.barrier()


def launched() -> bool:
    """Started by torchrun (or any launcher that sets the torch.distributed environment) with several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> torch.device:
    """Join the process group when launched with several ranks (gloo on the CPU, NCCL on CUDA, one process per GPU
    picked by LOCAL_RANK) and return this rank's device; split the CPU threads between the ranks of one node."""
    if not launched() or active():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        # ranks of one node share its cores; oversubscribed threads make every rank many times slower
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    dist.init_process_group(backend, timeout=_TIMEOUT)
    return device


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def leave(code: int) -> typing.NoReturn:
    """End a launched rank's process now with `code`, skipping the interpreter's finalization: after
    destroy_process_group, gloo's threads can still abort a rank whose work is done while the interpreter tears
    down ('terminate called without an active exception', exit -6; 3 of 68 runs of a two-rank test on a loaded
    2-core CPU), and the launcher then reports a finished run as failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def broadcast_parameters(model: torch.nn.Module) -> None:
    """Every rank starts from rank 0's weights."""
    if active():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def average_gradients(model: torch.nn.Module, share: float) -> None:
    """Each parameter's gradient summed over ranks, each rank's weighted by `share`, its fraction of the global
    batch: the gradient of the global batch's mean loss (what DistributedDataParallel's all-reduce computes when
    the shares are equal). A rank with no examples passes zero gradients."""
    if not active():
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads]) * share
    dist.all_reduce(flat)
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def from_main(value):
    """Rank 0's `value` (any picklable object) on every rank."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def batch_slice(idx: torch.Tensor) -> torch.Tensor:
    """This rank's share of a global batch of indices (contiguous, as equal as the batch allows)."""
    if not active():
        return idx
    return idx.tensor_split(size())[rank()]


def total(value: torch.Tensor) -> torch.Tensor:
    """A per-rank sum summed over ranks (e.g. the training loss of an epoch)."""
    if active():
        value = value.clone()
        dist.all_reduce(value)
    return value
