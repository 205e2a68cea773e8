"""Money you can audit and never pay twice: spend versus value, reconciliation with fal's billing
records, concurrent runs of one partition, kills between a submit and its record, odd result
bodies, backends. Every case runs real processes or real Dagster runs against a real HTTP server."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from flux_pipeline.cli import run_config
from flux_pipeline.dataset.money.ledger import RequestKey, RequestLedger
from flux_pipeline.definitions import make_definitions
from flux_pipeline.emulator.app import create_app
from flux_pipeline.emulator.engine import Emulator, EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.http_server import BackgroundServer
from flux_pipeline.lib.partitions import prompt_tables
from flux_pipeline.lib.spend import BACKFILL_TAG, EMULATED_TAG, SPENT_TAG, BackfillSpend, backfill_spend
from flux_pipeline.pipeline.billing_reconciliation import SKIPPED
from flux_pipeline.resources import EmulatedFalResource

from .conftest import ADMIN_KEY, SECRET_KEY, fal_stand_in
from .dataset_fixtures import Project, dataset_for, make_project, write_table

REPO = Path(__file__).resolve().parent.parent


def spent(instance: dg.DagsterInstance, *steps: str) -> float:
    """spent_usd summed over every materialization of the steps, as a person adds up the plot."""
    total = 0.0
    for step in steps:
        records = instance.fetch_materializations(dg.AssetKey(step), limit=1000).records
        total += sum(r.asset_materialization.metadata["spent_usd"].value for r in records)
    return round(total, 6)


def billed_once_and_cataloged(project: Project, server: EmulatorServer, rows: int) -> None:
    billing = server.emulator.billing
    prompts = [server.emulator.requests[b.request_id].payload["prompt"] for b in billing]
    assert len(prompts) == len(set(prompts)), "a prompt was billed twice"
    catalog = project.catalog()
    assert len(catalog) == sum(b.images for b in billing) == rows, "billed == cataloged"


def latest(instance: dg.DagsterInstance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


# -- reconciliation with fal's billing records ------------------------------------------------------


def test_a_discount_shows_in_the_reconciliation_as_billed_below_list(tmp_path):
    config = fal_stand_in(latency=0.02, admin_keys=(ADMIN_KEY,), percent_discount=10)
    with EmulatorServer(config) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, admin_key=ADMIN_KEY)
        result = project.run("animals")
        assert result.success
        metadata = latest(instance, "billing_reconciliation")
        assert metadata["matched"] == 6 and metadata["billed_not_cataloged"] == 0
        assert metadata["list_cost_usd"] == pytest.approx(0.28)
        assert metadata["fal_billed_usd"] == pytest.approx(0.252) and metadata[
            "discount_usd"
        ] == pytest.approx(0.028)
        checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert checks["no_billed_image_lost"] and checks["billed_units_match"]
        report = pd.read_parquet(project.dataset.layout.reports_dir / "reconciliation")
        assert set(report["status"]) == {"matched"} and set(report["fal_percent_discount"]) == {10}


def test_an_image_billed_then_lost_is_reported_billed_not_cataloged(tmp_path):
    faults = FaultConfig(lost_image=0.4, seed=3)
    config = fal_stand_in(latency=0.02, admin_keys=(ADMIN_KEY,), faults=faults)
    with EmulatorServer(config) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False, admin_key=ADMIN_KEY)
        write_table(project.dataset.layout.prompts_dir / "lossy.parquet", 12)
        result = project.run("lossy")
        lost = server.emulator.faults_injected["lost_image"]
        assert result.success and 0 < lost < 12
        metadata = latest(instance, "billing_reconciliation")
        assert metadata["billed_not_cataloged"] == lost and metadata["matched"] == 12 - lost
        checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert not checks["no_billed_image_lost"].passed
        assert spent(instance, "images") == server.emulator.stats()["cost_usd"], "lost images were paid for"


def test_without_an_admin_key_the_reconciliation_is_skipped_with_a_message(tmp_path):
    with EmulatorServer(fal_stand_in(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        result = project.run("landscapes")
        assert result.success
        messages = [e.message for e in instance.all_logs(result.run_id) if e.message]
        assert SKIPPED in messages
        assert instance.get_latest_materialization_event(dg.AssetKey("billing_reconciliation")) is None


def refusing_platform() -> Starlette:
    """fal's Platform API on a bad day: pricing refused (403), billing events failing (503)."""

    async def pricing(request):
        return JSONResponse({"detail": "Forbidden"}, status_code=403)

    async def billing(request):
        return JSONResponse({"detail": "Service unavailable"}, status_code=503)

    return Starlette(
        routes=[Route("/v1/models/pricing", pricing), Route("/v1/models/billing-events", billing)]
    )


