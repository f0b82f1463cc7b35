"""Several training processes (torchrun, DistributedDataParallel): who this
process is, its process group, its share of a batch, and the few collectives
the loop needs.

Under torchrun (or any launcher that sets RANK, WORLD_SIZE and LOCAL_RANK)
every process runs the same ``python -m train``. The recipe's batch size is
the GLOBAL batch: each of W processes takes 1/W of every batch, in the order
of one permutation per epoch that all of them draw from the same seed (what
DistributedSampler + set_epoch do), and DDP averages their gradients. Steps
per epoch, the learning-rate schedule and the data order are then those of
one process, whatever W, so a recipe means the same thing on any number of
processes, and a run interrupted on W processes resumes on any other number.
"""
from __future__ import annotations

import gc
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

# A peer that died is noticed by torchrun within seconds and the rest are
# stopped; this only bounds a hang when some other launcher is used.
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this node

    @property
    def main(self) -> bool:
        """Rank 0: the one process that evaluates, prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_env(environ=os.environ) -> World:
    """This process's place, from the variables torchrun sets (one process when absent)."""
    try:
        return World(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)), int(environ.get("LOCAL_RANK", 0)),
                     int(environ.get("LOCAL_WORLD_SIZE", 1)))
    except ValueError as e:
        raise ValueError(f"RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE are not integers ({e})") from None


def check_gpus(processes_on_node: int, device: torch.device) -> None:
    gpus = torch.cuda.device_count()
    if device.type == "cuda" and processes_on_node > gpus:
        raise ValueError(f"{processes_on_node} processes on this node and {gpus} GPU(s): start at most one "
                         "process per GPU (or train on the CPU: --device cpu)")


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process: local rank i trains on cuda:i."""
    if device.type != "cuda" or not world.distributed:
        return device
    # Every rank checks the node's process count, not only its own rank: were only the ranks without a GPU to
    # stop, the others would wait for them in the process group's rendezvous (seen on a one-GPU H200: a hang).
    check_gpus(max(world.local_size, world.local_rank + 1), device)
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[None]:
    """NCCL between GPUs, Gloo between CPU processes; torn down however the block ends.

    Before the group goes, everything that still holds it is released: DDP's wrapper sits in
    reference cycles (its reducer and hooks point back at it), so it outlives the training
    function until the cyclic garbage collector runs, often only while the interpreter shuts
    down. Its reducer then releases the group's last reference and with it Gloo's worker
    threads' pending work, whose Python references are dropped on a worker thread after the
    interpreter has begun to finalise: CPython ends such a thread with pthread_exit, whose
    unwinding through a noexcept C++ destructor calls std::terminate ("terminate called without
    an active exception", exit -6), at random, by how far the collector had got. So the frames of
    an error are cleared (they hold the training function's locals) and the garbage collected
    while the interpreter is whole, then the group is destroyed."""
    if not world.distributed:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=TIMEOUT, **({"device_id": device} if device.type == "cuda" else {}))
    try:
        yield
    except BaseException as e:
        traceback.clear_frames(e.__traceback__)  # the message and the stack stay; the frames' locals go
        raise
    finally:
        gc.collect()
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, world: World, device: torch.device, sync_bn: bool) -> torch.nn.Module:
    """The module the training step calls: DDP around ``model`` (which keeps
    the weights, shared, for evaluation and saving). BatchNorm statistics are
    each process's own unless ``sync_bn`` (CUDA only: SyncBatchNorm has no CPU path)."""
    if sync_bn and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA (SyncBatchNorm has no CPU path); on CPU each process keeps its own "
                         "BatchNorm statistics")
    if not world.distributed:
        return model
    if sync_bn:
        # The converted modules share the parameters and running-statistics buffers of ``model``.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    # broadcast_buffers=False: DDP would copy rank 0's BatchNorm running statistics to the others before
    # every step, one more collective a step for buffers only rank 0 ever uses (it evaluates and saves).
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)


def steps_per_epoch(n: int, global_batch: int, world: World) -> int:
    """Batches of one epoch; a last batch too small to give every process an
    image is dropped (its images come back in the next epoch's order)."""
    if global_batch < world.size:
        raise ValueError(f"--batch-size {global_batch} is the global batch: it cannot be split over "
                         f"{world.size} processes")
    full, rest = divmod(n, global_batch)
    return full + (1 if rest >= world.size else 0)


def my_share(idx: torch.Tensor, world: World) -> tuple[torch.Tensor, float]:
    """This process's part of a global batch, and the factor on its mean loss
    that makes DDP's gradient average the global batch's mean gradient (1.0
    when the batch splits evenly)."""
    if not world.distributed:
        return idx, 1.0
    mine = torch.tensor_split(idx, world.size)[world.rank]
    return mine, len(mine) * world.size / len(idx)


def sum_(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum over processes, in place (a no-op on one)."""
    if world.distributed:
        dist.all_reduce(t)
    return t


def any_(flags: list[bool], world: World, device: torch.device) -> list[bool]:
    """Each flag true on any process: all stop at the same step."""
    if not world.distributed:
        return flags
    return [v > 0 for v in sum_(torch.tensor([float(f) for f in flags], device=device), world).tolist()]


def from_main(obj, world: World):
    """Rank 0's ``obj`` on every process (pickled: small objects only)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, world: World) -> list:
    """Every process's ``obj``, in rank order."""
    if not world.distributed:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def main_first(fn, world: World):
    """``fn()`` on rank 0, then on the others (so that a download happens once
    per machine). An error on any rank is raised on every rank, marked
    ``shared`` (reported once, by rank 0), instead of leaving peers waiting."""
    def attempt():
        try:
            return fn(), None
        except Exception as e:  # noqa: BLE001  any failure is passed on, then re-raised
            return None, e
    result, error = attempt() if world.main else (None, None)
    for turn in ("main", "others"):
        errors = [e for e in gather(error, world) if e is not None]
        if errors:
            errors[0].shared = world.distributed
            raise errors[0]
        if turn == "main" and not world.main:
            result, error = attempt()
    return result


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def launch(nproc: int, argv: list[str]) -> int:
    """``python -m train --nproc N ...``: torchrun's own machinery (standalone
    rendezvous on a free local port) starts N copies of ``python -m train ...``
    on this machine. Returns the exit status of the first process that failed."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0",
                                         "--module", "train", *argv])
    try:
        run(args)
    except ChildFailedError as e:
        _, first = e.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 128 - first.exitcode  # -N: killed by signal N
    except SignalException as e:
        # The workers got the signal too, saved a resumable state and exited (see trainer.stop_requests).
        print(f"launcher: {e.sigval.name}, workers stopped", file=sys.stderr)
        return 128 + e.sigval
    return 0
