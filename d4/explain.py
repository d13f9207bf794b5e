"""What one image becomes in each of TinyCNN's layers, and which of its pixels decided the answer.

The API's `?explain=true` and GET /draw show these values. They are computed with the model's
own layers, called by name in the order of the notes' forward, so they are the numbers the
model computes for its answer.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F

from d4.model import TinyCNN


class Explained(NamedTuple):
    """The values of one image after each step, and its saliency."""

    conv1: torch.Tensor  # (8, 14, 14): the first block's feature maps, after pooling and ReLU
    conv2: (
        torch.Tensor
    )  # (16, 7, 7): the second block's, whose 784 values flattened are fc1's input
    fc1: torch.Tensor  # (64,): fc1's outputs, after ReLU
    logits: torch.Tensor  # (10,): fc2's outputs, one per digit, before softmax
    saliency: (
        torch.Tensor
    )  # (28, 28) in 0..1: how much each pixel moved the predicted digit's logit


def feature_maps(model: TinyCNN, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the two conv blocks make of (N, 1, 28, 28) pixels: (N, 8, 14, 14), then (N, 16, 7, 7).

    The first two lines of TinyCNN.forward, each block's maps after pooling and ReLU.
    """
    block1 = F.relu(model.pool(model.conv1(pixels)))
    block2 = F.relu(model.pool(model.conv2(block1)))
    return block1, block2


def explain_image(model: TinyCNN, pixels: torch.Tensor) -> Explained:
    """For one image (1, 1, 28, 28): every step's values on the way to its logits, and its saliency.

    The saliency is |gradient x input| of the predicted digit's logit, scaled so its largest value
    is 1: a pixel counts when the score is sensitive to it and it holds ink, so the map lights up
    the strokes that decided the answer (Simonyan et al. 2014; Shrikumar et al. 2016).
    """
    image = pixels.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        block1, block2 = feature_maps(model, image)
        hidden = F.relu(model.fc1(block2.reshape(1, -1)))  # [1, 64]
        logits = model.fc2(hidden)  # [1, 10]
        (gradient,) = torch.autograd.grad(logits[0, logits[0].argmax()], image)
    importance = (gradient * image).abs()[0, 0].detach()
    return Explained(
        conv1=block1[0].detach(),
        conv2=block2[0].detach(),
        fc1=hidden[0].detach(),
        logits=logits[0].detach(),
        saliency=importance / importance.max().clamp_min(1e-12),
    )
