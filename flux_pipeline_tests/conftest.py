from __future__ import annotations

import io
import socket

import pytest
from PIL import Image

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.endpoints import FalUrls
from flux_pipeline.resources import FalResource

SECRET_KEY = "fal-test-key-7c1e55d0-SECRET"
"""Sent on every call in the tests; no log, error, metadata or catalog may ever contain it."""


@pytest.fixture
def emulator():
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server:
        yield server


@pytest.fixture
def slow_emulator():
    """One runner and a long latency, so that requests stay queued."""
    with EmulatorServer(EmulatorConfig(latency=2.0, runners=1)) as server:
        yield server


def urls_for(server: EmulatorServer) -> FalUrls:
    return FalUrls.single_base(server.url)


def resource_for(server: EmulatorServer, **overrides) -> FalResource:
    return resource_for_url(server.url, **overrides)


def resource_for_url(url: str, **overrides) -> FalResource:
    urls = FalUrls.single_base(url)
    return FalResource(key=SECRET_KEY, queue_url=urls.queue, run_url=urls.run, storage_url=urls.storage,
                       **overrides)


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
    if any(SECRET_KEY in text for text in texts):
        _LEAKS.append(f"{item.nodeid} ({call.when})")


def pytest_sessionfinish(session, exitstatus):
    if _LEAKS:
        print(f"\nthe fal key appeared in the output of: {', '.join(_LEAKS)}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
