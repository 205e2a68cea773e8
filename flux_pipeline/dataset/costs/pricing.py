"""What fal bills for a request, known before it is sent: its endpoint's unit price (from fal's
pricing API, or the configured one when that cannot be read) times its billed units (megapixels,
each image's size rounded up to whole megapixels; or images)."""

from __future__ import annotations

from dataclasses import dataclass

from ...fal.models import LIST_PRICES, REDUX, TEXT_TO_IMAGE, billed_megapixels
from ...fal.types import GenerationRequest

MEGAPIXELS, IMAGES = "megapixels", "image"
BILLING_UNITS = (MEGAPIXELS, IMAGES)
FAL, CONFIGURED = "fal", "configured"


@dataclass(frozen=True)
class UnitPrice:
    unit_price: float
    """USD per unit."""
    unit: str = MEGAPIXELS
    source: str = CONFIGURED
    """Where the price came from: `fal` (its pricing API) or `configured`."""
    megapixel_size: int = 1024 * 1024

    def megapixels(self, width: int, height: int, images: int = 1) -> int:
        """Billed megapixels: each image's size rounded up to whole megapixels."""
        return billed_megapixels(width, height, self.megapixel_size) * images

    def units(self, width: int, height: int, images: int = 1) -> int:
        return images if self.unit == IMAGES else self.megapixels(width, height, images)

    def cost(self, units: float) -> float:
        return round(units * self.unit_price, 6)


def request_cost(price: UnitPrice, request: GenerationRequest) -> float:
    """What fal will bill for the request if it succeeds: known before sending."""
    width, height = request.input.size()
    return price.cost(price.units(width, height, request.input.num_images))


def fallback_price(endpoint: str, configured: UnitPrice) -> UnitPrice:
    """The price used when fal gives none: the configured one for FLUX1.1 [pro] and its Redux,
    fal's documented list price (fal.models.LIST_PRICES) for the other models."""
    if endpoint in (TEXT_TO_IMAGE, REDUX):
        return configured
    price, unit = LIST_PRICES[endpoint]
    return UnitPrice(price, unit, CONFIGURED, configured.megapixel_size)


def price_list(endpoints: list[str], configured: UnitPrice, from_fal: dict[str, tuple[float, str]]) -> dict:
    """endpoint → UnitPrice: fal's (unit price, unit) where it gave one in a unit this project
    bills, else the fallback price."""
    prices = {}
    for endpoint in endpoints:
        price, unit = from_fal.get(endpoint, (None, None))
        if price is not None and unit in BILLING_UNITS:
            prices[endpoint] = UnitPrice(price, unit, FAL, configured.megapixel_size)
        else:
            prices[endpoint] = fallback_price(endpoint, configured)
    return prices
