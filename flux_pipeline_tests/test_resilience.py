"""Never lose an image, never pay twice: faults, lost responses, crashes and re-runs."""

from __future__ import annotations

import asyncio
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.retries import RetryPolicy, retry_after_seconds

from .conftest import free_port, request_stats
from .dataset_fixtures import make_project, write_table

REPO = Path(__file__).resolve().parent.parent


def assert_each_request_billed_once(project, expected_images: int) -> None:
    emulator = project.emulator.emulator
    billed = emulator.billing
    prompts = [emulator.requests[b.request_id].payload["prompt"] for b in billed]
    assert len(prompts) == len(set(prompts)), "a prompt was billed twice"
    catalog = project.catalog()
    assert len(catalog) == sum(b.images for b in billed) == expected_images
    assert set(catalog["request_id"]) == {b.request_id for b in billed}


def test_200_rows_under_20_percent_faults_of_every_kind(tmp_path):
    faults = FaultConfig.spread(0.2, seed=11, slow_status_seconds=1.5, retry_after_seconds=0.1)
    with (
        EmulatorServer(EmulatorConfig(latency=0.05, faults=faults)) as server,
        dg.instance_for_test() as instance,
    ):
        project = make_project(
            tmp_path,
            server,
            instance,
            samples=False,
            http_timeout=1.0,
            webhook_port=free_port(),
            max_concurrency=8,
        )
        write_table(project.dataset.layout.prompts_dir / "faulty.parquet", 200)
        result = project.run("faulty")
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
        injected = server.emulator.stats()["faults_injected"]
        assert set(injected) == set(faults.injected_kinds()), injected
        assert_each_request_billed_once(project, 200)
        lost = injected["lost_submit"]
        assert lost > 0 and server.emulator.webhooks_delivered >= lost


def test_lost_submit_responses_are_found_through_the_webhook(tmp_path):
    faults = FaultConfig(lost_submit=1.0)  # every submit is queued and billed, every response lost
    with (
        EmulatorServer(EmulatorConfig(latency=0.05, faults=faults)) as server,
        dg.instance_for_test() as instance,
    ):
        project = make_project(tmp_path, server, instance, samples=False, webhook_port=free_port())
        write_table(project.dataset.layout.prompts_dir / "lost.parquet", 12)
        assert project.run("lost").success
        assert server.emulator.submitted == 12, "no submit was sent twice"
        assert_each_request_billed_once(project, 12)
        assert server.emulator.jwks_served >= 1, "the deliveries were verified against the emulator's keys"


def test_without_webhooks_lost_submits_are_found_in_fals_request_history(tmp_path):
    faults = FaultConfig(lost_submit=1.0)  # every submit is queued and billed, every response lost
    with (
        EmulatorServer(EmulatorConfig(latency=0.05, faults=faults)) as server,
        dg.instance_for_test() as instance,
    ):
        project = make_project(tmp_path, server, instance, samples=False, lost_request_settle=1.0)
        write_table(project.dataset.layout.prompts_dir / "lost.parquet", 12)
        assert project.run("lost").success
        assert server.emulator.submitted == 12, "no submit was sent twice"
        assert server.emulator.stats()["http_calls"]["platform"] >= 12, "each was looked up in the history"
        assert_each_request_billed_once(project, 12)


