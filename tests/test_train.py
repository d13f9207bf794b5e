"""The training script: fast loader, reproducibility, the notes' recipe, output, plot, offline data."""

import hashlib
import json
import re
import shlex

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import d4_tiny_cnn_mnist as trainer
from conftest import FIXTURE_MNIST, run_script, script_env
from d4.data import MNIST_FILES, BatchOrder, mnist_tensors
from d4.explain import feature_maps
from d4.model import TinyCNN
from d4.report import confusion_matrix
from d4.weights import load_weights

CPU = torch.device("cpu")
TO_TENSOR = transforms.ToTensor()


def fixture_split(train: bool):
    return mnist_tensors(str(FIXTURE_MNIST), train=train, transform=TO_TENSOR, device=CPU)


def loader(
    data, batch_size: int, shuffle: bool, generator: torch.Generator | None = None
) -> DataLoader:
    """The trainer's loaders: a DataLoader that takes each batch's indices from BatchOrder."""
    return DataLoader(
        data, sampler=BatchOrder(len(data), batch_size, shuffle, generator), batch_size=None
    )


@pytest.mark.parametrize("train", [True, False])
def test_fast_loader_yields_exactly_the_notes_datasets_pixels_and_labels(train):
    """mnist_tensors and BatchOrder stand for the notes' ToTensor() dataset and DataLoader: same (X, Y), every one."""
    data = fixture_split(train=train)
    reference = datasets.MNIST(FIXTURE_MNIST, train=train, transform=transforms.ToTensor())
    assert len(data) == len(reference)
    for i in range(len(reference)):
        X, Y = data[i]
        image, label = reference[i]
        assert X.shape == (1, 28, 28) and torch.equal(X, image)
        assert Y.item() == label
    loaded = list(loader(data, 64, shuffle=False))
    assert [len(Y) for _, Y in loaded] == [64] * (len(data) // 64) + [len(data) % 64]
    assert torch.equal(torch.cat([X for X, _ in loaded]), data.tensors[0])


def test_shuffled_batches_show_every_image_once_per_epoch_in_a_new_order():
    data = fixture_split(train=True)
    batches = loader(data, 64, shuffle=True, generator=torch.Generator().manual_seed(0))
    epochs = [torch.cat([Y for _, Y in batches]) for _ in range(2)]
    for labels in epochs:
        assert sorted(labels.tolist()) == sorted(data.tensors[1].tolist())
    assert not torch.equal(epochs[0], epochs[1])


def train_on_fixture(tmp_path, *flags: str) -> dict[str, torch.Tensor]:
    out = tmp_path / "w.pt"
    trainer.main(
        [
            "--data-dir",
            str(FIXTURE_MNIST),
            "--device",
            "cpu",
            "--no-plot",
            "--out",
            str(out),
            *flags,
        ]
    )
    return torch.load(out, weights_only=True)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path, capsys):
    first = train_on_fixture(tmp_path / "a", "--seed", "3")
    again = train_on_fixture(tmp_path / "b", "--seed", "3")
    other = train_on_fixture(tmp_path / "c", "--seed", "4")
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)
    runs = [
        re.findall(r"epoch=\d+ loss=\S+ accuracy=\S+", block)
        for block in capsys.readouterr().out.split("device:")
    ]
    assert runs[1] == runs[2] != runs[3]


def learning_rates_through_main(monkeypatch, tmp_path, *flags: str) -> list[float]:
    """Run main() on the fixture; return the learning rate of each optimiser step it took."""
    learning_rates = []
    make_scheduler = trainer.make_scheduler

    def recording_scheduler(optimizer, *args, **kwargs):
        optimizer.register_step_pre_hook(
            lambda opt, *_: learning_rates.append(opt.param_groups[0]["lr"])
        )
        return make_scheduler(optimizer, *args, **kwargs)

    monkeypatch.setattr(trainer, "make_scheduler", recording_scheduler)
    train_on_fixture(tmp_path, *flags)
    return learning_rates


