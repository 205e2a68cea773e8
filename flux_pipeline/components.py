"""`FluxDataset`, a dg Component: a synthetic image dataset made with fal.ai FLUX, added to a team's
own code location in YAML (`dg scaffold defs flux_pipeline.components.FluxDataset birds`). Each
instance yields what this project's code location has (assets, checks, jobs, sensors, schedule and
resources; pipeline/build.py), under its own name: asset keys `birds/…`, group `birds`, jobs,
sensors, schedule and partitions `birds__…`, its own folders and ledger, so two datasets live in one
code location without sharing a key, a partition or a paid request. This project's own defs/ holds
one, with no prefix: its keys are the plain ones, and its settings come from the environment.

Registered for `dg list components` by the entry point `dagster_dg_cli.registry_modules` in
pyproject.toml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from .lib.assets import NightlySchedule
from .lib.names import DatasetNames
from .pipeline.resources import dataset_from_env, fal_from_env


class _Settings(dg.Resolvable, dg.Model):
    """A block of a FluxDataset's YAML."""


class FalSettings(_Settings):
    max_concurrency: int | None = Field(None, ge=1, description="Requests in flight at once (default 8).")


class ScheduleSettings(_Settings):
    enabled: bool = Field(False, description="Start nightly_backfill on (runs against real fal cost money).")
    cron: str = Field("0 2 * * *", description="When the nightly backfill ticks.")
    timezone: str = Field("UTC", description="The cron's timezone.")


class RequestDefaults(_Settings):
    image_size: str | None = Field(None, description="Preset size for rows without one (landscape_4_3).")
    num_images: int | None = Field(None, ge=1, le=4, description="Images per row without its own (1).")
    output_format: Literal["jpeg", "png"] | None = None
    safety_tolerance: str | None = None
    enhance_prompt: bool | None = None


class ExportSettings(_Settings):
    formats: list[Literal["webdataset", "hf_parquet", "hf_paths"]] | None = Field(
        None, description="webdataset and hf_parquet copy each image, hf_paths references it (default: both)."
    )
    keep_versions: int | None = Field(None, ge=1, description="Complete export versions kept (1).")


class FluxDatasetScaffolder(dg.Scaffolder):
    """`dg scaffold defs flux_pipeline.components.FluxDataset NAME`: a defs.yaml with the settings a
    team changes first, and the dataset's empty prompts folder (data/NAME/prompts/)."""

    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        name = request.target_path.name
        attributes = {
            "data_dir": f"data/{name}",
            "budget_usd": 5.0,
            "nightly_budget_usd": 20.0,
            "schedule": {"enabled": False, "cron": "0 2 * * *", "timezone": "UTC"},
            "export": {"formats": ["webdataset", "hf_parquet"], "keep_versions": 1},
        }
        dg.scaffold_component(request, attributes)
        (Path(request.project_root or ".") / "data" / name / "prompts").mkdir(parents=True, exist_ok=True)


@dg.scaffold_with(FluxDatasetScaffolder)
class FluxDataset(dg.Component, dg.Resolvable, dg.Model):
    """A synthetic image dataset made with fal.ai FLUX1.1 pro from prompt tables or recipes.

    One partition per prompt table (`<data_dir>/prompts/KEY.parquet`) or recipe
    (`<data_dir>/recipes/KEY.yaml`); images, a lineage catalog with the cost of every image, a
    review log, training exports and cost reports under `data_dir`. fal is called with the key in
    FAL_KEY; without one, the bundled emulator (synthetic images, nothing paid). Asset keys, jobs,
    sensors and the schedule carry the instance's name (its folder under defs/, or `prefix`)."""

    prefix: str | None = Field(
        None,
        pattern=r"^([a-z][a-z0-9_]{0,39})?$",
        description="Names this dataset's keys and jobs (default: its folder's name; empty: plain names).",
    )
    data_dir: str | None = Field(
        None,
        description="The dataset's root folder, relative to the project (or an fsspec URL). Default: "
        "data/<name>; FLUX_DATA_DIR or data/ for a dataset with no prefix.",
    )
    ledger: str | None = Field(
        None, description="A SQLite file or a postgresql:// URL (default: <data_dir>/ledger/requests.sqlite)."
    )
    budget_usd: float | None = Field(None, ge=0, description="Most a partition may spend; unset: no limit.")
    nightly_budget_usd: float | None = Field(None, ge=0, description="Most one night may spend.")
    defaults: RequestDefaults = Field(default_factory=RequestDefaults, description="Rows' defaults.")
    fal: FalSettings = Field(default_factory=FalSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    executor: Literal["in_process", "celery"] | None = Field(
        None, description="How the dataset's runs execute (default: FLUX_EXECUTOR, else in process)."
    )
    export: ExportSettings = Field(default_factory=ExportSettings)

    def names(self, context: dg.ComponentLoadContext) -> DatasetNames:
        if self.prefix is not None:
            return DatasetNames(self.prefix)
        return DatasetNames(context.path.relative_to(context.defs_module_path).as_posix().replace("/", "_"))

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from .pipeline.build import make_definitions  # the pipeline's modules load with the component

        names = self.names(context)
        settings = {
            "ledger": self.ledger,
            "budget_usd": self.budget_usd,
            "nightly_budget_usd": self.nightly_budget_usd,
            "export_formats": self.export.formats,
            "export_keep_versions": self.export.keep_versions,
            **self.defaults.model_dump(),
        }
        data_dir = self.data_dir or (f"data/{names.prefix}" if names.prefix else None)
        if data_dir is not None:
            settings["data_dir"] = _within(context.project_root, data_dir)
        dataset = dataset_from_env(**{key: value for key, value in settings.items() if value is not None})
        fal = fal_from_env(max_concurrency=self.fal.max_concurrency)
        schedule = self._schedule(names)
        return make_definitions(fal, dataset, names, schedule, executor=self.executor)

    def _schedule(self, names: DatasetNames) -> NightlySchedule:
        """This project's own dataset keeps FLUX_NIGHTLY_CRON and FLUX_NIGHTLY_TIMEZONE."""
        if not names.prefix and self.schedule == ScheduleSettings():
            return NightlySchedule.from_env()
        return NightlySchedule(self.schedule.cron, self.schedule.timezone, self.schedule.enabled)


def _within(project_root: Path, folder: str) -> str:
    """A relative folder is the project's; a URL or an absolute path stays as it is."""
    return folder if "://" in folder or Path(folder).is_absolute() else str(project_root / folder)
