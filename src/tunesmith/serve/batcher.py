"""Dynamic micro-batching: requests that arrive within a few milliseconds run as one batch.

On a CPU one forward pass over 32 texts costs far less than 32 passes over one text, so
under load the server answers many requests for the price of a few. Inference runs in a
worker thread, off the event loop, so the server keeps accepting requests meanwhile; the
predictor sorts each batch by length (see tunesmith.inference).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np


class Busy(Exception):
    """The queue is full: the request is refused now rather than waiting without bound."""


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    def __init__(self, predict: Callable[[list[str]], np.ndarray], max_size: int, max_wait_ms: float,
                 on_batch: Callable[[int], None] = lambda n: None, max_queue: int = 1024):
        self.predict = predict
        self.max_queue = max_queue
        self.max_size = max_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Pending] | None = None  # made in start(), on the serving loop
        # One inference thread: torch already spreads one batch over every core.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunesmith-infer")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> np.ndarray:
        if self.queue.qsize() >= self.max_queue:
            raise Busy(f"{self.queue.qsize()} requests are waiting")
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Pending(texts, future))
        return await future

    async def run(self, fn, *args):
        """`fn(*args)` on the inference thread, after the batch in progress (text generation,
        which batches its own inputs, and must not run beside a forward pass)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            size = len(batch[0].texts)
            # Whatever queued up while the previous batch ran joins at once: under load the
            # batches grow by themselves, and a lone request does not wait.
            while size < self.max_size and not self.queue.empty():
                batch.append(self.queue.get_nowait())
                size += len(batch[-1].texts)
            deadline = loop.time() + self.max_wait
            while size < self.max_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                size += len(item.texts)
            texts = [t for item in batch for t in item.texts]
            self.on_batch(len(texts))
            try:
                probs = await loop.run_in_executor(self.executor, self.predict, texts)
            except Exception:
                # One request's input may be what failed: run each request alone, so only the
                # one at fault fails and the others that shared its batch are answered.
                await self._one_by_one(batch)
                continue
            start = 0
            for item in batch:
                if not item.future.done():  # a client that went away cancelled its future
                    item.future.set_result(probs[start : start + len(item.texts)])
                start += len(item.texts)

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        for item in batch:
            if item.future.done():
                continue
            try:
                result = await loop.run_in_executor(self.executor, self.predict, item.texts)
            except Exception as exc:  # this request's own failure (the worker stays alive)
                if not item.future.done():
                    item.future.set_exception(exc)
                continue
            if not item.future.done():
                item.future.set_result(result)
