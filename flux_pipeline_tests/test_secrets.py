"""The fal key, read through EnvVar as in production, appears nowhere the pipeline writes."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

from flux_pipeline.definitions import fal_from_env, make_definitions
from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.faults import FaultConfig
from flux_pipeline.emulator.server import EmulatorServer

from .conftest import SECRET_KEY, free_port
from .dataset_fixtures import SAMPLE_PROMPTS, dataset_for


def test_key_is_absent_from_logs_events_metadata_catalog_ledger_and_errors(
    tmp_path, monkeypatch, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    faults = FaultConfig.spread(0.3, seed=3, slow_status_seconds=1.5)
    with (
        EmulatorServer(EmulatorConfig(latency=0.02, faults=faults)) as server,
        dg.instance_for_test() as instance,
    ):
        monkeypatch.setenv("FAL_KEY", SECRET_KEY)
        monkeypatch.setenv("FAL_QUEUE_URL", server.url)
        monkeypatch.setenv("FAL_RUN_URL", f"{server.url}/run")
        monkeypatch.setenv("FAL_STORAGE_URL", server.url)
        fal = fal_from_env().model_copy(update={"http_timeout": 1.0, "webhook_port": free_port()})
        import shutil

        shutil.copytree(SAMPLE_PROMPTS, tmp_path / "prompts")
        defs = make_definitions(fal, dataset_for(tmp_path))
        instance.add_dynamic_partitions("prompt_tables", ["animals", "landscapes"])
        runs = [
            defs.resolve_job_def("build_dataset").execute_in_process(
                partition_key=key, instance=instance, raise_on_error=False
            )
            for key in ("animals", "landscapes")
        ]
        assert all(run.success for run in runs)
        assert server.emulator.stats()["faults_injected"], "the run went through failures and retries"

        texts = [caplog.text, *capfd.readouterr(), repr(fal), str(fal)]
        for run in runs:
            record = instance.get_run_by_id(run.run_id)
            texts.append(repr(record.run_config))
            texts.extend(repr(entry) for entry in instance.all_logs(run.run_id))
        assert any("rejected" in t for t in texts), "the scan covers the rejected row's warning"
        for text in texts:
            assert SECRET_KEY not in text

    written = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in written) and any(p.name == "data.parquet" for p in written)
    for path in written:
        assert SECRET_KEY.encode() not in path.read_bytes(), path
