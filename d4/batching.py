"""Micro-batching: run the model once for all the requests that are waiting together.

One forward pass of TinyCNN costs about the same for 1 image as for 16, and handing work
to a thread costs about as much as the forward pass itself. So requests queue their
images here (one from /predict, up to 256 from /predict/batch) as flat buffers of grey
levels, and one inference thread takes everything queued, views it as one batch X
[N, 1, 28, 28], runs the API's `classify` (the notes' forward pass and answer, in
d4_api_mnist.py) on it once, and hands each request its images' answers back on the
request's own event loop. An explanation (feature maps and
saliency, for /predict?explain=true) is worked out on the same thread, after the batch.
The event loop never runs the model, so it stays free to accept requests and answer
/healthz. A lone request is never held back to wait for others. Every torch call
happens on that thread: small torch calls on the event loop's thread would fight the
worker for Python's GIL and slow both down.

Nothing waits without bound: once stop() begins, new work is refused at once with
PredictorStopped, and whatever was queued before is answered first. `healthy()` says
whether the thread is alive and getting through its work, without running the model.
"""

import asyncio
import contextlib
import itertools
import queue
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from torch import nn

from d4.explain import explain_image
from d4.model import IMAGE_SIZE

PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE
# What the API's classify() makes of a batch of images X [N, 1, 28, 28]: one answer per image.
Classify = Callable[[nn.Module, torch.Tensor], list[dict]]


class Request(NamedTuple):
    pixels: array  # 784 float32 grey levels in 0..1 per image, row by row
    loop: asyncio.AbstractEventLoop  # the asking request's event loop, where its answer is settled
    answer: asyncio.Future
    explain: bool  # an explanation of one image instead of probabilities


# A forward pass of at most a few hundred tiny images takes milliseconds; one still running
# after this many seconds means the thread is stuck, and the service is not healthy.
STUCK_AFTER_S = 10.0


class PredictorStopped(RuntimeError):
    """The predictor is shutting down (or its thread has died) and takes no new work."""


class BatchingPredictor:
    def __init__(
        self, model: nn.Module, classify: Classify, max_batch: int = 64, threads: int | None = None
    ) -> None:
        # channels_last: oneDNN's NHWC convolutions and pooling run a batch of 8 images 1.5x and
        # of 64 2.4x faster. The 1-channel input needs no conversion: both layouts are the same.
        self.model = model.to(memory_format=torch.channels_last)
        self.classify = classify
        self.max_batch = max_batch  # images per forward pass, unless one request brings more
        self.threads = threads  # PyTorch's intra-op threads; None leaves torch's default
        self.requests: queue.SimpleQueue[Request | None] = (
            queue.SimpleQueue()
        )  # None asks the thread to stop
        self.thread = threading.Thread(target=self._serve_batches, name="d4-inference", daemon=True)
        self.stopping = False
        self.accepting = threading.Lock()  # no request can slip in behind the stop sentinel
        self.forward_started: float | None = None  # monotonic time of the pass in progress, if any

    def start(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        self.thread.start()

    def stop(self) -> None:
        """Refuse new work, answer what is queued, and end the thread."""
        with self.accepting:
            self.stopping = True
            self.requests.put(None)
        self.thread.join()

    def healthy(self) -> bool:
        """True while the thread is alive, not stopping, and not stuck in one forward pass."""
        started = self.forward_started
        stuck = started is not None and time.monotonic() - started > STUCK_AFTER_S
        return self.thread.is_alive() and not self.stopping and not stuck

    async def answers(self, pixels: array) -> list[dict]:
        """classify's answer for each image in pixels (784 grey levels each), in their order."""
        return await self._ask(pixels, explain=False)

    async def explanation(self, pixels: array) -> dict:
        """For one image's 784 grey levels: its values after each layer, and its saliency (d4.explain)."""
        return await self._ask(pixels, explain=True)

    async def _ask(self, pixels: array, explain: bool):
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        with self.accepting:
            if self.stopping or not self.thread.is_alive():
                raise PredictorStopped("the server is shutting down")
            self.requests.put(Request(pixels, loop, answer, explain))
        return await answer

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Mark the time the model's work began, so that healthy() can tell a stuck thread."""
        self.forward_started = time.monotonic()
        try:
            yield
        finally:
            self.forward_started = None

    def _forward(self, batch: array) -> list[dict]:
        with self._working():
            # The buffer viewed as the batch X [N, 1, 28, 28], without a copy. Every torch call
            # stays on this thread: small ones on the event loop's thread would fight this one
            # for Python's GIL and slow both down (docs/performance.md).
            X = torch.frombuffer(batch, dtype=torch.float32).view(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
            return self.classify(self.model, X)

    def _explain(self, pixels: array) -> dict:
        with self._working():
            image = torch.frombuffer(pixels, dtype=torch.float32).view(1, 1, IMAGE_SIZE, IMAGE_SIZE)
            explained = explain_image(self.model, image)
        return {
            "feature_maps": {"conv1": explained.conv1.tolist(), "conv2": explained.conv2.tolist()},
            "fc1": explained.fc1.tolist(),
            "logits": explained.logits.tolist(),
            "saliency": explained.saliency.tolist(),
        }

    def _serve_batches(self) -> None:
        try:
            self._serve_until_stopped()
        finally:  # stopped, or killed by an error: whatever is still queued is refused, not left waiting
            with self.accepting:
                self.stopping = True
            while not self.requests.empty():
                if (request := self.requests.get()) is not None:
                    _answer(request, PredictorStopped("the server is shutting down"))

    def _serve_until_stopped(self) -> None:
        running = True
        while running:
            first = self.requests.get()
            if first is None:
                return
            waiting, explaining = (
                [],
                [],
            )  # explanations are worked out one image at a time, after the batch
            batch = array("f")  # one contiguous buffer, then one tensor without a copy
            request = first
            while True:
                if request.explain:
                    explaining.append(request)
                else:
                    waiting.append(request)
                    batch.extend(request.pixels)
                if len(batch) >= self.max_batch * PIXELS_PER_IMAGE or self.requests.empty():
                    break
                request = self.requests.get()
                if request is None:
                    running = False  # answer what is queued, then stop
                    break
            try:
                results: list = []
                if waiting:
                    try:
                        rows = self._forward(batch)
                        ends = itertools.accumulate(
                            len(request.pixels) // PIXELS_PER_IMAGE for request in waiting
                        )
                        results = [rows[start:end] for start, end in itertools.pairwise([0, *ends])]
                    except (
                        Exception
                    ) as error:  # answer every waiting request rather than leave it hanging
                        results = [error] * len(waiting)
                for request in explaining:
                    try:
                        results.append(self._explain(request.pixels))
                    except Exception as error:
                        results.append(error)
            except BaseException:  # the thread is being killed: answer, then let it end
                for request in [*waiting, *explaining]:
                    _answer(request, PredictorStopped("the inference thread stopped"))
                raise
            for request, result in zip([*waiting, *explaining], results, strict=True):
                _answer(request, result)


def _answer(request: Request, result: list[dict] | dict | Exception) -> None:
    """Hand one request its result (or error) on its own event loop."""
    with contextlib.suppress(RuntimeError):  # RuntimeError: that request's loop has closed
        request.loop.call_soon_threadsafe(_settle, request.answer, result)


def _settle(answer: asyncio.Future, result: list[dict] | dict | Exception) -> None:
    if answer.done():  # a client that went away has cancelled its future
        return
    if isinstance(result, Exception):
        answer.set_exception(result)
    else:
        answer.set_result(result)
