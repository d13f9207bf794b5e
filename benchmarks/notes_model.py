"""TinyCNN as the course notes define it (section 4.1 and 4.2), for the baseline scripts.

The same attributes and forward as the notes: conv -> ReLU -> pool twice, reshape to 784,
fc1 -> ReLU -> fc2, on plain 0..1 pixels. Its state_dict keys are the notes' keys.
"""

import torch.nn as nn
import torch.nn.functional as F


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(16 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))  # [batch, 8, 14, 14]
        x = self.pool(F.relu(self.conv2(x)))  # [batch, 16, 7, 7]
        x = x.reshape(x.size(0), -1)  # [batch, 784]
        x = F.relu(self.fc1(x))  # [batch, 64]
        return self.fc2(x)  # [batch, 10]
