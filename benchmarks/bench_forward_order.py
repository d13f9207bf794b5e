"""Time one training step of TinyCNN with the notes' order in each block, and with TinyCNN's.

    python benchmarks/bench_forward_order.py

The notes compute each conv block as conv -> ReLU -> pool; TinyCNN.forward computes conv ->
pool -> ReLU, the same numbers (ReLU never changes which of four values is largest) with ReLU
on a quarter of the values. This prints the median time of one training step (batch 256,
channels-last, fused Adam, as the trainer runs it) for each order, interleaved so that a slow
spell of the machine hits both alike, and their ratio.
"""

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from d4.model import TinyCNN  # noqa: E402


def notes_order(model: TinyCNN, x: torch.Tensor) -> torch.Tensor:
    """The notes' forward, line for line: ReLU before pooling."""
    x = model.pool(F.relu(model.conv1(x)))
    x = model.pool(F.relu(model.conv2(x)))
    x = x.reshape(x.size(0), -1)
    x = F.relu(model.fc1(x))
    return model.fc2(x)


def step_seconds(forward, model: TinyCNN, optimizer, X: torch.Tensor, Y: torch.Tensor) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(forward(X), Y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps of each order")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TinyCNN().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    X = torch.rand(args.batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    Y = torch.randint(0, 10, (args.batch_size,))
    orders = {
        "notes' (ReLU, then pool)": lambda x: notes_order(model, x),
        "TinyCNN's (pool, then ReLU)": model,
    }
    times: dict[str, list[float]] = {name: [] for name in orders}
    for _ in range(20):  # warm-up: oneDNN picks its kernels on the first calls
        for forward in orders.values():
            step_seconds(forward, model, optimizer, X, Y)
    for _ in range(args.steps):
        for name, forward in orders.items():
            times[name].append(step_seconds(forward, model, optimizer, X, Y))
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    for name, ms in medians.items():
        print(f"{name:28} {ms:6.2f} ms a step")
    notes, ours = medians.values()
    print(f"TinyCNN's order: {notes / ours:.2f}x the notes' speed per training step")


if __name__ == "__main__":
    main()
