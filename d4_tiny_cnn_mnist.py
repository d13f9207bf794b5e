"""D4 Tiny CNN: train TinyCNN on MNIST, report its test accuracy and save the weights to d4_cnn.pt.

    python d4_tiny_cnn_mnist.py                 # 2 epochs, downloads MNIST into data/
    python d4_tiny_cnn_mnist.py --help          # every flag with its default

The steps are the course notes' (section 4.1), in their order and under their names. A line
that does a step differently says which line of the notes it replaces and why. Beside the
weights it writes d4_cnn.json (the run's flags, numbers and the weights' sha256) and
d4_report.png (loss and accuracy per epoch, the confusion matrix, the worst mistakes).
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import transforms

from d4.augment import distort
from d4.data import BatchOrder, MnistUnavailable, mnist_tensors
from d4.model import TinyCNN
from d4.report import REPORT_NAME, confusion_matrix, draw_report, filters_firing, write_record
from d4.training import make_scheduler, pick_device, progress_bar, run_record, save_weights, show

NOTES_RECIPE = "--batch-size 64 --lr 0.001 --schedule constant"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train TinyCNN on MNIST and save its weights.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--epochs", type=positive, default=2, help="passes over the 60,000 training images")
    add("--batch-size", type=positive, default=256, help="images per optimiser step")
    add("--lr", type=float, default=0.02, help="learning rate; with onecycle, its peak")
    add(
        "--schedule",
        choices=["onecycle", "constant"],
        default="onecycle",
        help=f"how the learning rate changes; the notes' recipe is {NOTES_RECIPE}",
    )
    add(
        "--augment",
        action="store_true",
        help="distort each batch like other people's writing: slant, wobble, pen, coarse scans",
    )
    add("--seed", type=int, default=0, help="seed for the weights, the shuffle and distortions")
    add("--data-dir", default="data", help="MNIST root: MNIST/raw/ is read or downloaded here")
    add("--out", type=Path, default=Path("d4_cnn.pt"), help="where to save the trained weights")
    add("--device", default="auto", help="auto (cuda, then mps, then cpu), or a device name")
    add("--no-plot", action="store_true", help=f"neither draw {REPORT_NAME} nor show the example")
    return parser.parse_args(argv)


def positive(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {number}")
    return number


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    print(f"device: {device}")
    # Late in training some numbers get so tiny that x86 CPUs slow down on them; rounding
    # them to zero changes no printed digit and saves time (docs/training.md).
    torch.set_flush_denormal(True)

    # Data
    transform = transforms.ToTensor()
    try:
        # The notes' datasets.MNIST(root="data", ..., transform=transform) runs the transform on
        # each image every time it is fetched; mnist_tensors runs it once on all of them and
        # keeps the result on the device (d4/data.py).
        train_data = mnist_tensors(args.data_dir, train=True, transform=transform, device=device)
        test_data = mnist_tensors(args.data_dir, train=False, transform=transform, device=device)
    except MnistUnavailable as error:
        sys.exit(f"error: {error}")
    generator = torch.Generator().manual_seed(args.seed)  # --seed decides shuffle and distortions
    # The notes' DataLoader(train_data, batch_size=64, shuffle=True) fetches a batch's images one
    # by one and stacks them; BatchOrder hands the loader a whole shuffled batch of indices,
    # fetched with one indexing (d4/data.py).
    train_order = BatchOrder(len(train_data), args.batch_size, shuffle=True, generator=generator)
    train_loader = DataLoader(train_data, sampler=train_order, batch_size=None)
    # The notes test 64 images at a time; with no gradients to keep, 1000 at a time is faster.
    test_loader = DataLoader(test_data, sampler=BatchOrder(len(test_data), 1000, shuffle=False),
                             batch_size=None)  # fmt: skip

    # Model, loss function and optimizer. TinyCNN is the notes' class, in d4/model.py.
    # channels_last: the layout the CPU's convolutions run fastest on (docs/training.md).
    model = TinyCNN().to(device, memory_format=torch.channels_last)
    loss_fn = nn.CrossEntropyLoss()
    # fused=True: Adam updates all the weights in one go instead of layer by layer, faster.
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=device.type != "mps")
    steps = args.epochs * len(train_loader)
    scheduler = make_scheduler(optimizer, args.lr, args.schedule, steps)  # not in the notes

    # Train; after each epoch, test too (the notes test once, at the end; the report plots both)
    num_epochs = args.epochs
    history = []
    try:
        for epoch in range(num_epochs):
            model.train()
            # The notes' total_loss = 0 and correct = 0 add up .item()s, which make a GPU wait
            # at every step; these stay on the device and are read once, after the epoch.
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            total = 0
            progress = progress_bar(len(train_loader), f"epoch {epoch}")  # not in the notes
            for X, Y in train_loader:
                # The notes' X = X.to(device), Y = Y.to(device): the data is already there.
                if args.augment:
                    X = distort(X, generator, Y)  # d4/augment.py: other hands, slant, pen, scans
                logits = model(X)
                loss = loss_fn(logits, Y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()  # not in the notes: the learning rate follows --schedule
                total_loss += loss.detach()
                pred = logits.argmax(dim=1)
                correct += (pred == Y).sum()
                total += Y.size(0)
                progress.update()
            progress.close()
            accuracy = correct.item() / total
            print(f"epoch={epoch} loss={total_loss.item():.4f} accuracy={accuracy:.4f}", flush=True)

            model.eval()
            correct = 0
            total = 0
            probabilities = []  # not in the notes: every test digit's, for the report
            with torch.no_grad():
                for X, Y in test_loader:
                    logits = model(X)
                    pred = logits.argmax(dim=1)
                    correct += (pred == Y).sum().item()
                    total += Y.size(0)
                    probabilities.append(logits.softmax(dim=1))
            test_accuracy = correct / total
            history.append(dict(epoch=epoch, loss=total_loss.item(), train_accuracy=accuracy,
                                test_accuracy=test_accuracy))  # fmt: skip
    except KeyboardInterrupt:
        sys.exit(f"interrupted: {args.out} left unchanged")

    # Test: the last epoch's pass over the test set is the trained model's
    print(f"test accuracy={test_accuracy:.4f}")

    # Save the weights (the notes' section 4.2 loads them), then how they were made
    save_weights(model, args.out)  # the notes never call torch.save; d4/training.py does
    print(f"saved weights to {args.out}")
    test_probabilities = torch.cat(probabilities)
    confusion = confusion_matrix(test_data.tensors[1], test_probabilities.argmax(dim=1))
    record = run_record(args, sys.argv[1:] if argv is None else argv, device, history, confusion)
    record["filters_firing"] = filters_firing(model, test_data)  # test digits lighting each filter
    print(f"saved the training record to {write_record(args.out, record)}")

    # Show one prediction
    X_sample, Y_sample = test_data[0]
    with torch.no_grad():
        logits = model(X_sample.unsqueeze(0))  # the notes' .to(device): X_sample is already there
    pred = logits.argmax(dim=1).item()
    if not args.no_plot:
        report_path = args.out.with_name(REPORT_NAME)
        draw_report(history, confusion, test_data, test_probabilities).savefig(report_path)
        print(f"saved the training report to {report_path}")
        import matplotlib.pyplot as plt  # imported here: --no-plot runs never load it

        example = plt.figure(figsize=(3, 3.3))
        plt.imshow(X_sample.squeeze().cpu(), cmap="gray")
        plt.title(f"actual={Y_sample.item()}, predicted={pred}")
        plt.axis("off")
    print(f"test digit 0: actual={Y_sample.item()}, predicted={pred}")
    if not args.no_plot:
        show(example, args.out.with_name("d4_example.png"))  # d4/training.py: or saved, no display


if __name__ == "__main__":
    main()
    # Everything is saved and printed: end now, instead of waiting a second more while Python
    # takes torch and torchvision apart piece by piece (docs/performance.md).
    sys.stdout.flush()
    os._exit(0)
