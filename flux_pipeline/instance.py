"""The local Dagster instance's configuration: what `flux-pipeline run` writes to
`$DAGSTER_HOME/dagster.yaml` (default `.dagster_home/`) when that file is missing or empty, and
what `dg dev` / `dagster dev` then use with the same DAGSTER_HOME. An existing configuration is
the user's and is never changed.

It limits the pool `fal` (every step that calls fal takes a slot) to one slot, so that several
runs and backfills together keep at most one `max_concurrency` of requests in flight. Raise it
with `dagster instance concurrency set fal N` (or `default_limit` below before the first run).
Runs are queued and started by the daemon a few at a time, as the 2-core machines this project
is measured on afford, and log to the terminal at INFO."""

from __future__ import annotations

from pathlib import Path

LOCAL_INSTANCE_YAML = """\
# flux_pipeline's local Dagster instance (written by `flux-pipeline run`; edit freely, it is not
# rewritten). Storage: SQLite under this folder.
python_logs:
  # runs log to the terminal at INFO (`flux-pipeline run --debug`: DEBUG); the UI shows every level
  python_log_level: INFO
concurrency:
  runs:
    # the daemon starts at most this many queued runs at once (backfills, sensors, the UI)
    max_concurrent_runs: 4
  pools:
    # every step that calls fal takes a slot of the pool "fal": with one slot, all runs together
    # keep at most one FalResource.max_concurrency of requests in flight. Raise it with
    # `dagster instance concurrency set fal N`.
    granularity: op
    default_limit: 1
"""


def write_local_instance(home: Path) -> Path:
    """`home/dagster.yaml` with LOCAL_INSTANCE_YAML, unless it already has content; its path."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    if not path.exists() or not path.read_text().strip():
        path.write_text(LOCAL_INSTANCE_YAML)
    return path
