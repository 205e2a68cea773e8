"""`nightly_backfill`: one tick asks for the partitions whose tables are new or changed, within
the nightly budget, on real instances against the emulator."""

from __future__ import annotations

import shutil
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from upath import UPath

from flux_pipeline.dataset.catalog.table import read_catalog
from flux_pipeline.definitions import defs as default_defs
from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.instance import write_local_instance
from flux_pipeline.pipeline.nightly import NIGHT_TAG

from .conftest import SECRET_KEY, emulator_env
from .dataset_fixtures import SAMPLE_PROMPTS, make_project
from .local_deployment import LocalDeployment


@pytest.fixture
def project(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        yield make_project(tmp_path, server, instance)


def tick(project, when="2026-12-05T02:00:00+00:00"):
    """One evaluation, as the daemon runs it at `when` (the context closed after it, as the daemon
    does: left open, it keeps the instance it opened current for later tests)."""
    with dg.build_schedule_context(
        instance=project.instance, scheduled_execution_time=datetime.fromisoformat(when)
    ) as context:
        return project.defs.resolve_schedule_def("nightly_backfill")(context)


def run_night(project, requests: list[dg.RunRequest]) -> None:
    job = project.defs.resolve_job_def("build_dataset")
    for request in requests:
        result = job.execute_in_process(
            partition_key=request.partition_key, tags=request.tags, instance=project.instance
        )
        assert result.success, request.partition_key


def test_a_night_builds_new_and_changed_tables_and_nothing_else(project):
    emulator = project.emulator.emulator
    first = tick(project)
    assert sorted(r.partition_key for r in first) == ["animals", "landscapes"]
    assert {r.tags[NIGHT_TAG] for r in first} == {"2026-12-05"}
    assert len({r.run_key for r in first}) == 2
    assert project.instance.get_dynamic_partitions("prompt_tables") == ["animals", "landscapes"]
    assert emulator.stats()["images_billed"] == 0, "a tick sends nothing"

    run_night(project, first)
    runs = project.instance.get_runs(filters=dg.RunsFilter(tags={NIGHT_TAG: "2026-12-05"}))
    assert len(runs) == 2, "the night's runs are found by their tag"
    assert len(project.catalog()) == emulator.stats()["images_billed"] == 11

    unchanged = tick(project, "2026-12-06T02:00:00+00:00")
    assert isinstance(unchanged, dg.SkipReason) and "nothing to do" in unchanged.skip_message

    pq.write_table(
        pa.table({"prompt_id": ["dune"], "prompt": ["a dune at dusk"]}),
        project.dataset.layout.prompts_dir / "landscapes.parquet",
    )
    changed = tick(project, "2026-12-07T02:00:00+00:00")
    assert [r.partition_key for r in changed] == ["landscapes"]
    run_night(project, changed)
    assert emulator.stats()["images_billed"] == 12, "only the changed table's new row was paid for"
    assert len(project.catalog()) == 7 + 1


def test_an_over_budget_night_sends_nothing_and_says_why(project):
    over = project.with_settings(nightly_budget_usd=0.10)
    skipped = tick(over)
    assert isinstance(skipped, dg.SkipReason)
    message = skipped.skip_message
    assert "$0.4400" in message and "nightly budget $0.1000" in message
    assert "animals $0.2800" in message and "landscapes $0.1600" in message
    assert project.emulator.emulator.stats()["images_billed"] == 0
    assert project.instance.get_dynamic_partitions("prompt_tables") == [], "nothing registered either"

    within = tick(project.with_settings(nightly_budget_usd=0.44))
    assert sorted(r.partition_key for r in within) == ["animals", "landscapes"]


@pytest.mark.timeout(300)
def test_the_daemon_ticks_the_schedule_on_a_real_instance(tmp_path):
    """Started as a person would in the UI, with a cron of every minute: the daemon's tick runs both
    sample partitions, which bill what they catalog."""
    schedule = default_defs.resolve_schedule_def("nightly_backfill")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "UTC")

    data, home = tmp_path / "data", tmp_path / "dagster_home"
    shutil.copytree(SAMPLE_PROMPTS, data / "prompts")
    write_local_instance(home)
    with EmulatorServer(EmulatorConfig(latency=0.05)) as fal:
        env = {
            **emulator_env(fal),
            "FAL_API_URL": fal.url,
            "FLUX_DATA_DIR": str(data),
            "FLUX_NIGHTLY_CRON": "* * * * *",
            "FLUX_NIGHTLY_BUDGET_USD": "1",
        }
        with LocalDeployment(home, env) as ui:
            before = ui.schedule("nightly_backfill")
            assert before["scheduleState"]["status"] == "STOPPED", "off until a person turns it on"
            assert before["cronSchedule"] == "* * * * *" and before["executionTimezone"] == "UTC"
            assert before["futureTicks"]["results"], "the UI shows its next tick"
            ui.start_schedule("nightly_backfill")
            runs = ui.wait_for_runs(lambda runs: len(runs) >= 2, timeout=200)
        logs = ui.log("webserver") + ui.log("daemon")
        billed = fal.emulator.stats()
    assert sorted(run.partition for run in runs) == ["animals", "landscapes"]
    assert {run.status for run in runs} == {"SUCCESS"}
    assert len({run.tags[NIGHT_TAG] for run in runs}) == 1, "one night, one tag"
    assert len(read_catalog(UPath(data / "catalog"))) == billed["images_billed"] == 11
    assert SECRET_KEY not in logs
