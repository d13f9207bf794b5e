"""Loading a d4_cnn.pt, with whatever goes wrong said in one sentence that says what to do.

The API loads weights the notes' way, `model.load_state_dict(torch.load(path, ...))`, inside
`weights_errors_explained`; the tests and benchmarks call `load_weights`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from d4.model import TinyCNN


class WeightsError(Exception):
    """The weights file is missing, unreadable or not a TinyCNN state_dict."""


@contextmanager
def weights_errors_explained(path: str | Path) -> Iterator[None]:
    """Around the notes' `model.load_state_dict(torch.load(path, ...))`: anything that fails, as one WeightsError.

    A missing file, one torch cannot read (or that carries code, which weights_only=True refuses),
    one in this project's old layout and one of another network each raise something different
    and long; each becomes one sentence that says what to do.
    """
    how_to_make = "train one with `python d4_tiny_cnn_mnist.py` (it writes d4_cnn.pt)"
    if not Path(path).is_file():
        raise WeightsError(f"weights file {path} not found: {how_to_make}")
    try:
        yield
    except (
        Exception
    ) as error:  # torch raises many types for a bad file; each means one of three things here
        message = str(error).strip()
        if "conv.0.weight" in message:
            raise WeightsError(
                f"weights file {path} was saved by an earlier version of this project (layers conv.0 ... fc.3, "
                f"with the input normalised inside the model), which neither this code nor the notes' can use: "
                f"{how_to_make}"
            ) from None
        if (
            "state_dict" in message
        ):  # load_state_dict's own errors: other keys or shapes, or not a dict
            raise WeightsError(
                f"weights file {path} does not hold TinyCNN weights: {how_to_make}"
            ) from None
        reason = message.splitlines()[0] if message else type(error).__name__
        raise WeightsError(
            f"weights file {path} could not be read ({reason}): {how_to_make}"
        ) from None


def load_weights(path: str | Path) -> TinyCNN:
    """A TinyCNN on the CPU, ready for inference, with the weights the trainer (or the notes' code) saved at `path`.

    weights_only=True makes torch refuse pickles that carry code, so an untrusted file
    cannot run anything while it is read.
    """
    model = TinyCNN()
    with weights_errors_explained(path):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
