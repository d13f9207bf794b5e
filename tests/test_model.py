"""The shared model module: architecture, input format and safe weight loading."""

import pytest
import torch
from torch import nn
from torchvision import datasets, transforms

from conftest import FIXTURE_MNIST, old_layout_state_dict
from d4.model import LABELS, TinyCNN, to_model_input
from d4.weights import WeightsError, load_weights

NOTES_KEYS = [
    f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2") for kind in ("weight", "bias")
]


def test_architecture_has_the_notes_layers_and_shapes():
    model = TinyCNN()
    assert list(model.state_dict()) == NOTES_KEYS
    assert (model.conv1.in_channels, model.conv1.out_channels, model.conv1.kernel_size, model.conv1.padding) == (
        1, 8, (3, 3), (1, 1),
    )  # fmt: skip
    assert (model.conv2.in_channels, model.conv2.out_channels, model.conv2.kernel_size, model.conv2.padding) == (
        8, 16, (3, 3), (1, 1),
    )  # fmt: skip
    assert (model.pool.kernel_size, model.pool.stride) == (2, 2)
    assert (model.fc1.in_features, model.fc1.out_features) == (784, 64)
    assert (model.fc2.in_features, model.fc2.out_features) == (64, 10)
    assert sum(parameter.numel() for parameter in model.parameters()) == 52_138
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, len(LABELS))


def test_pooling_before_relu_computes_the_notes_order_exactly():
    torch.manual_seed(0)
    model = TinyCNN()
    notes_order = nn.Sequential(
        model.conv1, nn.ReLU(), model.pool, model.conv2, nn.ReLU(), model.pool
    )
    ours_order = nn.Sequential(
        model.conv1, model.pool, nn.ReLU(), model.conv2, model.pool, nn.ReLU()
    )
    pixels = torch.rand(64, 1, 28, 28)
    ours, theirs = ours_order(pixels), notes_order(pixels)
    assert torch.equal(ours, theirs)
    gradients = []
    for output in (ours, theirs):
        (weight_grad,) = torch.autograd.grad(
            (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum(),
            model.conv1.weight,
        )
        gradients.append(weight_grad)
    torch.testing.assert_close(gradients[0], gradients[1])


def test_model_input_matches_torchvision_to_tensor(fixture_test_digits):
    images, _ = fixture_test_digits
    reference = datasets.MNIST(FIXTURE_MNIST, train=False, transform=transforms.ToTensor())
    pixels = to_model_input(images[:20])
    assert pixels.shape == (20, 1, 28, 28) and pixels.dtype == torch.float32
    for i in range(20):
        assert torch.equal(pixels[i], reference[i][0])


def test_weights_round_trip(tmp_path):
    model = TinyCNN()
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = load_weights(path)
    x = torch.rand(3, 1, 28, 28)
    assert not loaded.training
    assert torch.equal(loaded(x), model.eval()(x))


def test_missing_weights_say_which_file_and_how_to_make_it(tmp_path):
    with pytest.raises(WeightsError, match=r"nothere\.pt not found.*python d4_tiny_cnn_mnist\.py"):
        load_weights(tmp_path / "nothere.pt")


def test_truncated_weights_are_refused(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(TinyCNN().state_dict(), good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="could not be read"):
        load_weights(bad)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(nn.Linear(784, 10).state_dict(), path)
    with pytest.raises(WeightsError, match="does not hold TinyCNN weights"):
        load_weights(path)


class WritesAFile:
    """A pickle that, if unpickled without weights_only, creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_carrying_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"conv1.weight": WritesAFile(marker)}, path)
    with pytest.raises(WeightsError, match="could not be read"):
        load_weights(path)
    assert not marker.exists()


def test_weights_in_the_old_layout_get_one_line_saying_to_retrain(tmp_path):
    path = tmp_path / "old.pt"
    torch.save(old_layout_state_dict(), path)
    with pytest.raises(WeightsError) as error:
        load_weights(path)
    message = str(error.value)
    assert "\n" not in message
    assert "earlier version of this project" in message and "python d4_tiny_cnn_mnist.py" in message
