"""The one definition of TinyCNN, of the input it expects and of its labels.

The trainer, the API, the client and the tests all import from here, so a change to
the architecture or to the preprocessing cannot leave one of them behind. Only torch
is imported: the API's lean deploy installs nothing else for the model.

TinyCNN has the course notes' attributes (conv1, conv2, pool, fc1, fc2) and computes the
notes' function of plain 0..1 pixels, so its state_dict is interchangeable with theirs:
a d4_cnn.pt written here loads into the notes' code and gives the same answers, and the
other way round.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 28
DIGIT_BOX = 20  # MNIST fitted each digit into 20x20 (aspect kept) and centred that in the 28x28 image
LABELS = tuple(str(digit) for digit in range(10))  # class index i is the digit i


class TinyCNN(nn.Module):
    """Two 3x3 conv blocks (1->8->16 channels, each halving 28x28), then a 784->64->10 MLP.

    The notes compute each block as conv -> ReLU -> 2x2 max-pool; TinyCNN computes conv -> max-pool
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
        _, features = self.feature_maps(pixels)
        return self.classify(features)

    def feature_maps(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the two conv blocks make of (N, 1, 28, 28) pixels: (N, 8, 14, 14), then (N, 16, 7, 7)."""
        block1 = F.relu(self.pool(self.conv1(pixels)), inplace=True)  # [N, 8, 14, 14]; in place: one copy fewer
        block2 = F.relu(self.pool(self.conv2(block1)), inplace=True)  # [N, 16, 7, 7]
        return block1, block2

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Map the (N, 16, 7, 7) feature maps to (N, 10) logits through the two fully connected layers."""
        return self.fully_connected(features)[1]

    def fully_connected(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two fully connected layers' outputs for (N, 16, 7, 7) feature maps: fc1's (N, 64), fc2's (N, 10)."""
        x = features.flatten(1)  # [N, 784], in the notes' order (channel, row, column) whatever the memory format
        hidden = F.relu(self.fc1(x), inplace=True)  # [N, 64]
        return hidden, self.fc2(hidden)  # [N, 10]


def architecture(model: TinyCNN) -> list[dict]:
    """The layers in the notes' order, each with its output shape for one image and its number of parameters."""

    def layer(name: str, operation: str, shape: list[int], module: nn.Module | None = None) -> dict:
        parameters = sum(p.numel() for p in module.parameters()) if module is not None else 0
        return {"name": name, "operation": operation, "output_shape": shape, "parameters": parameters}

    channels, side = 1, IMAGE_SIZE
    layers = [layer("input", "grey levels in 0..1", [channels, side, side])]
    for name, conv in (("conv1", model.conv1), ("conv2", model.conv2)):
        channels = conv.out_channels
        operation = f"Conv2d {conv.in_channels}->{channels}, 3x3, padding 1, then ReLU"
        layers.append(layer(name, operation, [channels, side, side], conv))
        side //= 2
        layers.append(layer("pool", "MaxPool2d 2x2", [channels, side, side]))
    layers.append(layer("flatten", "reshape to one vector", [channels * side * side]))
    for name, linear, then in (("fc1", model.fc1, ", then ReLU"), ("fc2", model.fc2, ": one logit per digit")):
        operation = f"Linear {linear.in_features}->{linear.out_features}{then}"
        layers.append(layer(name, operation, [linear.out_features], linear))
    return layers


class Explained(NamedTuple):
    """What one image becomes on its way through TinyCNN, and which of its pixels decided the answer."""

    conv1: torch.Tensor  # (8, 14, 14): the first block's feature maps, after pooling and ReLU
    conv2: torch.Tensor  # (16, 7, 7): the second block's, whose 784 values flattened are fc1's input
    fc1: torch.Tensor  # (64,): fc1's outputs, after ReLU
    logits: torch.Tensor  # (10,): fc2's outputs, one per digit, before softmax
    saliency: torch.Tensor  # (28, 28) in 0..1: how much each pixel moved the predicted digit's logit


def explain_image(model: TinyCNN, pixels: torch.Tensor) -> Explained:
    """For one image (1, 1, 28, 28): every step's values on the way to its logits, and its saliency.

    The saliency is |gradient x input| of the predicted digit's logit, scaled so its largest value
    is 1: a pixel counts when the score is sensitive to it and it holds ink, so the map lights up
    the strokes that decided the answer (Simonyan et al. 2014; Shrikumar et al. 2016).
    """
    image = pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        block1, block2 = model.feature_maps(image)
        hidden, logits = model.fully_connected(block2)
        (gradient,) = torch.autograd.grad(logits[0, logits[0].argmax()], image)
    importance = (gradient * image).abs()[0, 0].detach()
    return Explained(
        conv1=block1[0].detach(),
        conv2=block2[0].detach(),
        fc1=hidden[0].detach(),
        logits=logits[0].detach(),
        saliency=importance / importance.max().clamp_min(1e-12),
    )


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (N, 28, 28), as MNIST stores them, into (N, 1, 28, 28) floats in 0..1 (ToTensor's scale)."""
    return images.unsqueeze(1).float().div_(255)


class WeightsError(Exception):
    """The weights file is missing, unreadable or not a TinyCNN state_dict."""


@contextmanager
def weights_errors_explained(path: str | Path) -> Iterator[None]:
    """Around the notes' `model.load_state_dict(torch.load(path, ...))`: anything that fails, as one WeightsError.

    A missing file, one torch cannot read (or that carries code, which weights_only=True refuses),
    one in this project's old layout and one of another network each raise something different
    and long; each becomes one sentence that says what to do.
    """
    how_to_make = "train one with `python d4_tiny_cnn_mnist.py` (it writes d4_cnn.pt)"
    if not Path(path).is_file():
        raise WeightsError(f"weights file {path} not found: {how_to_make}")
    try:
        yield
    except Exception as error:  # torch raises many types for a bad file; each means one of three things here
        message = str(error).strip()
        if "conv.0.weight" in message:
            raise WeightsError(
                f"weights file {path} was saved by an earlier version of this project (layers conv.0 ... fc.3, "
                f"with the input normalised inside the model), which neither this code nor the notes' can use: "
                f"{how_to_make}"
            ) from None
        if "state_dict" in message:  # load_state_dict's own errors: other keys or shapes, or not a dict
            raise WeightsError(f"weights file {path} does not hold TinyCNN weights: {how_to_make}") from None
        reason = message.splitlines()[0] if message else type(error).__name__
        raise WeightsError(f"weights file {path} could not be read ({reason}): {how_to_make}") from None


def load_weights(path: str | Path) -> TinyCNN:
    """A TinyCNN on the CPU, ready for inference, with the weights the trainer (or the notes' code) saved at `path`.

    weights_only=True makes torch refuse pickles that carry code, so an untrusted file
    cannot run anything while it is read.
    """
    model = TinyCNN()
    with weights_errors_explained(path):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
