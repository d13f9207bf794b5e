"""The floor for bench_train.py: the bare training loop of the default run, and nothing else.

The same model (TinyCNN in channels-last memory), batch size, optimiser (fused Adam) and
one-cycle schedule as `python d4_tiny_cnn_mnist.py`, over the same on-device tensors, with no
metrics, no progress bar, no test pass, no saving and no report. It prints one `epoch=N` line
as each epoch ends, so that bench_train.py times its loop the way it times the others.

    python benchmarks/floor_train.py --data-dir ../shared/mnist
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from d4.data import mnist_tensors  # noqa: E402
from d4.model import TinyCNN  # noqa: E402
from d4.training import make_scheduler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument(
        "--out", help="accepted, as bench_train.py passes it to every run; nothing is saved"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    cpu = torch.device("cpu")
    images, labels = mnist_tensors(
        args.data_dir, train=True, transform=transforms.ToTensor(), device=cpu
    ).tensors
    model = TinyCNN().to(memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=True)
    steps_per_epoch = -(-len(labels) // args.batch_size)
    scheduler = make_scheduler(optimizer, args.lr, "onecycle", args.epochs * steps_per_epoch)
    for epoch in range(args.epochs):
        for batch in torch.randperm(len(labels)).split(args.batch_size):
            loss = loss_fn(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        print(f"epoch={epoch}", flush=True)


if __name__ == "__main__":
    main()
