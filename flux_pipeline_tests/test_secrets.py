"""The fal keys (normal and admin), read through EnvVar as in production, appear nowhere the
pipeline writes."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from flux_pipeline.definitions import make_definitions
from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.client import FalClient
from flux_pipeline.fal.endpoints import JWKS_PATH, FalUrls
from flux_pipeline.fal.errors import FalApiError
from flux_pipeline.fal.http_server import BackgroundServer
from flux_pipeline.fal.models import TEXT_TO_IMAGE
from flux_pipeline.fal.platform import FalPlatform
from flux_pipeline.pipeline.resources import fal_from_env

from .conftest import ADMIN_KEY, SECRET_KEY, free_port, resource_for_url
from .dataset_fixtures import SAMPLE_PROMPTS, dataset_for


def test_key_is_absent_from_logs_events_metadata_catalog_ledger_and_errors(
    tmp_path, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    faults = FaultConfig.spread(0.3, seed=3, slow_status_seconds=1.5)
    config = EmulatorConfig(latency=0.02, faults=faults, admin_keys=(ADMIN_KEY,))
    with EmulatorServer(config) as server, dg.instance_for_test() as instance:
        monkeypatch.setenv("FAL_KEY", SECRET_KEY)
        monkeypatch.setenv("FAL_ADMIN_KEY", ADMIN_KEY)
        for name in ("FAL_QUEUE_URL", "FAL_STORAGE_URL", "FAL_API_URL"):
            monkeypatch.setenv(name, server.url)
        monkeypatch.setenv("FAL_RUN_URL", f"{server.url}/run")
        monkeypatch.setenv("FAL_WEBHOOK_JWKS_URL", f"{server.url}{JWKS_PATH}")
        fal = fal_from_env().model_copy(update={"http_timeout": 1.0, "webhook_port": free_port()})
        shutil.copytree(SAMPLE_PROMPTS, tmp_path / "prompts")
        defs = make_definitions(fal, dataset_for(tmp_path))
        instance.add_dynamic_partitions("prompt_tables", ["animals", "landscapes"])
        runs = [
            defs.resolve_job_def("build_dataset").execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False
            )
            for key in ("animals", "landscapes")
        ]
        runs.append(defs.resolve_job_def("report_costs").execute_in_process(instance=instance))
        assert all(run.success for run in runs)
        assert server.emulator.stats()["faults_injected"], "the run went through failures and retries"

        texts = [caplog.text, *capfd.readouterr(), repr(fal), str(fal)]
        for run in runs:
            record = instance.get_run_by_id(run.run_id)
            texts.append(repr(record.run_config))
            texts.extend(repr(entry) for entry in instance.all_logs(run.run_id))
        assert any("rejected" in t for t in texts), "the scan covers the rejected row's warning"
        assert instance.get_latest_materialization_event(dg.AssetKey("billing_reconciliation")), (
            "admin key used"
        )
        for text in texts:
            assert SECRET_KEY not in text and ADMIN_KEY not in text

    written = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written) and any(p.name == "data.parquet" for p in written)
    assert any("reconciliation" in p.parts for p in written) and any(
        p.name == "requests.parquet" for p in written
    )
    for path in written:
        assert SECRET_KEY.encode() not in path.read_bytes() and ADMIN_KEY.encode() not in path.read_bytes(), (
            path
        )


def echoing_server(plain_text: bool = False) -> BackgroundServer:
    """A fal that answers every call 401 and echoes the Authorization header it was sent: in a
    JSON body and its request-id header, or in plain text with the key across the 500th
    character (where error texts are cut)."""

    async def deny(request: Request) -> Response:
        sent = request.headers.get("authorization", "")
        if plain_text:
            return PlainTextResponse("x" * 480 + f" rejected {sent}", status_code=401)
        return JSONResponse(
            {"detail": [{"loc": ["header"], "msg": f"key {sent} is not valid"}], "error_type": sent},
            status_code=401,
            headers={"x-fal-request-id": f"rid-{sent}"},
        )

    return BackgroundServer(Starlette(routes=[Route("/{path:path}", deny, methods=["GET", "POST", "PUT"])]))


def test_a_key_echoed_in_an_error_body_reaches_no_file_log_or_run_record(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="httpcore")  # its DEBUG trace prints response headers
    shutil.copytree(SAMPLE_PROMPTS, tmp_path / "data" / "prompts")
    (tmp_path / "dagster").mkdir()
    with echoing_server() as server, dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        defs = make_definitions(resource_for_url(server.url, max_attempts=1), dataset_for(tmp_path / "data"))
        instance.add_dynamic_partitions("prompt_tables", ["landscapes"])
        run = defs.resolve_job_def("build_dataset").execute_in_process(
            partition_key="landscapes", instance=instance, raise_on_error=False
        )
        texts = [caplog.text, *capfd.readouterr(), *(repr(entry) for entry in instance.all_logs(run.run_id))]

    failures = pq.read_table(tmp_path / "data" / "outputs" / "landscapes" / "generated_failures.parquet")
    errors = failures["error"].to_pylist()
    assert errors and all("401" in error and "key Key [REDACTED] is not valid" in error for error in errors)
    assert any("[REDACTED]" in text for text in texts), "the scan covers the failures' log lines"
    for text in texts:
        assert SECRET_KEY not in text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "requests.sqlite" for p in written) and any(p.suffix == ".db" for p in written)
    for path in written:
        assert SECRET_KEY.encode() not in path.read_bytes(), path


def test_a_key_echoed_in_plain_text_is_redacted_before_the_text_is_cut():
    async def call(url: str):
        async with FalClient(SECRET_KEY, FalUrls.single_base(url)) as fal:
            await fal.status(TEXT_TO_IMAGE, "some-request")

    with echoing_server(plain_text=True) as server, pytest.raises(FalApiError) as caught:
        asyncio.run(call(server.url))
    assert caught.value.status_code == 401 and str(caught.value).endswith(" rejected Key [REDAC")
    assert SECRET_KEY[:6] not in str(caught.value), "not even the piece before the cut"


def test_the_platform_client_redacts_its_key_from_error_bodies(caplog):
    caplog.set_level(logging.INFO, logger="httpcore")  # its DEBUG trace prints response headers

    async def call(url: str):
        async with FalPlatform(SECRET_KEY, url) as platform:
            await platform.prices([TEXT_TO_IMAGE])

    with echoing_server() as server, pytest.raises(FalApiError) as caught:
        asyncio.run(call(server.url))
    error = caught.value
    texts = [str(error), repr(error.detail), error.error_type, error.request_id]
    assert all(SECRET_KEY not in text for text in texts)
    assert error.error_type == "Key [REDACTED]" and error.request_id == "rid-Key [REDACTED]"


def test_a_fal_that_echoes_the_key_everywhere_leaves_it_in_no_stream_or_file_even_at_debug(
    tmp_path, capfd, caplog
):
    """The emulator echoes the key in every response header (httpcore's DEBUG trace prints them),
    in status log lines, results and webhook bodies."""
    caplog.set_level(logging.DEBUG)
    for noisy in ("httpcore", "httpx", "aiohttp", "flux_pipeline"):
        caplog.set_level(logging.DEBUG, logger=noisy)
    shutil.copytree(SAMPLE_PROMPTS, tmp_path / "data" / "prompts")
    (tmp_path / "dagster").mkdir()
    config = EmulatorConfig(latency=0.05, echo_key=True, faults=FaultConfig(lost_submit=0.3, seed=5))
    with (
        EmulatorServer(config) as server,
        dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance,
    ):
        fal = resource_for_url(server.url, webhook_port=free_port(), status_updates="poll")
        defs = make_definitions(fal, dataset_for(tmp_path / "data"))
        instance.add_dynamic_partitions("prompt_tables", ["landscapes"])
        run = defs.resolve_job_def("build_dataset").execute_in_process(
            partition_key="landscapes", instance=instance, raise_on_error=False
        )
        assert run.success
        assert server.emulator.webhooks_delivered and server.emulator.faults_injected.get("lost_submit")
        billed = server.emulator.stats()["images_billed"]
        texts = [caplog.text, *capfd.readouterr(), *(repr(entry) for entry in instance.all_logs(run.run_id))]

    assert "x-echo" in caplog.text and "[REDACTED]" in caplog.text, "the echoed headers reached the log"
    assert any("(key [REDACTED])" in text for text in texts), "so did fal's echoing log lines"
    for text in texts:
        assert SECRET_KEY not in text
    catalog = pq.read_table(tmp_path / "data" / "catalog").to_pandas()
    assert len(catalog) == billed
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in written) and any(p.name == "data.parquet" for p in written)
    for path in written:
        assert SECRET_KEY.encode() not in path.read_bytes(), path


def header_recorder(seen: list[tuple[str, str]], redirect_to: str | None = None) -> BackgroundServer:
    """Records (path, Authorization header) of each call; redirects to `redirect_to`, else serves a PNG."""

    async def serve(request: Request) -> Response:
        seen.append((request.url.path, request.headers.get("authorization", "")))
        if redirect_to is not None:
            return RedirectResponse(f"{redirect_to}/image.png", status_code=302)
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 200, 10)).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    return BackgroundServer(Starlette(routes=[Route("/{path:path}", serve)]))


def test_a_result_url_on_fals_host_redirected_to_another_host_never_carries_the_key():
    """Result files are fetched without the key, even from fal's own host, and so through any
    redirect; only fal's API calls carry it."""
    fal_seen: list[tuple[str, str]] = []
    cdn_seen: list[tuple[str, str]] = []
    with header_recorder(cdn_seen) as cdn, header_recorder(fal_seen, redirect_to=cdn.url) as fal_host:

        async def fetch() -> bytes:
            async with FalClient(SECRET_KEY, FalUrls.single_base(fal_host.url)) as fal:
                data, _ = await fal.download(f"{fal_host.url}/files/result.png", max_bytes=100_000)
                return data

        data = asyncio.run(fetch())
    assert Image.open(io.BytesIO(data)).size == (8, 8), "the redirect was followed to the file"
    assert fal_seen == [("/files/result.png", "")] and cdn_seen == [("/image.png", "")]
