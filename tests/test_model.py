"""The shared model module: architecture, input format and safe weight loading."""

import pytest
import torch
from torch import nn
from torchvision import datasets, transforms

from conftest import FIXTURE_MNIST
from d4.model import LABELS, MNIST_MEAN, MNIST_STD, TinyCNN, WeightsError, load_weights, to_model_input


def test_architecture_is_the_notes_tinycnn():
    model = TinyCNN()
    layers = [type(layer) for layer in [*model.conv, *model.fc]]
    assert layers == [
        nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Conv2d, nn.MaxPool2d, nn.ReLU,
        nn.Flatten, nn.Linear, nn.ReLU, nn.Linear,
    ]  # fmt: skip
    conv1, conv2 = model.conv[0], model.conv[3]
    assert (conv1.in_channels, conv1.out_channels, conv1.kernel_size, conv1.padding) == (1, 8, (3, 3), (1, 1))
    assert (conv2.in_channels, conv2.out_channels, conv2.kernel_size, conv2.padding) == (8, 16, (3, 3), (1, 1))
    assert (model.fc[1].in_features, model.fc[1].out_features) == (784, 64)
    assert (model.fc[3].in_features, model.fc[3].out_features) == (64, 10)
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, len(LABELS))


def test_pooling_before_relu_computes_the_notes_order_exactly():
    torch.manual_seed(0)
    model = TinyCNN()
    conv1, pool1, relu1, conv2, pool2, relu2 = model.conv
    notes_order = nn.Sequential(conv1, relu1, pool1, conv2, relu2, pool2)  # the same layers, as the notes chain them
    pixels = torch.rand(64, 1, 28, 28)
    normalised = (pixels - MNIST_MEAN) / MNIST_STD
    ours, theirs = model.conv(normalised), notes_order(normalised)
    assert torch.equal(ours, theirs)
    gradients = []
    for output in (ours, theirs):
        (weight_grad,) = torch.autograd.grad(
            (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum(), conv1.weight
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
    torch.save({"conv.0.weight": WritesAFile(marker)}, path)
    with pytest.raises(WeightsError, match="could not be read"):
        load_weights(path)
    assert not marker.exists()
