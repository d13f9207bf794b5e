"""The one definition of TinyCNN, of the input it expects and of its labels.

TinyCNN is the course notes' class (section 4.1): the same five layers under the same names and
their forward, so its state_dict is interchangeable with theirs: a d4_cnn.pt written here loads
into the notes' code and gives the same answers, and the other way round. The trainer, the API,
the client and the tests all import it from here; only torch is imported, because the API's lean
deploy installs nothing else for the model. What is worked out around the model lives beside
it: d4/weights.py (loading a weights file, with errors in one sentence), d4/explain.py (what
each layer makes of one image, for ?explain) and d4/model_card.py (the layer table).
"""

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 28
DIGIT_BOX = (
    20  # MNIST fitted each digit into 20x20 (aspect kept) and centred that in the 28x28 image
)
LABELS = tuple(str(digit) for digit in range(10))  # class index i is the digit i


class TinyCNN(nn.Module):
    """Two 3x3 conv blocks (1->8->16 channels, each halving 28x28), then a 784->64->10 MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The notes' self.pool(F.relu(self.conv1(x))): pooling first gives the same numbers (ReLU
        # never changes which of four values is largest) and ReLU then sees a quarter of them,
        # so training runs faster (docs/performance.md, "pool before ReLU").
        x = F.relu(self.pool(self.conv1(x)))  # [batch, 8, 14, 14]
        x = F.relu(self.pool(self.conv2(x)))  # [batch, 16, 7, 7]; the same swap as above
        x = x.reshape(x.size(0), -1)  # [batch, 784]
        x = F.relu(self.fc1(x))  # [batch, 64]
        x = self.fc2(x)  # [batch, 10]
        return x


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (N, 28, 28), as MNIST stores them, into (N, 1, 28, 28) floats in 0..1 (ToTensor's scale)."""
    return images.unsqueeze(1).float().div_(255)