def test_the_notes_recipe_through_main_trains_shuffled_batches_of_64_at_a_constant_lr_0_001(
    tmp_path, monkeypatch
):
    """`--batch-size 64 --lr 0.001 --schedule constant` as a user runs it: what main() really feeds the optimiser."""
    seen_batches = []

    class RecordingTinyCNN(TinyCNN):
        def forward(self, pixels):
            if self.training:
                seen_batches.append(pixels.detach().clone())
            return super().forward(pixels)

    monkeypatch.setattr(trainer, "TinyCNN", RecordingTinyCNN)
    learning_rates = learning_rates_through_main(
        monkeypatch, tmp_path, "--batch-size", "64", "--lr", "0.001", "--schedule", "constant"
    )

    assert [len(batch) for batch in seen_batches] == [
        64,
        64,
        64,
        8,
    ] * 2  # 200 fixture images, 2 epochs
    assert learning_rates == [0.001] * 8
    pixels = fixture_split(train=True).tensors[0]
    every_image = sorted(pixels.flatten(1).sum(dim=1).tolist())
    for epoch in (
        seen_batches[:4],
        seen_batches[4:],
    ):  # each epoch shows every image once, in a new order
        assert sorted(torch.cat(epoch).flatten(1).sum(dim=1).tolist()) == pytest.approx(every_image)
    assert not torch.equal(torch.cat(seen_batches[:4]), torch.cat(seen_batches[4:]))


def test_default_schedule_is_one_cycle_peaking_at_lr(tmp_path, monkeypatch):
    args = trainer.parse_args([])
    lrs = learning_rates_through_main(monkeypatch, tmp_path, "--epochs", "1", "--batch-size", "8")
    assert max(lrs) == pytest.approx(args.lr, rel=0.01)
    assert lrs[0] < args.lr / 10 and lrs[-1] < args.lr / 100


def test_help_shows_every_flag_with_its_default():
    result = run_script("d4_tiny_cnn_mnist.py", "--help")
    assert result.returncode == 0
    for flag, default in [("--epochs", "2"), ("--batch-size", "256"), ("--lr", "0.02"), ("--seed", "0"),
                          ("--data-dir", "data"), ("--out", "d4_cnn.pt"), ("--device", "auto")]:  # fmt: skip
        assert re.search(rf"{flag}.*\n?.*\(default: {re.escape(default)}\)", result.stdout), flag
    assert "--no-plot" in result.stdout


