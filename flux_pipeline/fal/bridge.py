"""Sync code drives an async batch. The event loop runs under `asyncio.Runner` on a worker thread;
the caller's thread draws the inputs and takes the outputs. So blocking work on the caller's side
(ledger lookups, file writes) never stalls the loop, and an interrupt, which Python delivers to the
main thread only, never lands inside the loop's callbacks: the caller asks the loop to cancel, then
waits until its clean-up (cancelling fal requests) has run."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")
END = object()
"""Answers the loop's request for an input once the inputs are exhausted."""


@dataclass(frozen=True)
class Ask:
    """The loop wants the next input, settled into `reply`."""

    reply: asyncio.Future


@dataclass(frozen=True)
class Hand:
    """The loop hands over an output and waits on `reply` until it is taken."""

    item: Any
    reply: asyncio.Future


@dataclass(frozen=True)
class Done:
    """The exchange is over, with the loop's exception, if any."""

    error: BaseException | None


class LoopThread(Generic[In, Out]):
    """The worker thread's side: it runs `produce(inputs)` and talks to the caller's thread
    through `messages` (Ask, Hand, then one Done)."""

    def __init__(self, produce: Callable[[AsyncIterator[In]], AsyncGenerator[Out, None]]):
        self.produce = produce
        self.messages: queue.SimpleQueue[Ask | Hand | Done] = queue.SimpleQueue()
        self._started = threading.Event()
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
            self.messages.put(Done(error))

    async def _main(self) -> None:
        loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        self._started.set()
        async with aclosing(self.produce(self._inputs(loop))) as outputs:
            async for item in outputs:
                taken = loop.create_future()
                self.messages.put(Hand(item, taken))
                await taken

    async def _inputs(self, loop: asyncio.AbstractEventLoop) -> AsyncIterator[In]:
        while True:
            wanted = loop.create_future()
            self.messages.put(Ask(wanted))
            if (item := await wanted) is END:
                return
            yield item

    @staticmethod
    def reply(future: asyncio.Future, value: Any = None, error: Exception | None = None) -> None:
        """Settle a future of the loop's from the caller's thread."""

        def settle() -> None:
            if not future.done():
                future.set_exception(error) if error else future.set_result(value)

        future.get_loop().call_soon_threadsafe(settle)

    def cancel_and_join(self) -> None:
        """Cancel the async side and wait for its clean-up."""
        self._started.wait()
        if (task := self._task) is not None:
            with suppress(RuntimeError):  # the loop has already finished
                task.get_loop().call_soon_threadsafe(task.cancel)
        self._thread.join()


def drive(
    produce: Callable[[AsyncIterator[In]], AsyncGenerator[Out, None]], inputs: Iterable[In]
) -> Iterator[Out]:
    """Yield what `produce(inputs as an async iterator)` yields. An input is drawn, on the caller's
    thread, each time the loop asks for one; the next output is not produced before the caller has
    taken this one. Closing the iterator early, or any exception in the caller (KeyboardInterrupt
    included), cancels the async side and returns once its clean-up is done."""
    loop = LoopThread(produce)
    source = iter(inputs)
    done = False
    try:
        while True:
            message = loop.messages.get()
            if isinstance(message, Ask):
                try:
                    loop.reply(message.reply, next(source, END))
                except Exception as exc:  # the inputs failed: the batch sees the error
                    loop.reply(message.reply, error=exc)
            elif isinstance(message, Hand):
                yield message.item
                loop.reply(message.reply)
            else:
                done = True
                if message.error is not None:
                    raise message.error
                return
    finally:
        if not done:
            loop.cancel_and_join()
