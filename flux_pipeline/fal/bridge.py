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
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")
END = object()
"""Answers the loop's request for an input once the inputs are exhausted."""


class LoopThread(Generic[In, Out]):
    """The worker thread's side: it runs `produce(inputs)` and talks to the caller's thread
    through `messages`, each `(kind, payload, reply)`: ("input", None, future) asks for the next
    input; ("output", item, future) hands over an output and waits until it is taken; ("done",
    exception or None, None) ends the exchange."""

    def __init__(self, produce: Callable[[AsyncIterator[In]], AsyncIterator[Out]]):
        self.produce = produce
        self.messages: queue.SimpleQueue[tuple[str, Any, asyncio.Future | None]] = queue.SimpleQueue()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="fal-batch-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        error = None
        try:
            with asyncio.Runner() as runner:
                runner.run(self._main())
        except BaseException as exc:  # CancelledError too, when the caller stopped early
            error = exc
        finally:
            self._started.set()
            self.messages.put(("done", error, None))

    async def _main(self) -> None:
        self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._started.set()
        async with aclosing(self.produce(self._inputs())) as outputs:
            async for item in outputs:
                taken = self._loop.create_future()
                self.messages.put(("output", item, taken))
                await taken

    async def _inputs(self) -> AsyncIterator[In]:
        while True:
            wanted = self._loop.create_future()
            self.messages.put(("input", None, wanted))
            if (item := await wanted) is END:
                return
            yield item

    def reply(self, future: asyncio.Future, value: Any = None, error: Exception | None = None) -> None:
        """Settle a future of the loop's from the caller's thread."""

        def settle() -> None:
            if not future.done():
                future.set_exception(error) if error else future.set_result(value)

        self._loop.call_soon_threadsafe(settle)

    def cancel_and_join(self) -> None:
        """Cancel the async side and wait for its clean-up."""
        self._started.wait()
        if self._loop is not None:
            with suppress(RuntimeError):  # the loop has already finished
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join()


def drive(produce: Callable[[AsyncIterator[In]], AsyncIterator[Out]], inputs: Iterable[In]) -> Iterator[Out]:
    """Yield what `produce(inputs as an async iterator)` yields. An input is drawn, on the caller's
    thread, each time the loop asks for one; the next output is not produced before the caller has
    taken this one. Closing the iterator early, or any exception in the caller (KeyboardInterrupt
    included), cancels the async side and returns once its clean-up is done."""
    loop = LoopThread(produce)
    source = iter(inputs)
    done = False
    try:
        while True:
            kind, payload, future = loop.messages.get()
            if kind == "input":
                try:
                    loop.reply(future, next(source, END))
                except Exception as exc:  # the inputs failed: the batch sees the error
                    loop.reply(future, error=exc)
            elif kind == "output":
                yield payload
                loop.reply(future)
            else:
                done = True
                if payload is not None:
                    raise payload
                return
    finally:
        if not done:
            loop.cancel_and_join()
