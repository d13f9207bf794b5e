"""The course notes' training script (section 4.1), the baseline that bench_train.py measures against.

The notes' steps in the notes' order: torchvision MNIST with ToTensor(), DataLoader batches of
64 (shuffled for training), Adam at lr 0.001 with CrossEntropyLoss for 2 epochs, the running
loss and accuracy per epoch, the test accuracy, the weights saved as a state_dict, and test
digit 0 shown with its prediction. Only the data folder and the output path are flags, so
that benchmarks and tests can point it elsewhere.
"""

import argparse

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from notes_model import TinyCNN

parser = argparse.ArgumentParser()
parser.add_argument("--data-dir", default="data")
parser.add_argument("--out", default="d4_cnn.pt")
args = parser.parse_args()

device = "cuda" if torch.cuda.is_available() else "cpu"
print("device:", device)

# Data
transform = transforms.ToTensor()
train_data = datasets.MNIST(root=args.data_dir, train=True, download=True, transform=transform)
test_data = datasets.MNIST(root=args.data_dir, train=False, download=True, transform=transform)
train_loader = DataLoader(train_data, batch_size=64, shuffle=True)
test_loader = DataLoader(test_data, batch_size=64, shuffle=False)

# Model, loss, optimiser
model = TinyCNN().to(device)
loss_fn = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=0.001)

# Train
num_epochs = 2
for epoch in range(num_epochs):
    model.train()
    total_loss = 0
    correct = 0
    total = 0
    for X, Y in train_loader:
        X = X.to(device)
        Y = Y.to(device)
        logits = model(X)
        loss = loss_fn(logits, Y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total_loss += loss.item()
        pred = logits.argmax(dim=1)
        correct += (pred == Y).sum().item()
        total += Y.size(0)
    accuracy = correct / total
    print(f"epoch={epoch} loss={total_loss:.4f} accuracy={accuracy:.4f}")

# Test
model.eval()
correct = 0
total = 0
with torch.no_grad():
    for X, Y in test_loader:
        X = X.to(device)
        Y = Y.to(device)
        pred = model(X).argmax(dim=1)
        correct += (pred == Y).sum().item()
        total += Y.size(0)
print(f"test accuracy={correct / total:.4f}")

# Save: the state_dict that the notes' API loads
torch.save(model.state_dict(), args.out)

# Show one prediction
X_sample, Y_sample = test_data[0]
with torch.no_grad():
    pred = model(X_sample.unsqueeze(0).to(device)).argmax(dim=1).item()
plt.imshow(X_sample.squeeze(), cmap="gray")
plt.title(f"actual={Y_sample}, predicted={pred}")
plt.axis("off")
plt.show()
