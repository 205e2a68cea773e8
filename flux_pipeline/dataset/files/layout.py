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
from dataclasses import dataclass

from upath import UPath

PARTITION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""A prompt table's file stem becomes its partition key and a folder name, so it must be safe."""
GENERATED_STEP, VARIATIONS_STEP = "generated", "variations"
"""The generation steps' names in a partition's files (outputs/KEY/<step>.parquet)."""


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
