"""The floor of any Dagster job of build_dataset's shape: the same assets, dependencies and asset
checks, doing nothing, run in process on a local SQLite instance from a fresh process (what
benchmarks.whole_job times as `floor`). No project code is imported in the timed process: its
shape comes in as JSON from `shape()`, read by the parent.

    python -m benchmarks.dagster_floor '<json shape>'
"""

from __future__ import annotations

import json
import sys

import dagster as dg


def shape() -> str:
    """build_dataset's assets (with their parents inside the job) and checks, as JSON."""
    from flux_pipeline.definitions import defs

    graph = defs.resolve_job_def("build_dataset").asset_layer.asset_graph
    assets = {
        key.to_user_string(): [parent.to_user_string() for parent in graph.get(key).parent_keys]
        for key in graph.executable_asset_keys
    }
    checks = [[key.asset_key.to_user_string(), key.name] for key in graph.asset_check_keys]
    return json.dumps({"assets": assets, "checks": checks})


def main() -> None:
    spec = json.loads(sys.argv[1])

    def no_op_asset(name: str, parents: list[str]) -> dg.AssetsDefinition:
        @dg.asset(name=name, deps=parents)
        def nothing() -> dg.MaterializeResult:
            return dg.MaterializeResult(metadata={"rows": 0})

        return nothing

    def no_op_check(asset: str, name: str) -> dg.AssetChecksDefinition:
        @dg.asset_check(asset=asset, name=name)
        def passes() -> dg.AssetCheckResult:
            return dg.AssetCheckResult(passed=True)

        return passes

    defs = dg.Definitions(
        assets=[no_op_asset(name, parents) for name, parents in spec["assets"].items()],
        asset_checks=[no_op_check(asset, name) for asset, name in spec["checks"]],
        jobs=[dg.define_asset_job("floor", selection=list(spec["assets"]))],
    )
    result = defs.resolve_job_def("floor").execute_in_process(instance=dg.DagsterInstance.get())
    if not result.success:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