def test_script_prints_progress_saves_weights_and_saves_the_plot_without_display(tmp_path):
    out = tmp_path / "model" / "d4_cnn.pt"
    args = ["--data-dir", str(FIXTURE_MNIST), "--out", str(out), "--epochs", "2", "--device", "cpu"]
    result = run_script("d4_tiny_cnn_mnist.py", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "device: cpu"
    assert re.fullmatch(r"epoch=0 loss=\d+\.\d{4} accuracy=[01]\.\d{4}", lines[1])
    assert re.fullmatch(r"epoch=1 loss=\d+\.\d{4} accuracy=[01]\.\d{4}", lines[2])
    assert re.fullmatch(r"test accuracy=[01]\.\d{4}", lines[3])
    assert f"saved weights to {out}" in lines
    load_weights(out)
    assert re.search(r"test digit 0: actual=7, predicted=\d", result.stdout)
    png = out.with_name("d4_example.png")
    assert f"no display: saved the example digit to {png}" in lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Traceback" not in result.stderr
    report = out.with_name("d4_report.png")
    assert f"saved the training report to {report}" in lines
    with Image.open(report) as picture:
        assert picture.width >= 1200 and picture.height >= 800
    record = json.loads(out.with_suffix(".json").read_text())
    assert f"saved the training record to {out.with_suffix('.json')}" in lines
    assert record["weights"] == {
        "file": "d4_cnn.pt",
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    assert [epoch["epoch"] for epoch in record["epochs"]] == [0, 1]
    printed = [
        float(value)
        for value in re.findall(r"^epoch=\d+ loss=(\S+) accuracy=(\S+)$", result.stdout, re.M)[1]
    ]
    assert [round(record["epochs"][1][key], 4) for key in ("loss", "train_accuracy")] == printed
    assert f"test accuracy={record['test_accuracy']:.4f}" in lines
    assert record["epochs"][-1]["test_accuracy"] == record["test_accuracy"]
    assert sum(map(sum, record["confusion_matrix"])) == 300  # every fixture test digit, once
    labels = fixture_split(train=False).tensors[1]
    assert [sum(row) for row in record["confusion_matrix"]] == torch.bincount(
        labels, minlength=10
    ).tolist()
    maps = feature_maps(load_weights(out), fixture_split(train=False).tensors[0])
    conv1, conv2 = ((block.flatten(2) > 0).any(dim=2).sum(dim=0).tolist() for block in maps)
    assert record["filters_firing"] == {
        "conv1": conv1,
        "conv2": conv2,
        "of": 300,
    }  # test digits lighting each filter
    right = record["test_accuracy"] * 300  # a count over 300 fixture digits, without float32 noise
    assert right == pytest.approx(round(right), abs=1e-9)
    assert shlex.split(record["command"])[:2] == ["python", "d4_tiny_cnn_mnist.py"]
    assert (
        record["flags"]["epochs"] == 2
        and record["device"] == "cpu"
        and record["torch"] == torch.__version__
    )
    assert record["command"].startswith("python d4_tiny_cnn_mnist.py --data-dir")


def test_no_plot_skips_the_report_and_the_example_but_keeps_the_record(tmp_path):
    out = tmp_path / "d4_cnn.pt"
    result = run_script(
        "d4_tiny_cnn_mnist.py", "--data-dir", str(FIXTURE_MNIST), "--out", str(out), "--no-plot"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["d4_cnn.json", "d4_cnn.pt"]


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size"])
def test_a_count_below_one_is_refused_in_one_line(flag):
    result = run_script("d4_tiny_cnn_mnist.py", flag, "0")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"argument {flag}: must be 1 or more, not 0")


def test_missing_mnist_without_network_exits_1_naming_files_and_folder_and_leaves_nothing_behind(
    tmp_path,
):
    refused = "http://127.0.0.1:9"  # nothing listens on port 9: every download fails at once
    env = script_env(
        http_proxy=refused, https_proxy=refused, HTTP_PROXY=refused, HTTPS_PROXY=refused
    )
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    data_dir = tmp_path / "data"
    result = run_script(
        "d4_tiny_cnn_mnist.py", "--data-dir", str(data_dir), "--no-plot", env=env, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: MNIST is not in")
    assert str(data_dir / "MNIST" / "raw") in message
    for name in MNIST_FILES:
        assert name in message
    assert not data_dir.exists()  # no empty data/MNIST/raw/ to confuse the next try


def record_training_batches(monkeypatch, tmp_path, *flags: str) -> list[torch.Tensor]:
    """Run main() on the fixture as a user would; return every batch of images the model trained on."""
    seen = []

    class RecordingTinyCNN(TinyCNN):
        def forward(self, pixels):
            if self.training:
                seen.append(pixels.detach().clone())
            return super().forward(pixels)

    monkeypatch.setattr(trainer, "TinyCNN", RecordingTinyCNN)
    train_on_fixture(tmp_path, "--epochs", "1", "--batch-size", "50", *flags)
    return seen


def test_seed_decides_the_order_of_the_training_batches(tmp_path, monkeypatch):
    first = record_training_batches(monkeypatch, tmp_path / "a", "--seed", "3")
    again = record_training_batches(monkeypatch, tmp_path / "b", "--seed", "3")
    other = record_training_batches(monkeypatch, tmp_path / "c", "--seed", "4")
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])


def test_augment_trains_on_distorted_digits_and_without_it_on_the_digits_themselves(
    tmp_path, monkeypatch
):
    images = fixture_split(train=True).tensors[0].flatten(1)
    for flags, distorted in [((), False), (("--augment",), True)]:
        seen = torch.cat(
            record_training_batches(monkeypatch, tmp_path / str(distorted), *flags)
        ).flatten(1)
        # An image is one of the dataset's if some dataset image equals it pixel for pixel.
        from_dataset = (
            (
                torch.cdist(seen, images, compute_mode="donot_use_mm_for_euclid_dist")
                .min(dim=1)
                .values
                < 1e-4
            )
            .float()
            .mean()
            .item()
        )
        assert from_dataset == (0.0 if distorted else 1.0)


def test_confusion_matrix_counts_actual_digits_by_row_and_predictions_by_column():
    counts = confusion_matrix(torch.tensor([1, 1, 3, 3]), torch.tensor([2, 2, 3, 8]))
    assert counts[1][2] == 2 and counts[2][1] == 0
    assert counts[3][3] == 1 and counts[3][8] == 1 and counts[8][3] == 0
    assert sum(map(sum, counts)) == 4