def test_pricing_and_billing_failures_fall_back_cleanly(tmp_path):
    with (
        EmulatorServer(fal_stand_in(latency=0.02)) as server,
        BackgroundServer(refusing_platform()) as platform,
        dg.instance_for_test() as instance,
    ):
        project = make_project(
            tmp_path, server, instance, admin_key=ADMIN_KEY, platform_url=platform.url, max_attempts=2
        )
        result = project.run("landscapes")
        assert result.success, "neither failure fails a run"
        catalog = project.catalog()
        assert set(catalog["price_source"]) == {"configured"} and set(catalog["unit_price"]) == {0.04}
        messages = " ".join(e.message for e in instance.all_logs(result.run_id) if e.message)
        assert "pricing API could not be read" in messages and "costing with the configured price" in messages
        assert "billing events could not be read" in messages


# -- spend ---------------------------------------------------------------------------------------


def worker(server: EmulatorServer, root: Path, partition: str, *options: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "flux_pipeline_tests.worker", server.url, str(root), str(root / "home"),
               partition, *options]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def shared_instance(root: Path) -> dg.DagsterInstance:
    (root / "home").mkdir(exist_ok=True)
    return dg.DagsterInstance.from_config(str(root / "home"))


def test_spend_over_every_materialization_equals_what_fal_billed(tmp_path):
    """20 % faults, a SIGKILL mid-run, then two re-runs: the sum of spent_usd is fal's bill."""
    faults = FaultConfig.spread(0.2, seed=8, slow_status_seconds=0.5, retry_after_seconds=0.05)
    with (
        EmulatorServer(fal_stand_in(latency=0.3, faults=faults)) as server,
        shared_instance(tmp_path) as instance,
    ):
        project = make_project(
            tmp_path, server, instance, samples=False, http_timeout=1.0, lost_request_settle=1.0
        )
        write_table(project.dataset.layout.prompts_dir / "faulty.parquet", 40)
        killed = worker(server, tmp_path, "faulty")
        deadline = time.monotonic() + 120
        while server.emulator.submitted < 20:
            assert killed.poll() is None and time.monotonic() < deadline, killed.stderr.read()[-3000:]
            time.sleep(0.01)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        project.run("faulty")
        assert project.run("faulty").success
        billed_once_and_cataloged(project, server, 40)
        assert spent(instance, "images") == server.emulator.stats()["cost_usd"] == pytest.approx(40 * 0.04)


# -- concurrent runs and kills ---------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "ledger" / "requests.sqlite")
    return request.getfixturevalue("postgres_url")


