"""What a partition will cost before anything is sent: each request its rows ask for, priced from
its size, image count and unit price, except those fal already has for the same input on the same
backend (stored or submitted: reusing or resuming them is free; billed but unusable: not sent again
unless a run is configured to pay again for them). A Redux row that varies its own
generated image is priced as new unless its parent is stored, since its input is that image."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from upath import UPath

from ...fal.types import GenerationRequest
from ..money.ledger import UNUSABLE, LedgerEntry
from ..plan.prompt_table import PromptRow, ReduxVariation
from ..plan.requests import RowFailure, redux_requests, text_to_image_request
from .pricing import UnitPrice, request_cost


@dataclass
class Estimate:
    cost_usd: float = 0.0
    megapixels: int = 0
    new_requests: int = 0
    paid_requests: int = 0
    """Requests fal already has (reused or resumed for free, or billed unusable and not resent)."""
    remade_requests: int = 0
    """New requests (counted in `new_requests`) whose same input another backend already made,
    e.g. the emulator before a switch to fal: made again, since its images are not this backend's."""
    remade_cost_usd: float = 0.0
    remade_from: set[str] = field(default_factory=set)
    """The backends that made them."""

    def add(self, request: GenerationRequest, price: UnitPrice, elsewhere: str | None = None) -> None:
        cost = request_cost(price, request)
        self.cost_usd = round(self.cost_usd + cost, 6)
        self.megapixels += price.megapixels(*request.input.size(), request.input.num_images)
        self.new_requests += 1
        if elsewhere is not None:
            self.remade_requests += 1
            self.remade_cost_usd = round(self.remade_cost_usd + cost, 6)
            self.remade_from.add(elsewhere)

    def remade_warning(self, backend: str) -> str | None:
        """What a person should read before these requests are made again on `backend`."""
        if not self.remade_requests:
            return None
        return (
            f"{self.remade_requests} request(s) were already made on {', '.join(sorted(self.remade_from))}, "
            f"not on {backend}: they will be made (and billed) again, estimated ${self.remade_cost_usd:.4f}"
        )


def made_by(request: GenerationRequest, entry: LedgerEntry | None) -> str | None:
    """The backend that holds this very request and its result (or billed it unusable), if one does."""
    if entry is None or entry.fingerprint != request.fingerprint:
        return None
    if not (entry.resumable or entry.state == UNUSABLE):
        return None
    return entry.backend or "an unnamed backend"


def already_paid(request: GenerationRequest, entry: LedgerEntry | None, backend: str) -> bool:
    return made_by(request, entry) == backend


def estimate(
    rows: Iterable[PromptRow],
    entry_of: Callable[[GenerationRequest], LedgerEntry | None],
    prices: dict[str, UnitPrice],
    backend: str,
    outputs_dir: UPath,
    prompts_dir: UPath,
) -> Estimate:
    total = Estimate()
    for row in rows:
        text_to_image = text_to_image_request(row)
        requests = [text_to_image]
        if row.redux is not None:
            requests.append(
                _redux_request(
                    row, row.redux, text_to_image, entry_of(text_to_image), backend, outputs_dir, prompts_dir
                )
            )
        for request in requests:
            maker = made_by(request, entry_of(request))
            if maker == backend:
                total.paid_requests += 1
            else:
                total.add(request, prices[request.endpoint], elsewhere=maker)
    return total


def _redux_request(
    row: PromptRow,
    redux: ReduxVariation,
    text_to_image: GenerationRequest,
    parent: LedgerEntry | None,
    backend: str,
    outputs_dir: UPath,
    prompts_dir: UPath,
) -> GenerationRequest:
    """The row's Redux request as it will be sent; while its parent is not made yet, as it is
    planned (it will be new either way)."""
    parents: dict[str, dict] = {}
    if parent is not None and parent.rows and already_paid(text_to_image, parent, backend):
        parents = {row.prompt_id: next(r for r in parent.rows if r["image_index"] == 0)}
    [request] = redux_requests([row], outputs_dir, prompts_dir, lambda: parents)
    return (
        GenerationRequest(row.prompt_id, redux.model, redux.input)
        if isinstance(request, RowFailure)
        else request
    )
