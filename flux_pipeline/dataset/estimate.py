"""What a partition will cost before anything is sent: each request its rows ask for, priced from
its size, image count and unit price, except those fal already has for the same input on the same
backend (stored or submitted: reusing or resuming them is free; billed but unusable: not sent again
unless a run is configured to pay again for them). A Redux row that varies its own
generated image is priced as new unless its parent is stored, since its input is that image."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from upath import UPath

from ..fal.types import GenerationRequest
from .ledger import UNUSABLE, LedgerEntry
from .plans import RowFailure, redux_requests, text_to_image_request
from .pricing import UnitPrice, request_cost
from .prompt_table import PromptRow, ReduxVariation


@dataclass
class Estimate:
    cost_usd: float = 0.0
    megapixels: int = 0
    new_requests: int = 0
    paid_requests: int = 0
    """Requests fal already has (reused or resumed for free, or billed unusable and not resent)."""

    def add(self, request: GenerationRequest, price: UnitPrice) -> None:
        self.cost_usd = round(self.cost_usd + request_cost(price, request), 6)
        self.megapixels += price.megapixels(*request.input.size(), request.input.num_images)
        self.new_requests += 1


def already_paid(request: GenerationRequest, entry: LedgerEntry | None, backend: str) -> bool:
    return (
        entry is not None
        and (entry.resumable or entry.state == UNUSABLE)
        and entry.fingerprint == request.fingerprint
        and entry.backend == backend
    )


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
            if already_paid(request, entry_of(request), backend):
                total.paid_requests += 1
            else:
                total.add(request, prices[request.endpoint])
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
