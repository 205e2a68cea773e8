from __future__ import annotations

import io
import os
import socket
import uuid

import pytest
from PIL import Image

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.endpoints import JWKS_PATH, FalUrls
from flux_pipeline.resources import FalResource

from .browser_fixtures import browser  # noqa: F401  (the page tests' fixture)

# no test reaches the Hugging Face Hub (`datasets` reads these when it is imported)
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

SECRET_KEY = "fal-test-key-7c1e55d0-SECRET"
"""Sent on every call in the tests; no log, error, metadata or catalog may ever contain it."""
ADMIN_KEY = "fal-admin-key-3b9f02aa-SECRET"
"""fal's admin key (billing events), under the same rule."""
SECRETS = (SECRET_KEY, ADMIN_KEY)


def fal_stand_in(**settings) -> EmulatorConfig:
    """The emulator standing in for fal, a paying backend (it does not mark its answers as the
    emulator's): what it bills counts as spent. For the tests of the money path."""
    return EmulatorConfig(stands_in_for_fal=True, **settings)


@pytest.fixture
def emulator():
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server:
        yield server


@pytest.fixture
def slow_emulator():
    """One runner and a long latency, so that requests stay queued."""
    with EmulatorServer(EmulatorConfig(latency=2.0, runners=1)) as server:
        yield server


POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


@pytest.fixture
def postgres_url():
    """A fresh database on the local PostgreSQL server (CI starts it; elsewhere the test skips
    when there is none), as a psycopg2 SQLAlchemy URL."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(f"{POSTGRES_SERVER}/postgres")
    except psycopg2.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no local PostgreSQL server: {exc}")
    admin.autocommit = True
    name = f"flux_test_{uuid.uuid4().hex[:12]}"
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        # dagster-postgres ships psycopg2; SQLAlchemy's default PostgreSQL driver is now psycopg 3
        yield f"{POSTGRES_SERVER.replace('postgresql://', 'postgresql+psycopg2://')}/{name}"
    finally:
        admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def bucket() -> str:
    return f"flux-{uuid.uuid4().hex[:12]}"  # moto keeps its buckets for the life of the process


@pytest.fixture
def s3(monkeypatch, bucket):
    """An S3 endpoint with an empty bucket; yields the fsspec options that reach it."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    options = {"endpoint_url": f"http://{host}:{port}"}
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(**options).mkdir(bucket)
    try:
        yield options
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def urls_for(server: EmulatorServer) -> FalUrls:
    return FalUrls.single_base(server.url)


def resource_for(server: EmulatorServer, **overrides) -> FalResource:
    return resource_for_url(server.url, **overrides)


def resource_for_url(url: str, **overrides) -> FalResource:
    urls = FalUrls.single_base(url)
    settings = {"key": SECRET_KEY, "queue_url": urls.queue, "run_url": urls.run, "storage_url": urls.storage}
    jwks = f"{url}{JWKS_PATH}"
    return FalResource(**{**settings, "platform_url": url, "webhook_jwks_url": jwks, **overrides})


def emulator_env(server: EmulatorServer) -> dict[str, str]:
    """The environment under which the code location's definitions call `server` with the test key."""
    return emulator_env_at(server.url)


def emulator_env_at(url: str) -> dict[str, str]:
    """emulator_env for an emulator at `url` (one in a process of its own)."""
    return {
        "FAL_KEY": SECRET_KEY,
        "FAL_QUEUE_URL": url,
        "FAL_RUN_URL": f"{url}/run",
        "FAL_STORAGE_URL": url,
        "FAL_WEBHOOK_JWKS_URL": f"{url}{JWKS_PATH}",
    }


def clean_env(**overrides: str) -> dict[str, str]:
    """For a process of its own: this environment less fal's and the project's settings, with stdout
    buffered as in a person's shell (this machine sets PYTHONUNBUFFERED), plus `overrides`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FAL_", "FLUX_")) and key != "PYTHONUNBUFFERED"
    }
    return {**env, **overrides}


def request_stats(server: EmulatorServer) -> dict:
    """The emulator's stats less its Platform API calls (prices are read on every run, for free)."""
    stats = server.emulator.stats()
    stats["http_calls"] = {kind: n for kind, n in stats["http_calls"].items() if kind != "platform"}
    return stats


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def decode(blob: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(blob))
    image.load()
    return image


# -- the key never leaks: every test's captured stdout, stderr, logs and failure text is scanned --

_LEAKS: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    texts = [report.longreprtext, *(content for _, content in report.sections)]
    if any(secret in text for secret in SECRETS for text in texts):
        _LEAKS.append(f"{item.nodeid} ({call.when})")


def pytest_sessionfinish(session, exitstatus):
    if _LEAKS:
        print(f"\nthe fal key appeared in the output of: {', '.join(_LEAKS)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
