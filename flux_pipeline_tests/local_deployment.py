"""A real local Dagster deployment of this repository, driven as the UI drives it: a fresh
DAGSTER_HOME, `dagster-webserver` and `dagster-daemon` on the repository's workspace.yaml, and
GraphQL calls (the mutations and queries the UI's own pages send). Used by the backfill test and
by benchmarks/backfill.py.

`LocalDeployment(home, env)` is a context manager; on exit it stops both processes (SIGTERM,
then SIGKILL after a grace period), then kills what they left behind in their process groups
(a run process still waiting for a step). Their output goes to `home/webserver.log` and
`home/daemon.log`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .conftest import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TERMINAL_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}

WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace { locationEntries { name loadStatus
      locationOrLoadError { __typename ... on PythonError { message } } } }
  }
}"""

ADD_PARTITION = """
mutation AddDynamicPartition($partitionsDefName: String!, $partitionKey: String!,
                             $repositorySelector: RepositorySelector!) {
  addDynamicPartition(partitionsDefName: $partitionsDefName, partitionKey: $partitionKey,
                      repositorySelector: $repositorySelector) {
    __typename ... on PythonError { message }
    ... on AddDynamicPartitionSuccess { partitionKey } ... on DuplicateDynamicPartitionError { partitionName }
  }
}"""

LAUNCH_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""

LAUNCH_RUN = """
mutation LaunchRun($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

REEXECUTE = """
mutation Reexecute($reexecutionParams: ReexecutionParams!) {
  launchPipelineReexecution(reexecutionParams: $reexecutionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
  }
}"""

BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename ... on PartitionBackfill { id status numPartitions } ... on PythonError { message }
  }
}"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId jobName status creationTime startTime endTime
      tags { key value } } }
  }
}"""

JOB_ASSETS = """
query JobAssets($pipeline: PipelineSelector!) {
  assetNodes(pipeline: $pipeline) { assetKey { path } }
}"""

