"""D4 Tiny CNN: train TinyCNN on MNIST, report its test accuracy and save the weights to d4_cnn.pt.

    python d4_tiny_cnn_mnist.py                 # 2 epochs, downloads MNIST into data/
    python d4_tiny_cnn_mnist.py --help          # every flag with its default

The steps are the course notes' (section 4.1), in their order and under their names. A line
that does a step differently says which line of the notes it replaces and why. Beside the
weights it writes d4_cnn.json (the run's flags, numbers and the weights' sha256) and
d4_report.png (loss and accuracy per epoch, the confusion matrix, the worst mistakes).
"""

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from d4.augment import distort
from d4.data import MnistUnavailable, batches, mnist_tensors
from d4.model import TinyCNN
from d4.report import REPORT_NAME, confusion_matrix, draw_report, filters_firing, write_record
from d4.training import make_scheduler, pick_device, run_record, save_weights


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


def train(model, train_loader, loss_fn, optimizer, scheduler, generator, augment, epoch) -> tuple[float, float]:
    """One pass over the training batches, as in the notes; returns (total_loss, accuracy)."""
    model.train()
    # The notes add loss.item() and the correct count each step; kept on the device instead,
    # so a GPU never waits for the host inside the epoch.
    device = next(model.parameters()).device
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    with tqdm(total=len(train_loader), desc=f"epoch {epoch}", leave=False, disable=None) as progress:
        for X, Y in train_loader:
            # The notes' X = X.to(device); Y = Y.to(device): train_data already lives on the device.
            if augment:
                X = distort(X, generator)  # d4/augment.py: slant, wobble, pen width, coarse scans
            logits = model(X)
            loss = loss_fn(logits, Y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()  # not in the notes: the learning rate follows --schedule
            total_loss += loss.detach()
            pred = logits.argmax(dim=1)
            correct += (pred == Y).sum()
            total += Y.size(0)
            progress.update()
    return total_loss.item(), correct.item() / total


def test(model, test_loader) -> tuple[float, torch.Tensor]:
    """The notes' test pass: accuracy on unseen digits; also every digit's probabilities, for the report."""
    model.eval()
    correct = 0
    total = 0
    probabilities = []
    with torch.no_grad():
        for X, Y in test_loader:
            logits = model(X)
            pred = logits.argmax(dim=1)
            correct += (pred == Y).sum().item()
            total += Y.size(0)
            probabilities.append(logits.softmax(dim=1))
    return correct / total, torch.cat(probabilities)


def show_example(X_sample: torch.Tensor, Y_sample: int, pred: int, example_path: Path) -> None:
    """The notes' last step: one test digit titled with its labels; without a display, saved instead of shown."""
    import matplotlib.pyplot as plt  # imported here: --no-plot runs never pay for it
    from matplotlib.backends import BackendFilter, backend_registry

    plt.figure(figsize=(3, 3.3))
    plt.imshow(X_sample.squeeze().cpu(), cmap="gray")
    plt.title(f"actual={Y_sample}, predicted={pred}")
    plt.axis("off")
    # Without a display (a server, CI) matplotlib falls back to Agg, where show() does nothing.
    if plt.get_backend().lower() in backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE):
        plt.savefig(example_path, bbox_inches="tight")
        print(f"no display: saved the example digit to {example_path}")
    else:
        plt.show()  # the example and the training report, each in its window
    plt.close("all")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    # Late in the schedule, tiny gradients turn into denormal floats, which x86 CPUs handle
    # many times slower; flushing them to zero changes no printed digit and saves ~10%.
    torch.set_flush_denormal(True)

    # Data. The notes' transform = transforms.ToTensor() converted each image every time it was
    # fetched; mnist_tensors converts each split once to the same tensors, on the device.
    try:
        train_data = mnist_tensors(args.data_dir, train=True, device=device)
        test_data = mnist_tensors(args.data_dir, train=False, device=device)
    except MnistUnavailable as error:
        sys.exit(f"error: {error}")
    generator = torch.Generator().manual_seed(args.seed)  # --seed decides the shuffle and the distortions
    # The notes' DataLoader(train_data, batch_size=64, shuffle=True) fetches 64 samples one by one
    # and stacks them; batches() fetches each batch with one indexing, in the same shuffled order.
    train_loader = batches(train_data, args.batch_size, shuffle=True, generator=generator)
    # The notes' test_loader has batches of 64; with no gradients to keep, 1000 a batch is faster.
    test_loader = batches(test_data, 1000, shuffle=False)

    # Model, loss function and optimizer
    model = TinyCNN().to(device, memory_format=torch.channels_last)  # channels_last: oneDNN's faster convolutions
    loss_fn = nn.CrossEntropyLoss()
    # fused=True runs Adam's update as one kernel per step instead of a dozen small ones.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=device.type != "mps")
    scheduler = make_scheduler(optimizer, args.lr, args.schedule, total_steps=args.epochs * len(train_loader))

    # Train; after each epoch, test too (the report plots both)
    num_epochs = args.epochs
    epochs = []
    try:
        for epoch in range(num_epochs):
            total_loss, accuracy = train(
                model, train_loader, loss_fn, optimizer, scheduler, generator, args.augment, epoch
            )
            print(f"epoch={epoch} loss={total_loss:.4f} accuracy={accuracy:.4f}", flush=True)
            test_accuracy, test_probabilities = test(model, test_loader)
            epochs.append(dict(epoch=epoch, loss=total_loss, train_accuracy=accuracy, test_accuracy=test_accuracy))
    except KeyboardInterrupt:
        sys.exit(f"interrupted: {args.out} left unchanged")

    # Test: the last epoch's pass over the test set is the trained model's
    print(f"test accuracy={test_accuracy:.4f}")

    # Save the weights (the notes' section 4.2 loads them), then the record of how they were made
    save_weights(model, args.out)
    print(f"saved weights to {args.out}")
    test_labels = test_data.tensors[1]
    confusion = confusion_matrix(test_labels, test_probabilities.argmax(dim=1))
    record = run_record(args, sys.argv[1:] if argv is None else argv, device, epochs, confusion)
    record["filters_firing"] = filters_firing(model, test_data)  # how many test digits light each filter
    print(f"saved the training record to {write_record(args.out, record)}")

    # Show one prediction
    X_sample, Y_sample = test_data[0]
    with torch.no_grad():
        logits = model(X_sample.unsqueeze(0))  # the notes' .to(device): X_sample is already there
    pred = logits.argmax(dim=1).item()
    print(f"test digit 0: actual={Y_sample.item()}, predicted={pred}")
    if not args.no_plot:
        report_path = args.out.with_name(REPORT_NAME)
        draw_report(epochs, confusion, test_data, test_probabilities).savefig(report_path)
        print(f"saved the training report to {report_path}")
        show_example(X_sample, Y_sample.item(), pred, args.out.with_name("d4_example.png"))


if __name__ == "__main__":
    main()