def test_two_runs_of_one_partition_at_once_pay_once(tmp_path, ledger):
    with EmulatorServer(fal_stand_in(latency=0.3)) as server, shared_instance(tmp_path) as instance:
        write_table(tmp_path / "prompts" / "twice.parquet", 40)
        # registered once, as the sensor does: two workers adding it at once race in Dagster's storage
        instance.add_dynamic_partitions("prompt_tables", ["twice"])
        runs = [worker(server, tmp_path, "twice", "--ledger", ledger) for _ in range(2)]
        outcomes = [(run.wait(timeout=240), run.stderr.read()[-3000:]) for run in runs]
        assert all(code == 0 for code, _ in outcomes), outcomes
        assert server.emulator.submitted == 40, "no row was submitted by both runs"
        dataset = dataset_for(tmp_path).model_copy(update={"ledger": ledger})
        project = Project(tmp_path, server, instance, dataset, None)
        billed_once_and_cataloged(project, server, 40)
        assert spent(instance, "images") == pytest.approx(40 * 0.04), "each request's spend reported once"


def test_a_kill_between_submitting_and_submitted_pays_once(tmp_path):
    """The submit reached fal, the process died before recording its request id, and no webhook
    receiver listens: the re-run finds the request in fal's history instead of sending it again."""
    with EmulatorServer(fal_stand_in(latency=0.2)) as server, shared_instance(tmp_path) as instance:
        project = make_project(tmp_path, server, instance, samples=False, lost_request_settle=1.0)
        write_table(project.dataset.layout.prompts_dir / "window.parquet", 10)
        killed = worker(server, tmp_path, "window", "--kill-after-submits", "5")
        assert killed.wait(timeout=120) == -signal.SIGKILL
        with RequestLedger(project.dataset.ledger_location()) as ledger:
            states = [
                ledger.entry(RequestKey("window", f"p{i:04d}", "fal-ai/flux-pro/v1.1")) for i in range(10)
            ]
        assert sum(1 for e in states if e is not None and e.state == "submitting"), "the kill hit the window"
        assert project.run("window").success
        assert server.emulator.submitted == 10
        billed_once_and_cataloged(project, server, 10)
        assert spent(instance, "images") == pytest.approx(10 * 0.04)


@pytest.mark.parametrize("point", ["claimed", "before_materialization", "after_materialization"])
def test_spend_a_killed_run_claimed_is_reported_by_the_next_materialization_once(tmp_path, point):
    """SIGKILL between claiming the step's spend and storing its materialization (or right after):
    the sum of spent_usd over every materialization is still fal's bill, counted once."""
    with EmulatorServer(fal_stand_in(latency=0.05)) as server, shared_instance(tmp_path) as instance:
        project = make_project(tmp_path, server, instance, samples=False).with_settings(
            claim_lease_seconds=1.0
        )
        write_table(project.dataset.layout.prompts_dir / "claimed.parquet", 6)
        killed = worker(server, tmp_path, "claimed", "--kill-at", point)
        assert killed.wait(timeout=120) == -signal.SIGKILL, killed.stderr.read()[-3000:]
        materialized = instance.fetch_materializations(dg.AssetKey("images"), limit=10).records
        assert len(materialized) == (point == "after_materialization")
        time.sleep(1.2)  # the killed run stays "started": its claim is orphaned once a lease passed
        for _ in range(2):
            assert project.run("claimed").success
            assert spent(instance, "images") == pytest.approx(6 * 0.04) == server.emulator.stats()["cost_usd"]
        billed_once_and_cataloged(project, server, 6)


# -- backends -------------------------------------------------------------------------------------