@pytest.mark.parametrize("drops", [4, 7])
def test_a_submit_dropped_before_queueing_again_and_again_is_sent_until_it_is_queued(
    tmp_path, monkeypatch, drops
):
    """A submit whose connection drops before fal queued it is, once no webhook came for it,
    sent again, up to as many times as any call is tried (`max_attempts`, 8): the row is made
    in this run, and paid once."""
    from flux_pipeline.emulator import faults

    dropped = []
    inject = faults.FaultInjector.__call__

    async def drop_submits_first(self, scope, receive, send):
        kind = faults.call_kind(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if kind == "submit" and len(dropped) < drops:
            dropped.append(scope["path"])
            return await faults._drop(send, "dropped before queueing")
        return await inject(self, scope, receive, send)

    monkeypatch.setattr(faults.FaultInjector, "__call__", drop_submits_first)
    never = FaultConfig(rate_limit=1e-12)  # installs the injector, injects nothing itself
    with (
        EmulatorServer(EmulatorConfig(latency=0.05, faults=never)) as server,
        dg.instance_for_test() as instance,
    ):
        project = make_project(tmp_path, server, instance, samples=False, webhook_port=free_port())
        project = project.with_settings(lost_request_wait=0.3)
        write_table(project.dataset.layout.prompts_dir / "dropped.parquet", 1)
        assert project.run("dropped").success
        assert len(dropped) == drops
        assert server.emulator.submitted == 1, "queued once, after the drops"
        assert_each_request_billed_once(project, 1)


def test_a_request_fal_completes_with_an_error_is_sent_again_by_the_rerun(tmp_path, monkeypatch):
    """fal bills only successful outputs: a request that ended in its own error is final and
    unbilled, so its row is not resumed (its result would stay an error) but sent again."""
    from flux_pipeline.emulator import engine

    render = engine.render_image
    crashes = []

    def crash_once(*args):
        if not crashes:
            crashes.append(args)
            raise MemoryError
        return render(*args)

    monkeypatch.setattr(engine, "render_image", crash_once)
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        write_table(project.dataset.layout.prompts_dir / "crash.parquet", 6)
        project.run("crash")
        assert len(project.catalog()) == 5 and len(crashes) == 1
        project.run("crash")
        assert server.emulator.submitted == 7, "the failed request was sent again, once"
        assert server.emulator.stats()["http_calls"]["result"] == 7, "its error was not retried"
        assert_each_request_billed_once(project, 6)


KILLED_RUN = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job inherits SIGINT ignored
from pathlib import Path
import dagster as dg
from flux_pipeline.definitions import make_definitions
from flux_pipeline_tests.conftest import resource_for_url
from flux_pipeline_tests.dataset_fixtures import dataset_for
url, root, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
if sys.argv[4:] == ["storing"]:  # the interrupt lands while the step stores a finished image
    import os
    import flux_pipeline.generation.results as generation
    store_image = generation.store_image
    def store_then_interrupt(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return store_image(*args, **kwargs)
    generation.store_image = store_then_interrupt
defs = make_definitions(resource_for_url(url, webhook_port=port, max_concurrency=4), dataset_for(root))
with dg.DagsterInstance.ephemeral() as instance:
    instance.add_dynamic_partitions("prompt_tables", ["crash"])
    defs.resolve_job_def("build_dataset").execute_in_process(partition_key="crash", instance=instance)
"""


def test_sigkill_halfway_then_rerun_pays_once_and_loses_nothing(tmp_path):
    rows, port = 40, free_port()
    with EmulatorServer(EmulatorConfig(latency=0.4)) as server, dg.instance_for_test() as instance:
        project = make_project(
            tmp_path, server, instance, samples=False, webhook_port=port, max_concurrency=4
        )
        write_table(project.dataset.layout.prompts_dir / "crash.parquet", rows)
        worker = subprocess.Popen(
            [sys.executable, "-c", KILLED_RUN, server.url, str(tmp_path), str(port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while server.emulator.submitted < rows // 2:
            assert worker.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.01)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        submitted_before = server.emulator.submitted
        assert rows // 2 <= submitted_before < rows

        result = project.run("crash")
        assert result.success
        assert server.emulator.submitted == rows, "only never-submitted rows were submitted"
        assert_each_request_billed_once(project, rows)
        images = project.instance.get_latest_materialization_event(dg.AssetKey("images"))
        resumed = images.asset_materialization.metadata["requests_resumed"].value
        reused = images.asset_materialization.metadata["requests_reused"].value
        assert resumed + reused > 0


def test_second_materialization_of_a_finished_partition_bills_nothing(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        assert project.run("landscapes").success
        before = request_stats(server)
        assert project.run("landscapes").success
        assert request_stats(server) == before
        metadata = project.instance.get_latest_materialization_event(
            dg.AssetKey("images")
        ).asset_materialization.metadata
        assert metadata["requests_reused"].value == 3


def test_a_deleted_image_is_fetched_again_for_free(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        assert project.run("landscapes").success
        row = project.catalog().iloc[0]
        (project.dataset.layout.outputs_dir / row.file_path).unlink()
        billed = server.emulator.stats()["requests_billed"]
        assert project.run("landscapes").success
        assert server.emulator.stats()["requests_billed"] == billed, (
            "resumed by request id: result, no new request"
        )
        assert (project.dataset.layout.outputs_dir / row.file_path).is_file()


def test_retry_after_is_honoured_up_to_its_cap():
    response = httpx.Response(429, headers={"retry-after": "2.5"})
    assert retry_after_seconds(response) == 2.5
    assert RetryPolicy(max_delay=1.0).delay(1, retry_after_seconds(response)) == 2.5, (
        "not cut to the backoff cap"
    )
    assert RetryPolicy(max_retry_after=2.0).delay(1, retry_after_seconds(response)) is None, (
        "beyond the cap: no retry"
    )
    assert (
        retry_after_seconds(httpx.Response(429, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}))
        == 0
    )
    assert all(
        0 <= RetryPolicy(base_delay=0.1, max_delay=5).delay(n) <= min(5, 0.1 * 2 ** (n - 1))
        for n in range(1, 12)
    )


def test_client_errors_are_not_retried(emulator):
    from flux_pipeline.fal.client import FalClient
    from flux_pipeline.fal.errors import FalApiError
    from flux_pipeline.fal.models import TEXT_TO_IMAGE

    from .conftest import SECRET_KEY, urls_for

    with httpx.Client(base_url=emulator.url, headers={"Authorization": f"Key {SECRET_KEY}"}) as http:
        bad = http.post(f"/{TEXT_TO_IMAGE}", json={"prompt": "x", "num_images": 9}).json()["request_id"]

    async def calls():
        async with FalClient(SECRET_KEY, urls_for(emulator)) as fal:
            with pytest.raises(FalApiError) as unknown:
                await fal.status(TEXT_TO_IMAGE, "no-such-request")
            await fal.wait(TEXT_TO_IMAGE, bad)
            with pytest.raises(FalApiError) as invalid:
                await fal.result(TEXT_TO_IMAGE, bad)
            return (
                unknown.value.status_code,
                invalid.value.status_code,
                fal.call_counts.calls,
                fal.call_counts.retries,
            )

    unknown, invalid, made, retried = asyncio.run(calls())
    assert (unknown, invalid) == (404, 422)
    assert made["result"] == 1 and retried == {}


@pytest.mark.parametrize("interrupted", ["waiting", "storing"])
def test_an_interrupted_run_cancels_queued_requests_and_a_rerun_completes_them(tmp_path, interrupted):
    rows, port = 12, free_port()
    with EmulatorServer(EmulatorConfig(latency=1.0, runners=1)) as server, dg.instance_for_test() as instance:
        project = make_project(
            tmp_path, server, instance, samples=False, webhook_port=port, max_concurrency=4
        )
        write_table(project.dataset.layout.prompts_dir / "crash.parquet", rows)
        log = tmp_path / "worker.log"
        with log.open("w") as stderr:
            worker = subprocess.Popen(
                [sys.executable, "-c", KILLED_RUN, server.url, str(tmp_path), str(port), interrupted],
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        if interrupted == "waiting":
            deadline = time.monotonic() + 60
            while server.emulator.submitted < 4:
                assert worker.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.5)  # into the wait for results, with requests queued behind the single runner
            worker.send_signal(signal.SIGINT)  # what Dagster's run termination delivers to a run worker
        worker.wait(timeout=60)
        cancelled = {r.id for r in server.emulator.requests.values() if r.cancelled}
        assert len(cancelled) >= 2, (
            f"the queued requests were cancelled at fal; worker: {log.read_text()[-3000:]}"
        )

        assert project.run("crash").success
        billed = {b.request_id for b in server.emulator.billing}
        assert not billed & cancelled, "cancelled requests were never billed"
        assert_each_request_billed_once(project, rows)


class HangUpAfterRequest(socketserver.BaseRequestHandler):
    """Reads a request's head, then closes the connection without answering."""

    def handle(self):
        head = b""
        while b"\r\n\r\n" not in head and (chunk := self.request.recv(65536)):
            head += chunk
        self.server.requests.append(head.split(b"\r\n", 1)[0].decode())


def test_a_connection_dropped_after_sending_never_resends_a_submit():
    """Over the real transport: a submit whose connection closes once it was sent may be queued
    at fal, so it is not sent again; a status call is retried."""
    from flux_pipeline.fal.client import FalClient
    from flux_pipeline.fal.endpoints import FalUrls
    from flux_pipeline.fal.errors import FalSubmitUncertain
    from flux_pipeline.fal.models import TEXT_TO_IMAGE

    from .conftest import SECRET_KEY

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), HangUpAfterRequest) as server:
        server.requests = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"

        async def calls():
            policy = RetryPolicy(max_attempts=3, base_delay=0.01)
            async with FalClient(SECRET_KEY, FalUrls.single_base(url), retry=policy) as fal:
                with pytest.raises(FalSubmitUncertain):
                    await fal.submit(TEXT_TO_IMAGE, {"prompt": "x"})
                with pytest.raises(httpx.RemoteProtocolError):
                    await fal.status(TEXT_TO_IMAGE, "some-request")
                return fal.call_counts

        counts = asyncio.run(calls())
        server.shutdown()
    submits = [r for r in server.requests if r.startswith("POST")]
    assert submits == [f"POST /{TEXT_TO_IMAGE} HTTP/1.1"], "the submit was sent once"
    assert counts.calls["status"] == 3 and counts.retries["status"] == 2
