"""A throwaway project: the sample prompt tables copied to a temporary folder, an emulator,
a test Dagster instance and the real Definitions wired to them."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

from flux_pipeline.dataset.catalog.table import read_catalog
from flux_pipeline.dataset.files.images import sha256_of
from flux_pipeline.definitions import make_definitions
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.lib.partitions import prompt_tables
from flux_pipeline.lib.table_versions import table_version_events
from flux_pipeline.resources import DatasetResource

from .conftest import resource_for

SAMPLE_PROMPTS = Path(__file__).resolve().parent.parent / "data" / "prompts"


@dataclass
class Project:
    root: Path
    emulator: EmulatorServer
    instance: dg.DagsterInstance
    dataset: DatasetResource
    defs: dg.Definitions

    def run(self, partition: str, job_name: str = "build_dataset") -> dg.ExecuteInProcessResult:
        self.instance.add_dynamic_partitions(prompt_tables.name, [partition])
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(partition_key=partition, instance=self.instance, raise_on_error=False)

    def materialize(self, partition: str, *assets: str) -> dg.ExecuteInProcessResult:
        """Only some assets of the graph, as a person selecting them in the UI would."""
        self.instance.add_dynamic_partitions(prompt_tables.name, [partition])
        job = dg.define_asset_job("selection", selection=list(assets))
        defs = dg.Definitions.merge(self.defs, dg.Definitions(jobs=[job]))
        return defs.resolve_job_def("selection").execute_in_process(
            partition_key=partition, instance=self.instance, raise_on_error=False
        )

    def report(self) -> dg.ExecuteInProcessResult:
        """The cost report, as automation runs it after catalog changes."""
        return self.defs.resolve_job_def("report_costs").execute_in_process(instance=self.instance)

    def record_table_versions(self, *partitions: str) -> None:
        """What prompt_table_sensor records for a table it has seen (without its runs)."""
        for partition in partitions:
            version = sha256_of(self.dataset.layout.source(partition))
            for event in table_version_events(partition, version):
                self.instance.report_runless_asset_event(event)

    def catalog(self, partitions: list[str] | None = None):
        return read_catalog(self.dataset.layout.catalog_dir, partitions)

    def with_settings(self, **changes) -> Project:
        dataset = DatasetResource(**{**self.dataset.model_dump(), **changes})
        return Project(
            self.root,
            self.emulator,
            self.instance,
            dataset,
            make_definitions(self.defs.resources["fal"], dataset),
        )


def dataset_for(root: Path) -> DatasetResource:
    # a killed worker's claims expire in 10 s (not 2 minutes), so re-runs in tests take them over soon
    return DatasetResource(data_dir=str(root), lost_request_wait=3, claim_lease_seconds=10)


def make_project(
    root: Path,
    emulator: EmulatorServer,
    instance: dg.DagsterInstance,
    *,
    samples: bool = True,
    **fal_overrides,
) -> Project:
    if samples:
        shutil.copytree(SAMPLE_PROMPTS, root / "prompts")
    dataset = dataset_for(root)
    return Project(
        root, emulator, instance, dataset, make_definitions(resource_for(emulator, **fal_overrides), dataset)
    )


def write_table(path: Path | UPath, rows: int, prefix: str = "p") -> None:
    """A prompt table of `rows` small square prompts with seeds (a local or object-store path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        pq.write_table(
            pa.Table.from_pylist(
                [
                    {
                        "prompt_id": f"{prefix}{i:04d}",
                        "prompt": f"synthetic scene number {i}",
                        "image_size": "square",
                        "seed": i,
                    }
                    for i in range(rows)
                ]
            ),
            stream,
        )
