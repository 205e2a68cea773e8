"""Keeps a run's claims on ledger rows alive while it works: renews them every `interval` seconds
on a daemon thread (its own ledger connection), so a live run's rows are never taken over, and a
dead run's leases simply run out."""

from __future__ import annotations

import threading
from collections.abc import Callable


class LeaseKeeper:
    def __init__(self, renew: Callable[[], None], interval: float):
        self._renew, self._interval = renew, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ledger-lease", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._renew()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
