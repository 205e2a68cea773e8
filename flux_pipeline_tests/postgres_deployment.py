"""The documented multi-machine deployment as the deployment tests set it up: a DAGSTER_HOME whose
dagster.yaml is deploy/dagster.yaml on a fresh PostgreSQL database, the environment under which
every process of the deployment (`dagster job execute`, the daemon's runs, Celery workers) uses
that instance, the request ledger in the same database, the dataset in an S3 bucket and fal at a
URL, and the fal emulator in a process of its own (as fal is to every machine)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from .conftest import emulator_env_at, free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def write_postgres_home(home: Path, **run_monitoring) -> Path:
    """`home` with deploy/dagster.yaml as its dagster.yaml, its run_monitoring settings updated
    with `run_monitoring` (a test's shorter intervals)."""
    config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    config["run_monitoring"].update(run_monitoring)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def deployment_env(home: Path, fal_url: str, data: str, postgres_url: str, s3: dict) -> dict[str, str]:
    """The variables (to add to os.environ) under which the code location uses the instance in
    `home` on `postgres_url`, the ledger in the same database, the dataset at `data` in the S3
    endpoint of `s3` (fsspec options) and the fal emulator at `fal_url`."""
    return {
        **emulator_env_at(fal_url),
        "FAL_API_URL": fal_url,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": postgres_url,
        "FLUX_DATA_DIR": data,
        "FLUX_LEDGER": postgres_url,
        "AWS_ENDPOINT_URL": s3["endpoint_url"],
    }


class EmulatorProcess:
    """`flux-pipeline emulator ARGS` on a free port, its output in `log`; `stats()` reads the
    emulator's counters over HTTP (/_emulator/stats)."""

    def __init__(self, log: Path, *args: str, ready_timeout: float = 60):
        self.log, self.args, self.ready_timeout = log, args, ready_timeout
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> EmulatorProcess:
        port = self.url.rsplit(":", 1)[1]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BIN / "flux-pipeline"), "emulator", "--port", port, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                self.stats()
                return self
            except httpx.HTTPError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"the emulator did not start:\n{self.log.read_text()}") from None
                time.sleep(0.2)

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_emulator/stats", timeout=10).raise_for_status().json()
