"""The course notes' training loop, kept as the baseline that bench_train.py measures against.

Faithful to the notes: torchvision MNIST + ToTensor(), DataLoader(batch_size=64, shuffle=True),
Adam lr 0.001, 2 epochs, the same TinyCNN, per-epoch loss/accuracy, test accuracy, save, plot.
"""

import argparse

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from notes_model import TinyCNN
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default="data")
parser.add_argument("--out", default="d4_cnn.pt")
args = parser.parse_args()

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
print("device:", device)

transform = transforms.ToTensor()
train_data = datasets.MNIST(root=args.data_dir, train=True, download=True, transform=transform)
test_data = datasets.MNIST(root=args.data_dir, train=False, download=True, transform=transform)
train_loader = DataLoader(train_data, batch_size=64, shuffle=True)
test_loader = DataLoader(test_data, batch_size=1000)


model = TinyCNN().to(device)
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

for epoch in range(2):
    model.train()
    total_loss, correct, total = 0.0, 0, 0
    for images, labels in train_loader:
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        outputs = model(images)
        loss = loss_fn(outputs, labels)
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        correct += (outputs.argmax(1) == labels).sum().item()
        total += labels.size(0)
    print(f"epoch={epoch} loss={total_loss:.4f} accuracy={correct / total:.4f}")

model.eval()
correct, total = 0, 0
with torch.no_grad():
    for images, labels in test_loader:
        images, labels = images.to(device), labels.to(device)
        correct += (model(images).argmax(1) == labels).sum().item()
        total += labels.size(0)
print(f"test accuracy={correct / total:.4f}")

torch.save(model.state_dict(), args.out)

image, label = test_data[0]
with torch.no_grad():
    predicted = model(image.unsqueeze(0).to(device)).argmax(1).item()
plt.imshow(image.squeeze(), cmap="gray")
plt.title(f"actual={label}, predicted={predicted}")
plt.show()
