"""MNIST as whole tensors: torchvision downloads and parses the files; the arrays are kept.

The course notes read MNIST through `datasets.MNIST(..., transform=ToTensor())`, which turns
each image from PIL into a tensor every time it is fetched: most of the notes' training time.
Here `mnist_tensors` runs the same transform once on each whole split, and keeps the
[1, 28, 28] tensors in 0..1 on the training device as a `TensorDataset`; a `DataLoader` with
a `BatchOrder` sampler then fetches a whole batch with one indexing. `test_data[0]` still
gives `(X, Y)` as in the notes.
"""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import Sampler, TensorDataset

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class MnistUnavailable(Exception):
    """MNIST is not in the data folder and could not be downloaded."""


def mnist_dataset(root: str | Path, train: bool, transform=None):
    """torchvision's MNIST split in root/MNIST/raw/, downloaded there first if needed, as the notes load it.

    Raises MnistUnavailable with what to do when it is not there and cannot be downloaded; a failed
    download leaves no empty folders behind.
    """
    from torchvision import datasets  # imported here: the API does not need torchvision

    raw_folder = Path(root) / "MNIST" / "raw"
    # The outermost of data/, data/MNIST/, data/MNIST/raw/ that this call creates, if any.
    created = next(
        (folder for folder in (Path(root), raw_folder.parent, raw_folder) if not folder.exists()),
        None,
    )
    try:
        return datasets.MNIST(root, train=train, download=True, transform=transform)
    except Exception as error:  # no network shows up as URLError, OSError or RuntimeError
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        reason = str(error).strip().splitlines()[-1]  # torchvision's last line holds the cause
        raise MnistUnavailable(
            f"MNIST is not in {raw_folder} and could not be downloaded ({reason}). "
            f"Put the four files {', '.join(MNIST_FILES)} (uncompressed) in {raw_folder}, "
            "or pass --data-dir with a folder that has them in MNIST/raw/."
        ) from None


def load_mnist(root: str | Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (images uint8 (N, 28, 28), labels int64 (N,)) of one split, downloading it if needed."""
    dataset = mnist_dataset(root, train)
    return dataset.data, dataset.targets


def mnist_tensors(
    root: str | Path, train: bool, transform: Callable, device: torch.device
) -> TensorDataset:
    """One MNIST split as a dataset of (X (1, 28, 28) in 0..1, Y), converted once and held on `device`.

    `transform` is the notes' `transforms.ToTensor()`. It is called once, on all N images seen
    as one picture of N channels (28, 28, N): that gives the [N, 28, 28] floats in 0..1 it gives
    one image at a time, in one call instead of N.
    """
    images, labels = load_mnist(root, train)
    pixels = transform(images.numpy().transpose(1, 2, 0)).unsqueeze(1)
    # channels_last: the layout the CPU's convolutions run fastest on (docs/training.md).
    return TensorDataset(pixels.to(device, memory_format=torch.channels_last), labels.to(device))


class BatchOrder(Sampler[torch.Tensor]):
    """Each batch's indices, as one tensor: in a new random order each epoch (shuffle), or in order.

    Given as `sampler` to a DataLoader with `batch_size=None`, the loader asks the dataset for a
    whole batch at once: no per-image fetch and no stacking, the same batches as
    DataLoader(dataset, batch_size, shuffle) would give.

    The shuffled order is one torch.randperm per epoch drawn from `generator`, and nothing else
    is drawn from it, so --seed gives the same batches (and, with --augment, distortions) every run.
    """

    def __init__(
        self, size: int, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.generator = (
            size,
            batch_size,
            shuffle,
            generator,
        )

    def __len__(self) -> int:
        return -(-self.size // self.batch_size)  # ceiling division: the last batch may be smaller

    def __iter__(self) -> Iterator[torch.Tensor]:
        order = (
            torch.randperm(self.size, generator=self.generator)
            if self.shuffle
            else torch.arange(self.size)
        )
        return iter(order.split(self.batch_size))
