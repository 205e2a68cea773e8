"""Where a dataset's files live under its root folder (local or an fsspec URL):

prompts/KEY.parquet                 the prompt tables, one per partition
recipes/KEY.yaml                    prompt recipes, one per partition, expanded into a prompt table
outputs/KEY/                        a partition's files (PartitionFiles)
catalog/partition=KEY/data.parquet  the lineage catalog
reports/                            dataset-wide reports
exports/KEY/                        training exports (latest.json names the current version)
ledger/requests.sqlite              the request ledger, unless it lives in PostgreSQL
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from upath import UPath

from .catalog import CATALOG_SCHEMA, conform
from .prompt_table import PromptRow, prompt_row_from_record
from .storage import parquet_batches, parquet_file

PARTITION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
GENERATED_STEP, VARIATIONS_STEP = "generated", "variations"
"""The generation steps' names in a partition's files (outputs/KEY/<step>.parquet)."""
"""A prompt table's file stem becomes its partition key and a folder name, so it must be safe."""


@dataclass(frozen=True)
class PartitionFiles:
    """One partition's working files: the validated prompts, rejects, each generation step's
    catalog rows and failures, and the images."""

    folder: UPath

    @property
    def outputs_dir(self) -> UPath:
        """The folder catalog rows' `file_path` is relative to."""
        return self.folder.parent

    @property
    def prompts(self) -> UPath:
        return self.folder / "prompts.parquet"

    @property
    def recipe_table(self) -> UPath:
        """The prompt table a recipe partition's recipe expands into."""
        return self.folder / "recipe_table.parquet"

    @property
    def rejects(self) -> UPath:
        return self.folder / "rejects.parquet"

    @property
    def images_dir(self) -> UPath:
        return self.folder / "images"

    def step_rows(self, step: str) -> UPath:
        return self.folder / f"{step}.parquet"

    def step_failures(self, step: str) -> UPath:
        return self.folder / f"{step}_failures.parquet"

    def prompt_rows(self) -> Iterator[PromptRow]:
        """The validated rows, read a batch at a time."""
        for batch in parquet_file(self.prompts).iter_batches(batch_size=1024):
            yield from map(prompt_row_from_record, batch.to_pylist())

    def row_columns(self, columns: tuple[str, ...]) -> dict[str, dict]:
        """prompt_id → the row's `columns` of prompts.parquet (null before they existed), for the
        rows with any of them set."""
        prompts = parquet_file(self.prompts)
        present = [name for name in columns if name in prompts.schema_arrow.names]
        table = prompts.read(columns=["prompt_id", *present])
        rows = zip(table["prompt_id"].to_pylist(), table.select(present).to_pylist())
        return {key: values for key, values in rows if any(v is not None for v in values.values())}

    def step_batches(self, step: str) -> Iterator[pa.RecordBatch]:
        """A step's catalog rows, a batch at a time (none before the step has run)."""
        return (conform(batch, CATALOG_SCHEMA) for batch in parquet_batches(self.step_rows(step)))

    def first_images(self, step: str) -> dict[str, dict]:
        """prompt_id → the image_id, file_path and content_hash of its first image in a step."""
        table = self.read_step(step, ["prompt_id", "image_index", "image_id", "file_path", "content_hash"])
        first = table.filter(pc.equal(table["image_index"], 0))
        return dict(
            zip(
                first["prompt_id"].to_pylist(),
                first.select(["image_id", "file_path", "content_hash"]).to_pylist(),
            )
        )

    def read_step(self, step: str, columns: list[str]) -> pa.Table:
        path = self.step_rows(step)
        schema = pa.schema([CATALOG_SCHEMA.field(c) for c in columns])
        return (
            parquet_file(path).read(columns=columns).cast(schema) if path.is_file() else schema.empty_table()
        )


@dataclass(frozen=True)
class DatasetLayout:
    root: UPath

    @property
    def prompts_dir(self) -> UPath:
        return self.root / "prompts"

    @property
    def recipes_dir(self) -> UPath:
        return self.root / "recipes"

    @property
    def outputs_dir(self) -> UPath:
        """Catalog rows' `file_path` is relative to this folder."""
        return self.root / "outputs"

    @property
    def catalog_dir(self) -> UPath:
        return self.root / "catalog"

    @property
    def reports_dir(self) -> UPath:
        return self.root / "reports"

    @property
    def exports_dir(self) -> UPath:
        return self.root / "exports"

    @property
    def default_ledger(self) -> UPath:
        return self.root / "ledger" / "requests.sqlite"

    def table(self, partition: str) -> UPath:
        return self.prompts_dir / f"{partition}.parquet"

    def recipe(self, partition: str) -> UPath:
        return self.recipes_dir / f"{partition}.yaml"

    def source(self, partition: str) -> UPath:
        """What the partition is built from: its prompt table, else its recipe (the table's path
        when it has neither)."""
        table = self.table(partition)
        return self.recipe(partition) if not table.exists() and self.recipe(partition).exists() else table

    def partition_files(self, partition: str) -> PartitionFiles:
        if not PARTITION_KEY.match(partition):
            raise ValueError(f"unsafe partition key {partition!r}")
        return PartitionFiles(self.outputs_dir / partition)
