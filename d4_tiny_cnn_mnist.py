"""Train TinyCNN on MNIST, report its test accuracy and save the weights to d4_cnn.pt.

    python d4_tiny_cnn_mnist.py                 # 2 epochs, downloads MNIST into data/
    python d4_tiny_cnn_mnist.py --help          # every flag with its default

Beside the weights it writes d4_cnn.json (the run's flags, numbers and the weights' sha256)
and d4_report.png (loss and accuracy per epoch, the confusion matrix, the worst mistakes).

MNIST is held as two tensors on the training device and batched by indexing a shuffled
permutation: no per-sample PIL conversion and no DataLoader workers, which is where the
course notes' loop spent most of its time.
"""

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from d4.augment import distort
from d4.data import MnistUnavailable, load_mnist
from d4.model import TinyCNN, to_model_input
from d4.report import REPORT_NAME, confusion_matrix, draw_report, write_record


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train TinyCNN on MNIST and save its weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--epochs", type=positive, default=2, help="passes over the 60,000 training images")
    parser.add_argument("--batch-size", type=positive, default=256, help="images per optimiser step")
    parser.add_argument("--lr", type=float, default=0.02, help="learning rate (the peak one with --schedule onecycle)")
    parser.add_argument(
        "--schedule",
        choices=["onecycle", "constant"],
        default="onecycle",
        help="learning-rate schedule; the notes' recipe is --batch-size 64 --lr 0.001 --schedule constant",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="distort each training batch like other people's handwriting (slant, wobble, pen width, coarse scans)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the initial weights, shuffling and distortions")
    parser.add_argument("--data-dir", default="data", help="MNIST root: MNIST/raw/ is read or downloaded here")
    parser.add_argument("--out", type=Path, default=Path("d4_cnn.pt"), help="where to save the trained weights")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or a torch device name")
    parser.add_argument("--no-plot", action="store_true", help=f"neither draw {REPORT_NAME} nor show the example digit")
    return parser.parse_args(argv)


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_split(data_dir: str, train: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split as (pixels (N, 1, 28, 28) in 0..1, labels (N,)), converted once, on `device`."""
    images, labels = load_mnist(data_dir, train)
    pixels = to_model_input(images.to(device))
    # channels_last makes oneDNN pick its faster NHWC convolutions on the CPU.
    return pixels.contiguous(memory_format=torch.channels_last), labels.to(device)


def make_optimizer(
    model: nn.Module, lr: float, schedule: str, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam, with the learning rate held at `lr` (the notes) or following a one-cycle schedule."""
    # fused=True runs Adam's update as one kernel per step instead of a dozen small ones.
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=next(model.parameters()).device.type != "mps")
    if schedule == "onecycle":
        # Warm up to `lr`, then anneal towards zero: a large batch trains fast without diverging.
        return optimizer, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    pixels: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    augment: bool,
    description: str,
) -> tuple[float, float]:
    """One pass over the data in shuffled (and, with augment, distorted) batches; returns (sum of losses, accuracy)."""
    model.train()
    order = torch.randperm(len(labels), generator=generator).to(labels.device)
    # Totals stay on the device so a GPU never waits for the host inside the epoch.
    loss_sum = torch.zeros((), device=labels.device)
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in tqdm(range(0, len(order), batch_size), desc=description, leave=False, disable=None):
        batch = order[start : start + batch_size]
        inputs = distort(pixels[batch], generator) if augment else pixels[batch]
        logits = model(inputs)
        loss = F.cross_entropy(logits, labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        correct += (logits.argmax(dim=1) == labels[batch]).sum()
    return loss_sum.item(), correct.item() / len(labels)


@torch.inference_mode()
def class_probabilities(model: nn.Module, pixels: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """(N, 10) probabilities of every image, in batches that bound memory."""
    model.eval()
    batches = [model(pixels[i : i + batch_size]).softmax(dim=1) for i in range(0, len(pixels), batch_size)]
    return torch.cat(batches)


def save_weights(model: nn.Module, path: Path) -> None:
    """Save a CPU state_dict; write a temporary file first so an interrupted save keeps the old one."""
    state_dict = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state_dict, partial)
    partial.replace(path)


def run_record(
    args: argparse.Namespace, argv: list[str], device: torch.device, epochs: list[dict], confusion: list[list[int]]
) -> dict:
    """How these weights were made, for d4_cnn.json: the command, every flag, each epoch's numbers, where, when."""
    return {
        "command": " ".join(["python d4_tiny_cnn_mnist.py", *argv]),
        "flags": {name: str(value) if isinstance(value, Path) else value for name, value in vars(args).items()},
        "epochs": epochs,
        "test_accuracy": epochs[-1]["test_accuracy"],
        "confusion_matrix": confusion,
        "device": str(device),
        "torch": torch.__version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def show_report_and_example(
    report, image: torch.Tensor, actual: int, predicted: int, report_path: Path, example_path: Path
) -> None:
    """Save the report; show it with one test digit titled with its labels, or without a display save that too."""
    import matplotlib.pyplot as plt  # imported here: --no-plot runs never pay for it
    from matplotlib.backends import BackendFilter, backend_registry

    report.savefig(report_path)
    print(f"saved the training report to {report_path}")
    example, axes = plt.subplots(figsize=(3, 3.3))
    axes.imshow(image.squeeze().cpu(), cmap="gray")
    axes.set_title(f"actual={actual}, predicted={predicted}")
    axes.axis("off")
    # Without a display (a server, CI) matplotlib falls back to Agg, where show() does nothing.
    if plt.get_backend().lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        example.savefig(example_path, bbox_inches="tight")
        print(f"no display: saved the example digit to {example_path}")
    else:
        plt.show()
    plt.close("all")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    # Late in the schedule, tiny gradients turn into denormal floats, which x86 CPUs handle
    # many times slower; flushing them to zero changes no printed digit and saves ~10%.
    torch.set_flush_denormal(True)

    # Data
    try:
        train_pixels, train_labels = load_split(args.data_dir, train=True, device=device)
        test_pixels, test_labels = load_split(args.data_dir, train=False, device=device)
    except MnistUnavailable as error:
        sys.exit(f"error: {error}")

    # Model
    model = TinyCNN().to(device, memory_format=torch.channels_last)
    steps_per_epoch = -(-len(train_labels) // args.batch_size)  # ceiling division
    optimizer, scheduler = make_optimizer(model, args.lr, args.schedule, total_steps=args.epochs * steps_per_epoch)

    # Train, and after each epoch measure the test set too (one forward pass; the report plots it)
    generator = torch.Generator().manual_seed(args.seed)
    epochs = []
    try:
        for epoch in range(args.epochs):
            loss_sum, train_accuracy = train_epoch(
                model,
                optimizer,
                scheduler,
                train_pixels,
                train_labels,
                args.batch_size,
                generator,
                args.augment,
                f"epoch {epoch}",
            )
            print(f"epoch={epoch} loss={loss_sum:.4f} accuracy={train_accuracy:.4f}", flush=True)
            test_probabilities = class_probabilities(model, test_pixels)
            test_accuracy = (test_probabilities.argmax(dim=1) == test_labels).float().mean().item()
            epochs.append(dict(epoch=epoch, loss=loss_sum, train_accuracy=train_accuracy, test_accuracy=test_accuracy))
    except KeyboardInterrupt:
        sys.exit(f"interrupted: {args.out} left unchanged")

    # Evaluate: the last epoch's pass over the test set is the trained model's
    predictions = test_probabilities.argmax(dim=1)
    print(f"test accuracy={test_accuracy:.4f}")

    # Save the weights, then the record of how they were made beside them
    save_weights(model, args.out)
    print(f"saved weights to {args.out}")
    confusion = confusion_matrix(test_labels, predictions)
    record = run_record(args, sys.argv[1:] if argv is None else argv, device, epochs, confusion)
    print(f"saved the training record to {write_record(args.out, record)}")

    # Show one test digit with its actual and predicted label, and the report
    actual, predicted = test_labels[0].item(), predictions[0].item()
    print(f"test digit 0: actual={actual}, predicted={predicted}")
    if not args.no_plot:
        report = draw_report(epochs, confusion, test_pixels, test_labels, test_probabilities)
        report_path, example_path = args.out.with_name(REPORT_NAME), args.out.with_name("d4_example.png")
        show_report_and_example(report, test_pixels[0], actual, predicted, report_path, example_path)


if __name__ == "__main__":
    main()
