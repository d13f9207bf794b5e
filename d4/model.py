"""The one definition of TinyCNN, of the input it expects and of its labels.

The trainer, the API, the client and the tests all import from here, so a change to
the architecture or to the preprocessing cannot leave one of them behind. Only torch
is imported: the API's lean deploy installs nothing else for the model.

TinyCNN has the course notes' attributes (conv1, conv2, pool, fc1, fc2) and computes the
notes' function of plain 0..1 pixels, so its state_dict is interchangeable with theirs:
a d4_cnn.pt written here loads into the notes' code and gives the same answers, and the
other way round.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 28
LABELS = tuple(str(digit) for digit in range(10))  # class index i is the digit i


class TinyCNN(nn.Module):
    """Two 3x3 conv blocks (1->8->16 channels, each halving 28x28), then a 784->64->10 MLP.

    The notes compute each block as conv -> ReLU -> 2x2 max-pool; we compute conv -> max-pool
    -> ReLU. ReLU never changes which of four values is largest, so the outputs, gradients and
    weights are the same, and ReLU runs on a quarter of the values (training steps ~20% faster).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, len(LABELS))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map (N, 1, 28, 28) pixels in 0..1 to (N, 10) logits."""
        x = F.relu(self.pool(self.conv1(pixels)), inplace=True)  # [N, 8, 14, 14]; in place: one copy fewer
        x = F.relu(self.pool(self.conv2(x)), inplace=True)  # [N, 16, 7, 7]
        x = x.flatten(1)  # [N, 784], in the notes' order (channel, row, column) whatever the memory format
        x = F.relu(self.fc1(x), inplace=True)  # [N, 64]
        return self.fc2(x)  # [N, 10]


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (N, 28, 28), as MNIST stores them, into (N, 1, 28, 28) floats in 0..1 (ToTensor's scale)."""
    return images.unsqueeze(1).float().div_(255)


class WeightsError(Exception):
    """The weights file is missing, unreadable or not a TinyCNN state_dict."""


def load_weights(path: str | Path) -> TinyCNN:
    """Load a state_dict saved by the trainer (or by the notes' code) into a TinyCNN on the CPU, ready for inference.

    weights_only=True makes torch refuse pickles that carry code, so an untrusted file
    cannot run anything while it is read.
    """
    path = Path(path)
    how_to_make = "train one with `python d4_tiny_cnn_mnist.py` (it writes d4_cnn.pt)"
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found: {how_to_make}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file; all mean the same here
        reason = str(error).strip().splitlines()[0]
        raise WeightsError(f"weights file {path} could not be read ({reason}): {how_to_make}") from None
    if isinstance(state_dict, dict) and "conv.0.weight" in state_dict:
        raise WeightsError(
            f"weights file {path} was saved by an earlier version of this project (layers conv.0 ... fc.3, "
            f"with the input normalised inside the model), which neither this code nor the notes' can use: "
            f"{how_to_make}"
        )
    model = TinyCNN()
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError):
        raise WeightsError(f"weights file {path} does not hold TinyCNN weights: {how_to_make}") from None
    return model.eval()
