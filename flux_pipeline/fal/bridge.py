"""Sync code drives an async batch. The event loop runs under `asyncio.Runner` on a worker thread;
the caller's thread draws the inputs and takes the outputs. So blocking work on the caller's side
(ledger lookups, file writes) never stalls the loop, and an interrupt, which Python delivers to the
main thread only, never lands inside the loop's callbacks: the caller asks the loop to cancel, then
waits until its clean-up (cancelling fal requests) has run."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import aclosing, suppress
from typing import Any, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")
_END = object()


def drive(produce: Callable[[AsyncIterator[In]], AsyncIterator[Out]], inputs: Iterable[In]) -> Iterator[Out]:
    """Yield what `produce(inputs as an async iterator)` yields. An input is drawn, on the caller's
    thread, each time the loop asks for one; the next output is not produced before the caller has
    taken this one. Closing the iterator early, or any exception in the caller (KeyboardInterrupt
    included), cancels the async side and returns once its clean-up is done."""
    messages: queue.SimpleQueue[tuple[str, Any, asyncio.Future | None]] = queue.SimpleQueue()
    loop_ready = threading.Event()
    handle: dict[str, Any] = {}

    async def draw() -> AsyncIterator[In]:
        while True:
            wanted = asyncio.get_running_loop().create_future()
            messages.put(("input", None, wanted))
            if (item := await wanted) is _END:
                return
            yield item

    async def main() -> None:
        handle["loop"], handle["task"] = asyncio.get_running_loop(), asyncio.current_task()
        loop_ready.set()
        async with aclosing(produce(draw())) as outputs:
            async for item in outputs:
                taken = asyncio.get_running_loop().create_future()
                messages.put(("output", item, taken))
                await taken

    def run() -> None:
        error = None
        try:
            with asyncio.Runner() as runner:
                runner.run(main())
        except BaseException as exc:  # CancelledError too, when the caller stopped early
            error = exc
        finally:
            loop_ready.set()
            messages.put(("done", error, None))

    def reply(future: asyncio.Future, value: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if not future.done():
                future.set_exception(error) if error else future.set_result(value)

        handle["loop"].call_soon_threadsafe(settle)

    worker = threading.Thread(target=run, name="fal-batch-loop", daemon=True)
    worker.start()
    source = iter(inputs)
    done = False
    try:
        while True:
            kind, payload, future = messages.get()
            if kind == "input":
                try:
                    reply(future, next(source, _END))
                except Exception as exc:  # the inputs failed: the batch sees the error
                    reply(future, error=exc)
            elif kind == "output":
                yield payload
                reply(future)
            else:
                done = True
                if payload is not None:
                    raise payload
                return
    finally:
        if not done:
            loop_ready.wait()
            if "loop" in handle:
                with suppress(RuntimeError):  # the loop has already finished
                    handle["loop"].call_soon_threadsafe(handle["task"].cancel)
            worker.join()
