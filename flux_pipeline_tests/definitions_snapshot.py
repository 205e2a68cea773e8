"""What the code location exposes, as plain data: every asset (its dependencies, partitions,
group, kinds, pool, code version, automation condition), check, job, sensor and schedule.
`python -m flux_pipeline_tests.definitions_snapshot` rewrites the snapshot the tests compare with;
do that only for a change of the code location that is meant."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def _asset(spec: dg.AssetSpec) -> dict:
    condition = spec.automation_condition
    return {
        "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
        "partitions": getattr(spec.partitions_def, "name", None),
        "group": spec.group_name,
        "kinds": sorted(spec.kinds),
        "code_version": spec.code_version,
        "automation": condition.get_label() if condition else None,
    }


def _job(job: dg.JobDefinition) -> dict:
    return {
        "assets": sorted(key.to_user_string() for key in job.asset_layer.executable_asset_keys),
        "checks": sorted(key.to_user_string() for key in job.asset_layer.asset_graph.asset_check_keys),
    }


def snapshot(defs: dg.Definitions) -> dict:
    graph = defs.resolve_asset_graph()
    return {
        "assets": {spec.key.to_user_string(): _asset(spec) for spec in defs.resolve_all_asset_specs()},
        "pools": {
            key.to_user_string(): sorted(graph.get(key).pools or [])
            for key in graph.get_all_asset_keys()
            if graph.get(key).is_executable
        },
        "checks": {
            key.to_user_string(): {"blocking": graph.get_check_spec(key).blocking}
            for key in graph.asset_check_keys
        },
        "jobs": {job.name: _job(job) for job in defs.resolve_all_job_defs() if not job.name.startswith("__")},
        "sensors": {
            sensor.name: {
                "default_status": sensor.default_status.value,
                "jobs": sorted(target.job_name for target in sensor.targets),
            }
            for sensor in defs.sensors or []
        },
        "schedules": {
            schedule.name: {
                "cron": schedule.cron_schedule,
                "job": schedule.job_name,
                "default_status": schedule.default_status.value,
            }
            for schedule in defs.schedules or []
        },
        "resources": sorted(defs.resources or {}),
    }


if __name__ == "__main__":
    from flux_pipeline.definitions import defs

    SNAPSHOT.write_text(json.dumps(snapshot(defs), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
