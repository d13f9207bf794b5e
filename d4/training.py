"""The trainer's parts that go beyond the course notes: device choice, schedule, saving, the run's record.

d4_tiny_cnn_mnist.py reads like the notes and calls these in one line each.
"""

import argparse
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm import tqdm

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def pick_device(requested: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu, as the notes' `device` line does for cuda."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def make_scheduler(
    optimizer: torch.optim.Optimizer, lr: float, schedule: str, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning rate held at `lr` (the notes), or a one-cycle schedule that peaks at `lr`."""
    if schedule == "onecycle":
        # Warm up to `lr`, then anneal towards zero: a large batch trains fast without diverging.
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def progress_bar(steps: int, description: str) -> tqdm:
    """A bar that counts an epoch's steps on a terminal (none in a log) and goes once it is done."""
    return tqdm(total=steps, desc=description, leave=False, disable=None)


def save_weights(model: nn.Module, path: Path) -> None:
    """Save a CPU state_dict through a temporary file, so that an interrupted save keeps the old one."""
    state_dict = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state_dict, partial)
    partial.replace(path)


def run_record(
    args: argparse.Namespace,
    argv: list[str],
    device: torch.device,
    epochs: list[dict],
    confusion: list[list[int]],
) -> dict:
    """How these weights were made, for d4_cnn.json: the command, every flag, each epoch's numbers, where, when."""
    return {
        "command": shlex.join(["python", "d4_tiny_cnn_mnist.py", *argv]),
        "flags": {
            name: str(value) if isinstance(value, Path) else value
            for name, value in vars(args).items()
        },
        "epochs": epochs,
        "test_accuracy": epochs[-1]["test_accuracy"],
        "confusion_matrix": confusion,
        "device": str(device),
        "torch": torch.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def show(example: "Figure", example_path: Path) -> None:
    """The notes' plt.show(): the example digit and the training report, each in its window.

    Without a display (a server, CI) matplotlib falls back to Agg, where show() does nothing:
    the example is saved to `example_path` instead.
    """
    import matplotlib.pyplot as plt  # imported here: the API and --no-plot runs never load it
    from matplotlib.backends import BackendFilter, backend_registry

    if plt.get_backend().lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        example.savefig(example_path, bbox_inches="tight")
        print(f"no display: saved the example digit to {example_path}")
    else:
        plt.show()
    plt.close("all")
