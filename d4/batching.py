"""Micro-batching: run the model once for all the requests that are waiting together.

One forward pass of TinyCNN costs about the same for 1 image as for 16, and handing work
to a thread costs about as much as the forward pass itself. So requests queue their
image here, and one worker takes everything queued, runs one forward pass on a thread
(keeping the event loop free to accept requests and answer /healthz), and hands each
request its row of probabilities. A lone request is never held back to wait for others.
Every torch call happens on that thread: small torch calls on the event loop's thread
would fight the worker for Python's GIL and slow both down.
"""

import asyncio
from array import array

import torch
from torch import nn

from d4.model import IMAGE_SIZE


class BatchingPredictor:
    def __init__(self, model: nn.Module, max_batch: int = 64) -> None:
        self.model = model
        self.max_batch = max_batch
        self.queue: asyncio.Queue[tuple[array, asyncio.Future]] = asyncio.Queue()
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.create_task(self._serve_batches())

    async def stop(self) -> None:
        if self.worker:
            self.worker.cancel()

    async def probabilities(self, pixels: array) -> list[float]:
        """The 10 class probabilities of one image: 784 float32 pixels in 0..1, row by row."""
        answer = asyncio.get_running_loop().create_future()
        await self.queue.put((pixels, answer))
        return await answer

    def _forward(self, images: list[array]) -> list[list[float]]:
        batch = array("f")
        for pixels in images:
            batch.extend(pixels)  # one contiguous buffer, then one tensor without a copy
        with torch.inference_mode():
            inputs = torch.frombuffer(batch, dtype=torch.float32).view(len(images), 1, IMAGE_SIZE, IMAGE_SIZE)
            return self.model(inputs).softmax(dim=1).tolist()

    async def _serve_batches(self) -> None:
        while True:
            waiting = [await self.queue.get()]
            while len(waiting) < self.max_batch and not self.queue.empty():
                waiting.append(self.queue.get_nowait())
            try:
                rows = await asyncio.to_thread(self._forward, [pixels for pixels, _ in waiting])
            except Exception as error:  # answer every waiting request rather than leave it hanging
                for _, answer in waiting:
                    if not answer.done():
                        answer.set_exception(error)
                continue
            for (_, answer), row in zip(waiting, rows, strict=True):
                if not answer.done():  # a client that went away has cancelled its future
                    answer.set_result(row)
