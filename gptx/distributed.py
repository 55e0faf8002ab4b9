"""Several processes, one run: DistributedDataParallel set-up and the few collectives the loop needs.

A run becomes distributed when it is started by `torchrun` (RANK/WORLD_SIZE in the environment) or
as the tasks of one SLURM job step (`srun`, directly or through submitit), on one node or several.
Rank 0 alone writes files; every rank builds the same initial weights from the same seeds.

Dropout streams: every rank seeds exactly as a single-process run does (init_seed, then train_seed),
so rank 0's stream is the single-process stream. Rank r > 0 then re-seeds torch with
`rank_seed(seed, r)`, where seed is train_seed (or init_seed when train_seed is null), so the
ranks' dropout masks differ from each other. Bitwise reproduction needs the same world size.
"""

from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the run's processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.size > 1


ALONE = World()  # a process that trains by itself


def is_main_process() -> bool:
    """Whether this process is rank 0 (or alone), as the environment says before the world is joined."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return _slurm_step_tasks() <= 1 or int(os.environ.get("SLURM_PROCID", "0")) == 0


def several_processes() -> bool:
    """Whether this process is one of several training one run (torchrun, or a multi-task SLURM step)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or _slurm_step_tasks() > 1


def _slurm_step_tasks() -> int:
    """Tasks of this SLURM job step. srun (and submitit, through srun) sets it for every task it starts;
    a batch script or an salloc shell has none, so a lone `python -m gptx.train` there stays one process."""
    return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))


def init_world(use_cuda: bool) -> World:
    """Join the process group when launched by torchrun or as a multi-task SLURM step, else a world of 1."""
    if "RANK" not in os.environ and _slurm_step_tasks() > 1:
        _export_slurm_environment()
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_device_index(world.local_rank, torch.cuda.device_count()))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return world


def local_device_index(local_rank: int, visible: int) -> int:
    """The GPU of this process among the `visible` ones: its local rank where each process sees every GPU of
    the node (torchrun, or SLURM without binding), the only one where SLURM binds one GPU per task."""
    if visible == 1:
        return 0
    if 0 <= local_rank < visible:
        return local_rank
    raise RuntimeError(f"local rank {local_rank} but {visible} GPUs visible to this process: start one process per "
                       "GPU (torchrun --nproc-per-node, or SLURM tasks per node = GPUs per node)")


def _export_slurm_environment() -> None:
    """RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT from SLURM's task layout, on any number of nodes.

    Every task of the step is one process of the run (`srun` in a plain sbatch script, or submitit's);
    rank 0 is the step's first task and the rendezvous is on the job's first node, at a port derived
    from the job id (MASTER_PORT in the environment wins).
    """
    from submitit.slurm.slurm import SlurmJobEnvironment

    env = SlurmJobEnvironment()
    os.environ.update({
        "RANK": str(env.global_rank), "WORLD_SIZE": str(_slurm_step_tasks()), "LOCAL_RANK": str(env.local_rank),
        "MASTER_ADDR": env.hostnames[0],
        "MASTER_PORT": os.environ.get("MASTER_PORT") or str(rendezvous_port(int(os.environ["SLURM_JOB_ID"]))),
    })


def rendezvous_port(job_id: int) -> int:
    """The rendezvous port of a SLURM job: 20000-31999, below Linux's ephemeral ports (32768-60999), where
    the system's own outgoing connections would sometimes hold it; jobs 12000 apart share one."""
    return 20000 + job_id % 12000


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of rank r > 0: a stable hash of (seed, rank)."""
    digest = hashlib.sha256(f"{seed}:rank{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def mean_and_any(world: World, value: torch.Tensor, flags: tuple[bool, ...]) -> tuple[float, tuple[bool, ...]]:
    """A scalar tensor's mean over ranks, and each flag true on every rank when it is true on any (a stop
    signal, rank 0's checkpoint clock), in one collective and one host sync: the step's loss carries the
    flags, so a step waits for its GPU once. The tensor is filled on the device (no host-to-device copy)."""
    if not world.distributed:
        return float(value), flags
    t = torch.zeros(1 + len(flags), device=_collective_device())
    t[0] = value.detach()
    for i, flag in enumerate(flags):
        if flag:
            t[1 + i] = 1.0
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    mean, *votes = (t / world.size).tolist()
    return mean, tuple(vote > 0 for vote in votes)


def gather_objects(world: World, obj: object) -> list[object]:
    """Every rank's `obj`, in rank order (a one-item list in a world of one)."""
    if not world.distributed:
        return [obj]
    out: list[object] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(world: World, obj: object) -> object:
    """Rank 0's `obj` on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    """Wait for every rank."""
    if world.distributed:
        dist.barrier()


def shutdown(world: World) -> None:
    """Leave the process group."""
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device() -> torch.device:
    backend = dist.get_backend()
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
