"""What a step may still commit to fal."""

from __future__ import annotations

from dataclasses import dataclass

EPSILON_USD = 1e-9


@dataclass
class Budget:
    """`left`: what the step may commit (None: no limit). Reused rows and resumed requests (paid
    for already) are committed and always admitted; a new request is admitted while its cost
    fits, and once one does not, no new request is."""

    left: float | None
    committed_usd: float = 0.0
    stopped: bool = False
    not_sent: int = 0

    def commit(self, cost: float) -> None:
        self.committed_usd += cost

    def admit(self, cost: float, new: bool) -> bool:
        if new and (
            self.stopped or (self.left is not None and self.committed_usd + cost > self.left + EPSILON_USD)
        ):
            self.stopped = True
            self.not_sent += 1
            return False
        self.commit(cost)
        return True
