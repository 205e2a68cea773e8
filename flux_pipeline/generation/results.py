"""A finished request, turned into stored files and catalog rows, or refused when fal's answer is
unusable: no images, fewer or more than asked for, a NSFW flag list that does not match them, or a
seed outside the catalog's int64 (each fails its own row, before any file is written)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from .. import __version__
from ..dataset.costs.pricing import UnitPrice
from ..dataset.files.image_hashes import perceptual_hash_of, to_int64
from ..dataset.files.images import image_id, store_image
from ..dataset.files.layout import PartitionFiles
from ..dataset.plan.requests import Lineage
from ..fal.models import FluxOutput, billed_megapixels
from ..fal.types import Generation, GenerationRequest

INT64 = range(-(2**63), 2**63)


class UnusableResult(ValueError):
    """fal completed (and billed) the request, but its answer cannot be cataloged."""

    def __init__(self, field: str, reason: str):
        self.field = field
        super().__init__(f"{field}: {reason}")


def check_result(request: GenerationRequest, output: FluxOutput) -> None:
    asked, got = request.input.num_images, len(output.images)
    if got != asked:
        raise UnusableResult("images", f"fal returned {got} image(s) for num_images {asked}")
    flags = len(output.has_nsfw_concepts)
    if flags not in (0, got):
        raise UnusableResult("has_nsfw_concepts", f"{flags} flag(s) for {got} image(s)")
    if output.seed not in INT64:
        raise UnusableResult("seed", f"{output.seed} does not fit the catalog's 64-bit seed")


@dataclass(frozen=True)
class RowContext:
    """What every catalog row of a step shares."""

    partition: str
    run_id: str
    backend: str
    files: PartitionFiles


def catalog_rows(outcome: Generation, price: UnitPrice, where: RowContext) -> list[dict]:
    """Store the outcome's files (checked first); one catalog row per image."""
    request, data, output = outcome.request, outcome.request.input, outcome.output
    check_result(request, output)
    lineage = request.origin or Lineage()
    width, height = data.size()
    flags = output.has_nsfw_concepts or [False] * len(outcome.files)
    created = datetime.now(UTC)
    rows = []
    for index, (file, nsfw) in enumerate(zip(outcome.files, flags, strict=True)):
        name = image_id(where.partition, request.prompt_id, request.endpoint, index)
        image = store_image(where.files.images_dir, name, file.data, data.output_format)
        rows.append({
            "image_id": image.path.stem, "partition": where.partition, "prompt_id": request.prompt_id,
            "prompt": data.prompt, "returned_prompt": output.prompt, "endpoint": request.endpoint,
            "request_id": outcome.request_id, "backend": where.backend, "image_index": index,
            "seed": output.seed, "width": width, "height": height, "output_format": data.output_format,
            "content_hash": image.sha256, "file_path": f"{where.partition}/images/{image.path.name}",
            "file_bytes": image.size_bytes, "perceptual_hash": to_int64(perceptual_hash_of(file.data)),
            "nsfw": bool(nsfw),
            "billed_megapixels": billed_megapixels(width, height, price.megapixel_size),
            "megapixel_size": price.megapixel_size, "billing_unit": price.unit,
            "unit_price": price.unit_price, "price_source": price.source,
            "cost_usd": price.cost(price.units(width, height)),
            "parent_image_id": lineage.parent_image_id, "parent_source": lineage.parent_source,
            "latency_s": round(outcome.latency_s, 4), "run_id": where.run_id, "code_version": __version__,
            "created_at": created,
        })  # fmt: skip
    return rows
