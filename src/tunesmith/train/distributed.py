"""Several training processes on one or more machines (`accelerate launch`, DDP): every process
trains on its share of each batch; only the main one writes the run folder.

On a CPU machine, `accelerate launch --multi_gpu --num_processes N -m tunesmith.cli train ...`
starts N processes that talk over gloo (accelerate's plain `--cpu` launcher starts only one).
"""

from __future__ import annotations

import torch


def launch_command(processes: int, port: int = 29500) -> list[str]:
    """The command that starts `tunesmith.cli` in `processes` processes: plain Python for one,
    else `accelerate launch` (whose --cpu launcher starts one process; --multi_gpu starts N,
    which talk over gloo when there is no GPU). Append the verb and its arguments."""
    import sys
    from pathlib import Path

    if processes == 1:
        return [sys.executable, "-m", "tunesmith.cli"]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    return [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
            "-m", "tunesmith.cli"]


def processes():
    """accelerate's view of the processes of this run (one, when not launched by accelerate)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def from_main(value):
    """The main process's `value`, in every process (a run folder name with a timestamp)."""
    state = processes()
    if state.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def local_share(indices: list[int], rank: int, world: int) -> tuple[list[int], float]:
    """This process's examples of a micro-batch, and the factor that makes DDP's average of the
    processes' gradients equal the gradient of the whole micro-batch's mean loss.

    Process r gets indices[r::world] and scales its mean loss by world * len(share) / len(indices);
    DDP divides the sum by `world`, leaving sum_r len(share_r) / len(indices) * mean_r: the mean
    over the micro-batch, however unevenly it was cut. A process left without examples runs
    one with factor 0, so that it still joins the gradient exchange."""
    if world == 1:
        return indices, 1.0
    share = indices[rank::world]
    if not share:
        return indices[:1], 0.0
    return share, world * len(share) / len(indices)
