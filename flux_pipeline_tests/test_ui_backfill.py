"""A backfill driven the way the Dagster UI drives it: `dagster-webserver` and `dagster-daemon`
on a fresh local instance (the configuration `flux-pipeline run` writes), the partitions added and
the backfill launched through GraphQL, the automation sensor switched on as a person would."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from upath import UPath

from flux_pipeline.dataset.catalog.table import read_catalog
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.instance import write_local_instance

from .conftest import SECRET_KEY, emulator_env, fal_stand_in
from .dataset_fixtures import SAMPLE_PROMPTS
from .local_deployment import LocalDeployment

MAX_CONCURRENCY = 3
CHECKS = {"files_match_hashes", "unique_image_ids", "cost_recomputes", "nsfw_rate"}


@pytest.mark.timeout(420)
def test_a_backfill_from_the_ui_with_one_partition_that_has_no_table(tmp_path):
    data, home = tmp_path / "data", tmp_path / "dagster_home"
    shutil.copytree(SAMPLE_PROMPTS, data / "prompts")
    write_local_instance(home)
    with EmulatorServer(fal_stand_in(latency=0.2)) as fal:
        env = {**emulator_env(fal), "FLUX_DATA_DIR": str(data), "FLUX_MAX_CONCURRENCY": str(MAX_CONCURRENCY)}
        with LocalDeployment(home, env) as ui:
            assert ui.location == "flux_pipeline"
            partitions = ["animals", "ghost", "landscapes"]  # ghost: added in the dialog, no table
            ui.add_partitions("prompt_tables", partitions)
            assets = ui.job_assets("build_dataset")
            assert "cost_report" not in assets
            backfill = ui.launch_job_backfill("build_dataset", assets, partitions)
            assert ui.wait_for_backfill(backfill, timeout=240) == "COMPLETED_FAILED"
            runs = {run.partition: run for run in ui.runs({"dagster/backfill": backfill})}
            assert {key: run.status for key, run in runs.items()} == {
                "animals": "SUCCESS",
                "ghost": "FAILURE",
                "landscapes": "SUCCESS",
            }

            checks = ui.check_partitions("catalog")
            assert set(checks) == CHECKS
            for statuses in checks.values():  # each check's failure shows on the failed partition alone
                assert sorted(statuses["succeededPartitions"]) == ["animals", "landscapes"]
                assert statuses["executionFailedPartitions"] == ["ghost"]
                assert statuses["failedPartitions"] == []

            ui.start_sensor("dataset_automation")  # brings the report up to date; ignores ghost
            after = ui.wait_for_runs(lambda runs: any(run.job_name == "__ASSET_JOB" for run in runs), 150)
            automated = [run for run in after if "dagster/backfill" not in run.tags]
            assert [(run.status, run.partition) for run in automated] == [("SUCCESS", None)]
        logs = ui.log("webserver") + ui.log("daemon")
        billed = fal.emulator.stats()

    catalog = read_catalog(UPath(data / "catalog"))
    assert len(catalog) == billed["images_billed"] == 11, "every image billed once, and cataloged"
    assert billed["peak_in_flight"] <= MAX_CONCURRENCY, "two runs share the fal pool's one slot"
    report = pd.read_parquet(data / "reports" / "cost_by_partition.parquet").set_index("partition")
    assert report.loc["TOTAL", "images"] == 11 and set(report.index) == {"animals", "landscapes", "TOTAL"}
    assert report.loc["TOTAL", "spent_usd"] == pytest.approx(billed["cost_usd"]), (
        "the backfill's spend, to the cent"
    )
    assert "partition 'ghost' has no prompt table" in logs
    assert SECRET_KEY not in logs