RUN_EVENTS = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection { events { __typename ... on MessageEvent { timestamp } } }
  }
}"""

CHECK_PARTITIONS = """
query CheckPartitions($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks { name partitionStatuses {
      ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions
        inProgressPartitions skippedPartitions executionFailedPartitions } } } } } }
  }
}"""

START_SENSOR = """
mutation StartSensor($sensorSelector: SensorSelector!) {
  startSensor(sensorSelector: $sensorSelector) {
    __typename
    ... on Sensor { name sensorState { status } }
    ... on PythonError { message }
  }
}"""

START_SCHEDULE = """
mutation StartSchedule($scheduleSelector: ScheduleSelector!) {
  startSchedule(scheduleSelector: $scheduleSelector) {
    __typename
    ... on ScheduleStateResult { scheduleState { status } }
    ... on PythonError { message }
  }
}"""

SCHEDULE = """
query Schedule($scheduleSelector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $scheduleSelector) {
    __typename
    ... on Schedule { cronSchedule executionTimezone scheduleState { status }
                      futureTicks(limit: 1) { results { timestamp } } }
    ... on PythonError { message }
  }
}"""


@dataclass
class Run:
    """A run as the runs page lists it (times in seconds since the epoch)."""

    run_id: str
    job_name: str
    status: str
    created: float
    started: float | None
    ended: float | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def partition(self) -> str | None:
        return self.tags.get("dagster/partition")

    @property
    def seconds(self) -> float | None:
        """From the run worker's start to the run's end."""
        return self.ended - self.started if self.started and self.ended else None


class LocalDeployment:
    """`dagster-webserver` and `dagster-daemon` on a fresh DAGSTER_HOME (`home`; its dagster.yaml,
    if any, is the caller's), loading the workspace.yaml of `repo` with `env` added to this
    process's environment."""

    def __init__(self, home: Path, env: dict[str, str], repo: Path = REPO, ready_timeout: float = 180):
        self.home, self.repo, self.ready_timeout = home, repo, ready_timeout
        self.env = {**os.environ, **env, "DAGSTER_HOME": str(home)}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[subprocess.Popen] = []
        self.location: str | None = None

    def __enter__(self) -> LocalDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        # create the instance's storage first: two processes creating SQLite storage at once collide
        subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"], env=self.env, check=True, capture_output=True
        )
        workspace = ["-w", str(self.repo / "workspace.yaml")]
        self._spawn(
            "webserver", [BIN / "dagster-webserver", *workspace, "-h", "127.0.0.1", "-p", str(self.port)]
        )
        self._spawn("daemon", [BIN / "dagster-daemon", "run", *workspace])
        try:
            self.location = self._wait_for_location()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        self.processes.clear()

    def _spawn(self, name: str, command: list) -> None:
        with (self.home / f"{name}.log").open("ab") as log:
            self.processes.append(
                subprocess.Popen(
                    [str(part) for part in command],
                    cwd=self.repo,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def log(self, name: str) -> str:
        return (self.home / f"{name}.log").read_text(errors="replace")

    def _wait_for_location(self) -> str:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes):
                raise RuntimeError(
                    f"a Dagster process exited:\n{self.log('webserver')}\n{self.log('daemon')}"
                )
            try:
                workspace = self.graphql(WORKSPACE)["workspaceOrError"]
            except (httpx.HTTPError, RuntimeError):
                time.sleep(0.5)
                continue
            entries = workspace.get("locationEntries", [])
            if entries and entries[0]["loadStatus"] == "LOADED":
                loaded = entries[0]["locationOrLoadError"]
                if loaded["__typename"] == "PythonError":
                    raise RuntimeError(f"code location failed to load: {loaded['message']}")
                return entries[0]["name"]
            time.sleep(0.5)
        raise TimeoutError(f"the code location did not load within {self.ready_timeout} s")

    # -- GraphQL, as the UI sends it --------------------------------------------------------------

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    @property
    def repository_selector(self) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": "__repository__"}

    def add_partitions(self, partitions_def: str, keys: list[str]) -> None:
        """As the launch dialog's "Add a partition" does, one key at a time."""
        for key in keys:
            added = self.graphql(
                ADD_PARTITION,
                {
                    "partitionsDefName": partitions_def,
                    "partitionKey": key,
                    "repositorySelector": self.repository_selector,
                },
            )["addDynamicPartition"]
            if added["__typename"] != "AddDynamicPartitionSuccess":
                raise RuntimeError(f"adding partition {key!r}: {added}")

    def job_assets(self, job: str) -> list[str]:
        """The assets of a job, as its launch dialog lists them."""
        nodes = self.graphql(JOB_ASSETS, {"pipeline": {**self.repository_selector, "pipelineName": job}})
        return ["/".join(node["assetKey"]["path"]) for node in nodes["assetNodes"]]

    def launch_job_backfill(self, job: str, assets: list[str], partitions: list[str]) -> str:
        """The backfill the launch dialog of an asset job submits (LaunchAssetChoosePartitionsDialog:
        the job's partition set, its assets, the chosen partitions, the UI's tag); its id."""
        launched = self.graphql(
            LAUNCH_BACKFILL,
            {
                "backfillParams": {
                    "tags": [{"key": "dagster/from_ui", "value": "true"}],
                    "assetSelection": [{"path": [asset]} for asset in assets],
                    "partitionNames": partitions,
                    "fromFailure": False,
                    "selector": {
                        "partitionSetName": f"{job}_partition_set",
                        "repositorySelector": self.repository_selector,
                    },
                }
            },
        )["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"launching the backfill: {launched}")
        return launched["backfillId"]

    def launch_run(self, job: str, tags: dict[str, str]) -> str:
        """A run of `job` with `tags` (e.g. its partition), as the launchpad submits it; its id."""
        launched = self.graphql(
            LAUNCH_RUN,
            {
                "executionParams": {
                    "selector": {**self.repository_selector, "pipelineName": job},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                    "runConfigData": {},
                }
            },
        )["launchRun"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launching {job}: {launched}")
        return launched["run"]["runId"]

    def reexecute_from_failure(self, run_id: str) -> str:
        """The run page's "Re-execute from failure"; the new run's id."""
        launched = self.graphql(
            REEXECUTE, {"reexecutionParams": {"parentRunId": run_id, "strategy": "FROM_FAILURE"}}
        )["launchPipelineReexecution"]
        if launched["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"re-executing {run_id}: {launched}")
        return launched["run"]["runId"]

    def backfill_status(self, backfill_id: str) -> str:
        return self.graphql(BACKFILL, {"backfillId": backfill_id})["partitionBackfillOrError"]["status"]

    def runs(self, tags: dict[str, str] | None = None) -> list[Run]:
        filter_ = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        results = self.graphql(RUNS, {"filter": filter_})["runsOrError"]["results"]
        return [
            Run(
                r["runId"],
                r["jobName"],
                r["status"],
                r["creationTime"],
                r["startTime"],
                r["endTime"],
                {t["key"]: t["value"] for t in r["tags"]},
            )
            for r in results
        ]

    def launched(self, run_id: str) -> float:
        """When the daemon launched the run (its RunStartingEvent), before its process started."""
        events = self.graphql(RUN_EVENTS, {"runId": run_id})["logsForRun"]["events"]
        return next(float(e["timestamp"]) / 1000 for e in events if e["__typename"] == "RunStartingEvent")

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> str:
        """Waits until the backfill and all its runs are done; its final status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.backfill_status(backfill_id)
            runs = self.runs({"dagster/backfill": backfill_id})
            if status in TERMINAL_BACKFILL and all(run.status in FINISHED_RUN for run in runs):
                return status
            time.sleep(1)
        raise TimeoutError(f"backfill {backfill_id} still {status} after {timeout} s")

    def wait_for_runs(self, predicate, timeout: float) -> list[Run]:
        """Waits until some finished runs satisfy `predicate(runs)` (all runs, newest first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs()
            if predicate(runs) and all(run.status in FINISHED_RUN for run in runs):
                return runs
            time.sleep(1)
        raise TimeoutError(
            f"runs not as expected after {timeout} s: {[(r.job_name, r.status) for r in runs]}"
        )

    def check_partitions(self, asset: str) -> dict[str, dict[str, list[str]]]:
        """{check: {status: partitions}} of an asset's partitioned checks, as the asset's checks tab
        shows them (statuses such as succeededPartitions, executionFailedPartitions)."""
        node = self.graphql(CHECK_PARTITIONS, {"assetKey": {"path": [asset]}})["assetNodeOrError"]
        return {check["name"]: check["partitionStatuses"] for check in node["assetChecksOrError"]["checks"]}

    def start_sensor(self, name: str) -> None:
        """As the sensor's toggle in the UI does."""
        started = self.graphql(
            START_SENSOR, {"sensorSelector": {**self.repository_selector, "sensorName": name}}
        )["startSensor"]
        if started["__typename"] != "Sensor":
            raise RuntimeError(f"starting sensor {name!r}: {started}")

    def _schedule_selector(self, name: str) -> dict:
        return {"scheduleSelector": {**self.repository_selector, "scheduleName": name}}

    def schedule(self, name: str) -> dict:
        """The schedule as its page shows it: cron, timezone, status and the next tick."""
        return self.graphql(SCHEDULE, self._schedule_selector(name))["scheduleOrError"]

    def start_schedule(self, name: str) -> None:
        """As the schedule's toggle in the UI does."""
        started = self.graphql(START_SCHEDULE, self._schedule_selector(name))["startSchedule"]
        if started["__typename"] != "ScheduleStateResult":
            raise RuntimeError(f"starting schedule {name!r}: {started}")
