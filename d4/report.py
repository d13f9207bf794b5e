"""What a training run leaves beside its weights: a JSON record, and a report to look at.

The record (d4_cnn.json beside d4_cnn.pt) holds the flags, the numbers of each epoch, the test
accuracy, the device, torch's version, the date and the weights' sha256; the API shows it on
GET /model when it serves those same weights. Nothing needs it to load d4_cnn.pt: the notes'
code and ours read the weights alone. The report (d4_report.png) draws the loss and the
accuracies per epoch, the confusion matrix of the test set, and the test digits the model gets
most confidently wrong. matplotlib is imported only to draw, so the API never loads it.
"""

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from d4.explain import feature_maps
from d4.model import LABELS

REPORT_NAME = "d4_report.png"
WRONG_SHOWN = 10  # most confidently wrong test digits in the report


def record_path(weights: Path) -> Path:
    """d4_cnn.pt -> d4_cnn.json: the record sits beside the weights it describes."""
    return weights.with_suffix(".json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor) -> list[list[int]]:
    """counts[actual][predicted] over the test set."""
    classes = len(LABELS)
    counts = torch.bincount(labels.cpu() * classes + predictions.cpu(), minlength=classes * classes)
    return counts.view(classes, classes).tolist()


@torch.no_grad()
def filters_firing(
    model: torch.nn.Module, test_data: TensorDataset, batch_size: int = 1000
) -> dict[str, list[int]]:
    """For each conv filter, on how many test digits it fires: its map, after ReLU and pooling, is above 0 somewhere.

    A filter that fires on none is dead: its ReLU is zero whatever the digit, so it passes nothing on
    (the /draw page marks such filters from this record).
    """
    model.eval()
    counts = None
    for start in range(0, len(test_data), batch_size):
        maps = feature_maps(model, test_data.tensors[0][start : start + batch_size])
        fired = [
            (block.flatten(2) > 0).any(dim=2).sum(dim=0) for block in maps
        ]  # per filter, over the batch
        counts = (
            fired
            if counts is None
            else [total + more for total, more in zip(counts, fired, strict=True)]
        )
    return {"conv1": counts[0].tolist(), "conv2": counts[1].tolist(), "of": len(test_data)}


def write_record(weights: Path, record: dict[str, Any]) -> Path:
    """Save the record beside the weights, with the weights' sha256 so a reader can tell they belong together."""
    path = record_path(weights)
    path.write_text(
        json.dumps(
            {**record, "weights": {"file": weights.name, "sha256": sha256(weights)}}, indent=2
        )
    )
    return path


def read_record(weights: Path, weights_sha256: str) -> dict[str, Any] | None:
    """The record of these exact weights (by their sha256), or None: no record, unreadable, or of other weights."""
    try:
        record = json.loads(record_path(weights).read_text())
        return record if record["weights"]["sha256"] == weights_sha256 else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def draw_report(
    epochs: list[dict[str, float]],
    confusion: list[list[int]],
    test_data: TensorDataset,
    probabilities: torch.Tensor,
):
    """A 1400x900 figure: loss and accuracies per epoch, the confusion matrix, the most confidently wrong digits."""
    import matplotlib.pyplot as plt  # imported here: the API reads records and never draws

    figure = plt.figure(figsize=(14, 9), dpi=100, layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[2.2, 1])
    loss_axes, accuracy_axes, confusion_axes = top.subplots(1, 3, width_ratios=[1, 1, 1.25])
    numbers = [epoch["epoch"] for epoch in epochs]

    loss_axes.plot(numbers, [epoch["loss"] for epoch in epochs], "o-", color="tab:red")
    loss_axes.set(
        title="training loss (sum over the epoch's batches)", xlabel="epoch", ylabel="loss"
    )
    accuracy_axes.plot(
        numbers, [epoch["train_accuracy"] for epoch in epochs], "o-", label="training images"
    )
    accuracy_axes.plot(
        numbers, [epoch["test_accuracy"] for epoch in epochs], "s-", label="10,000 test images"
    )
    accuracy_axes.set(title="accuracy after each epoch", xlabel="epoch", ylabel="accuracy")
    accuracy_axes.legend(loc="lower right")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xticks(numbers)
        axes.grid(alpha=0.3)

    counts = torch.tensor(confusion)
    confusion_axes.imshow(counts.clamp(max=counts.diagonal().min().item()), cmap="Blues")
    for actual in range(len(LABELS)):
        for predicted in range(len(LABELS)):
            count = counts[actual, predicted].item()
            if count:
                colour = "white" if actual == predicted else "black"
                confusion_axes.text(
                    predicted, actual, count, ha="center", va="center", fontsize=8, color=colour
                )
    confusion_axes.set(
        title="confusion matrix, test set (counts)", xlabel="predicted digit", ylabel="actual digit",
        xticks=range(len(LABELS)), yticks=range(len(LABELS)),
    )  # fmt: skip

    test_pixels, test_labels = test_data.tensors
    predictions = probabilities.argmax(dim=1).cpu()
    labels = test_labels.cpu()
    confidence = probabilities.max(dim=1).values.cpu()
    wrong = (predictions != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)][:WRONG_SHOWN]
    bottom.suptitle("the test digits the model gets most confidently wrong")
    for axes, index in zip(
        bottom.subplots(1, WRONG_SHOWN), [*worst.tolist(), *[None] * WRONG_SHOWN], strict=False
    ):
        axes.axis("off")
        if index is not None:
            axes.imshow(test_pixels[index].squeeze().cpu(), cmap="gray")
            axes.set_title(
                f"actual {labels[index].item()}, said {predictions[index].item()}\n"
                f"({100 * confidence[index].item():.0f}% sure)",
                fontsize=9,
            )
    return figure
