"""MNIST as whole tensors: torchvision downloads and parses the files, we keep the arrays.

Holding each split as one uint8 tensor lets the trainer batch by indexing, with no
per-sample PIL conversion, and lets the client pick one digit without a DataLoader.
"""

from pathlib import Path

import torch

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MnistUnavailable(Exception):
    """MNIST is not in the data folder and could not be downloaded."""


def load_mnist(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) of one split, downloading it if needed."""
    from torchvision import datasets  # imported here: the API does not need torchvision

    try:
        dataset = datasets.MNIST(root, train=train, download=True)
    except Exception as error:  # no network shows up as URLError, OSError or RuntimeError
        raw_folder = Path(root) / "MNIST" / "raw"
        reason = str(error).strip().splitlines()[-1]  # torchvision's last line holds the cause
        raise MnistUnavailable(
            f"MNIST is not in {raw_folder} and could not be downloaded ({reason}). "
            f"Put the four files {', '.join(MNIST_FILES)} (uncompressed) in {raw_folder}, "
            "or pass --data-dir with a folder that has them in MNIST/raw/."
        ) from None
    return dataset.data, dataset.targets