def test_partial_run_config_keeps_the_configured_key(tmp_path, monkeypatch):
    """Launched with run config for one fal field, the run still calls the configured fal with
    the configured key (before, it fell back to the embedded emulator)."""
    monkeypatch.setenv("FAL_KEY", SECRET_KEY)
    with EmulatorServer(fal_stand_in(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, key=dg.EnvVar("FAL_KEY"))
        instance.add_dynamic_partitions("prompt_tables", ["landscapes"])
        urls = {
            "queue_url": server.url,
            "run_url": f"{server.url}/run",
            "storage_url": server.url,
            "platform_url": server.url,
        }
        result = project.defs.resolve_job_def("build_dataset").execute_in_process(
            partition_key="landscapes",
            instance=instance,
            run_config={"resources": {"fal": {"config": {"request_deadline": 300, **urls}}}},
        )
        assert result.success
        assert server.emulator.stats()["requests_billed"] == 4, "the configured fal was called"
        assert set(project.catalog()["backend"]) == {server.url.removeprefix("http://")}


def test_a_request_made_on_one_backend_is_never_reused_for_another(tmp_path):
    with EmulatorServer(fal_stand_in(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        defs = make_definitions(EmulatedFalResource(latency=0.01), project.dataset)
        emulated = Project(tmp_path, server, instance, project.dataset, defs)
        assert emulated.run("landscapes").success
        assert set(project.catalog()["backend"]) == {"emulator"}
        assert server.emulator.submitted == 0
        assert project.run("landscapes").success
        assert server.emulator.stats()["requests_billed"] == 4, "nothing the emulator made was reused"
        assert set(project.catalog()["backend"]) == {server.url.removeprefix("http://")}


def run_tagged(project: Project, partition: str, backfill: str) -> dg.ExecuteInProcessResult:
    """A run of the partition in a backfill, as the UI launches one."""
    project.instance.add_dynamic_partitions(prompt_tables.name, [partition])
    job = project.defs.resolve_job_def("build_dataset")
    return job.execute_in_process(
        partition_key=partition,
        instance=project.instance,
        tags={BACKFILL_TAG: backfill},
        raise_on_error=False,
    )


def test_after_an_emulator_run_spent_usd_is_what_the_paying_backend_billed_to_the_cent(tmp_path):
    """README command 1 (the embedded emulator), then the same table against fal (a stand-in at a
    price the emulator does not use): every request is made again, and every report, tag and
    `spend` says what the stand-in billed, with the emulator's list prices apart."""
    paying = fal_stand_in(latency=0.02, price_per_megapixel=0.05, admin_keys=(ADMIN_KEY,))
    with EmulatorServer(paying) as fal, shared_instance(tmp_path) as instance:
        real = make_project(tmp_path, fal, instance, samples=False, admin_key=ADMIN_KEY)
        write_table(real.dataset.layout.prompts_dir / "birds.parquet", 6)
        rehearsal = Project(
            tmp_path,
            fal,
            instance,
            real.dataset,
            make_definitions(EmulatedFalResource(latency=0.01), real.dataset),
        )
        assert run_tagged(rehearsal, "birds", "rehearsal").success
        assert fal.emulator.submitted == 0
        # on a budget the stand-in's bill fits, and that the two bills together would not
        real = real.with_settings(budget_usd=6 * 0.05)
        result = run_tagged(real, "birds", "real")
        assert result.success
        billed = fal.emulator.stats()
        assert billed["requests_billed"] == 6 and billed["cost_usd"] == pytest.approx(0.30)
        billed_once_and_cataloged(real, fal, 6)

        warnings = [
            (e.timestamp, e.message)
            for e in instance.all_logs(result.run_id)
            if e.level == logging.WARNING and "will be made (and billed) again" in e.message
        ]
        assert len(warnings) == 1 and "6 request(s) were already made on emulator" in warnings[0][1]
        assert "estimated $0.3000" in warnings[0][1], "at the paying backend's price"
        assert warnings[0][0] < min(r.sent_at for r in fal.emulator.requests.values()), "before any submit"
        forecast = latest(instance, "prompts")
        assert forecast["remade_requests"] == 6 and forecast["estimated_cost_usd"] == pytest.approx(0.30)
        assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}[
            "estimate_within_budget"
        ]

        assert spent(instance, "images") == pytest.approx(0.30)
        assert latest(instance, "images")["emulated_usd"] == 0
        rehearsed = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: "rehearsal"}))[0]
        assert rehearsed.tags[SPENT_TAG] == "0.0000" and float(rehearsed.tags[EMULATED_TAG]) == pytest.approx(
            0.24
        )
        assert instance.get_run_by_id(result.run_id).tags[SPENT_TAG] == "0.3000"
        assert backfill_spend(instance, "real") == BackfillSpend(pytest.approx(0.30), 0.0, 1)
        assert backfill_spend(instance, "rehearsal") == BackfillSpend(0.0, pytest.approx(0.24), 1)

        real.report()
        reports = real.dataset.layout.reports_dir
        by_partition = pd.read_parquet(reports / "cost_by_partition.parquet").set_index("partition")
        assert by_partition.loc["TOTAL", "spent_usd"] == pytest.approx(0.30, abs=0.005)
        assert by_partition.loc["TOTAL", "emulated_usd"] == pytest.approx(0.24, abs=0.005)
        assert by_partition.loc["TOTAL", "requests_billed"] == 6
        assert by_partition.loc["TOTAL", "requests_emulated"] == 6
        for view in ("cost_by_run", "cost_by_day", "cost_by_model"):
            frame = pd.read_parquet(reports / f"{view}.parquet")
            assert frame["spent_usd"].sum() == pytest.approx(0.30, abs=0.005), view
            assert frame["emulated_usd"].sum() == pytest.approx(0.24, abs=0.005), view
        by_run = pd.read_parquet(reports / "cost_by_run.parquet").set_index("backfill_id")
        assert by_run.loc["rehearsal", "backend"] == "emulator" and by_run.loc["rehearsal", "spent_usd"] == 0
        assert latest(instance, "cost_report")["total_spent_usd"] == pytest.approx(0.30)
        reconciled = latest(instance, "billing_reconciliation")
        assert reconciled["matched"] == 6 and reconciled["fal_billed_usd"] == pytest.approx(0.30)

        done = subprocess.run(
            [sys.executable, "-m", "flux_pipeline.cli", "spend", "--backfill", "real"],
            env={**os.environ, "DAGSTER_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stdout.strip() == "backfill real: $0.3000 over 1 run(s) tagged with their spend", (
            done.stderr
        )


def test_the_emulator_served_on_its_own_says_so_and_its_bills_are_not_spent(tmp_path):
    """`flux-pipeline emulator` reached through FAL_QUEUE_URL with a key: the same request path,
    and what it billed is emulated, not spent."""
    with EmulatorServer(EmulatorConfig(latency=0.02)) as served, dg.instance_for_test() as instance:
        project = make_project(tmp_path, served, instance)
        assert project.run("landscapes").success
        steps = [latest(instance, step) for step in ("images", "redux_variations")]
        assert [step["spent_usd"] for step in steps] == [0, 0]
        emulated = sum(step["emulated_usd"] for step in steps)
        assert emulated == pytest.approx(served.emulator.stats()["cost_usd"]) and emulated > 0
        with RequestLedger(project.dataset.ledger_location()) as ledger:
            paid = {row[-2] for row in ledger.requests("landscapes")}
        assert paid == {0}


# -- odd result bodies ----------------------------------------------------------------------------


ODD = {
    "odd-flags": lambda body: {**body, "has_nsfw_concepts": [False, False, False]},
    "odd-empty": lambda body: {**body, "images": []},
    "odd-seed": lambda body: {**body, "seed": 2**64 - 1},
}


class OddResults:
    """Serves the emulator, except that the result bodies of requests whose prompt names a case
    of ODD come back rewritten by it: odd but possible answers from fal."""

    def __init__(self, emulator: Emulator):
        self.emulator, self.app = emulator, create_app(emulator)

    async def __call__(self, scope, receive, send):
        parts = scope.get("path", "").strip("/").split("/")
        case = None
        if (
            scope["type"] == "http"
            and "requests" in parts
            and parts[-1] == parts[parts.index("requests") + 1]
        ):
            request = self.emulator.requests.get(parts[-1])
            case = next((c for c in ODD if request and c in request.payload.get("prompt", "")), None)
        if case is None:
            return await self.app(scope, receive, send)
        start: dict = {}

        async def rewrite(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            body = json.dumps(ODD[case](json.loads(message["body"]))).encode()
            headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def test_odd_result_bodies_fail_only_their_own_rows_are_final_and_paid_again_only_when_asked(tmp_path):
    """fal completes and bills 3 requests whose answers cannot be cataloged: each fails its own row,
    is recorded with its cost and reason, and a re-run sends none of them; only a run that says it
    pays again sends them, and the first payment stays in the ledger beside the second."""
    emulator = Emulator(fal_stand_in(latency=0.02, admin_keys=(ADMIN_KEY,)))
    with BackgroundServer(OddResults(emulator)) as server, dg.instance_for_test() as instance:
        server.emulator = emulator
        project = make_project(tmp_path, server, instance, samples=False, admin_key=ADMIN_KEY)
        prompts = ["a fine one", "another fine one", *(f"{case} scene" for case in ODD)]
        project.dataset.layout.prompts_dir.mkdir(parents=True)
        table = pa.table(
            {"prompt_id": [f"r{i}" for i in range(5)], "prompt": prompts, "image_size": ["square"] * 5}
        )
        pq.write_table(table, project.dataset.layout.prompts_dir / "odd.parquet")
        failures_file = project.dataset.layout.partition_files("odd").folder / "generated_failures.parquet"
        for _ in range(2):
            assert project.run("odd").success, "one odd answer never sinks a partition"
            failures = pq.read_table(failures_file).to_pandas()
            assert sorted(failures["field"]) == ["has_nsfw_concepts", "images", "seed"]
            assert sorted(project.catalog()["prompt_id"]) == ["r0", "r1"]
            assert emulator.stats()["requests_billed"] == 5, "a re-run pays for none of them again"
            assert latest(instance, "images")["requests_unusable"] == 3
        assert all(error.startswith("not sent again") for error in failures["error"])
        with RequestLedger(project.dataset.ledger_location()) as ledger:
            states = {
                f"r{i}": ledger.entry(RequestKey("odd", f"r{i}", "fal-ai/flux-pro/v1.1")).state
                for i in range(5)
            }
        assert states == {
            "r0": "stored",
            "r1": "stored",
            "r2": "unusable",
            "r3": "unusable",
            "r4": "unusable",
        }
        assert len(os.listdir(project.dataset.layout.partition_files("odd").images_dir)) == 2, (
            "no orphan file"
        )
        price = 0.04 * (1024 * 1024) / (1024 * 1024)  # a square image is one megapixel
        reconciled = latest(instance, "billing_reconciliation")
        assert reconciled["billed_unusable"] == 3 and reconciled["billed_not_cataloged"] == 0
        assert reconciled["spent_on_nothing_usd"] == pytest.approx(3 * price)

        paying = project.defs.resolve_job_def("build_dataset").execute_in_process(
            run_config=run_config(debug=False, pay_again_for_unusable=True),
            partition_key="odd",
            instance=instance,
        )
        assert paying.success and emulator.stats()["requests_billed"] == 8, "sent again, as asked"
        # the ledger records what each answer shows: the emptied one shows no image to bill
        hidden = 2 * price
        assert spent(instance, "images") == pytest.approx(emulator.stats()["cost_usd"] - hidden)
        assert project.defs.resolve_job_def("report_costs").execute_in_process(instance=instance).success
        report = pd.read_parquet(project.dataset.layout.reports_dir / "cost_by_partition.parquet")
        odd = report.set_index("partition").loc["odd"]
        assert odd["spent_usd"] == pytest.approx(8 * price - hidden), "both payments are in the report"
        assert odd["spent_on_nothing_usd"] == pytest.approx(6 * price - hidden)
        assert odd["requests_unusable"] == 6
        requests = pd.read_parquet(project.dataset.layout.reports_dir / "requests.parquet")
        assert requests["superseded"].sum() == 3 and requests["request_id"].is_unique
