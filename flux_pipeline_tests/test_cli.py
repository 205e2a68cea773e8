"""`flux-pipeline run` as a person runs it: the installed command in a process of its own, against
the emulator over HTTP with a key configured. The command leaves without tearing the interpreter
down (cli.entry_point), so what it printed, the instance and the files must be whole when it exits.
And the process's memory settings (flux_pipeline.memory) hold in every process that imports the
package, unless the person chose otherwise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from flux_pipeline.dataset.catalog.table import read_catalog

from .conftest import SECRETS, clean_env, emulator_env
from .dataset_fixtures import write_table

BIN = Path(sys.executable).parent


def cli_env(emulator, tmp_path: Path) -> dict[str, str]:
    return clean_env(
        **emulator_env(emulator),
        FAL_API_URL=emulator.url,
        FLUX_DATA_DIR=str(tmp_path / "data"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
    )


def flux_pipeline(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flux-pipeline"), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_flux_pipeline_run_builds_prints_and_exits_whole(emulator, tmp_path, monkeypatch):
    write_table(tmp_path / "data" / "prompts" / "cli.parquet", rows=5)
    env = cli_env(emulator, tmp_path)
    done = flux_pipeline(env, "run", "--partition", "cli")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "partition cli: ok" in done.stdout
    assert "spent $0.0000, emulated $0.2000 (nothing paid))" in done.stdout, "emulated is not spent"
    total = done.stdout.rstrip().splitlines()[-1].split()
    assert total[:2] == ["TOTAL", "5"], done.stdout  # the cost table's last line, flushed before exit
    assert not any(secret in done.stdout + done.stderr for secret in SECRETS)
    assert len(read_catalog(tmp_path / "data" / "catalog", ["cli"])) == 5
    assert emulator.emulator.stats()["images_billed"] == 5
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    with dg.DagsterInstance.get() as instance:
        runs = instance.get_runs()
        assert {run.job_name for run in runs} == {"build_dataset", "report_costs"}
        assert all(run.is_success for run in runs)
        assert instance.get_latest_materialization_event(dg.AssetKey("cost_report")) is not None


def test_a_failed_partition_says_why_on_its_line_and_last(emulator, tmp_path):
    """A table without its `prompt` column fails its partition, not the others; the person reads
    why on the partition's line (not only inside Dagster's trace), and the failure comes last."""
    prompts = tmp_path / "data" / "prompts"
    write_table(prompts / "good.parquet", rows=2)
    pq.write_table(pa.table({"prompt_id": ["a"], "seed": [1]}), prompts / "broken.parquet")
    env = cli_env(emulator, tmp_path)
    done = flux_pipeline(env, "run")
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    failed = next(n for n, line in enumerate(lines) if line.startswith("partition broken: FAILED"))
    assert lines[failed + 1].startswith("  prompts: prompt table ")
    assert lines[failed + 1].endswith("missing required column(s) prompt")
    assert any(line.startswith("partition good: ok") for line in lines)
    assert lines[-1] == "FAILED: broken (why: on each one's 'partition' line above)"
    assert len(read_catalog(tmp_path / "data" / "catalog", ["good"])) == 2
    assert emulator.emulator.stats()["images_billed"] == 2

    unknown = flux_pipeline(env, "spend", "--backfill", "nosuchbackfill")
    assert unknown.returncode == 2 and "no backfill 'nosuchbackfill'" in unknown.stderr


ARROW_PROBE = """
import flux_pipeline.definitions, numpy, pyarrow, pyarrow.compute

def rss_mb():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024

ones, before = numpy.ones(1 << 17), rss_mb()
held = [pyarrow.compute.add(ones, 1) for _ in range(32)]  # 32 buffers of 1 MiB, written by Arrow
del held
print(pyarrow.default_memory_pool().backend_name, round(rss_mb() - before))
"""


def arrow_in_a_fresh_process(**env: str) -> tuple[str, int]:
    """Arrow's pool in a new process that imports the definitions, and how many MB of 32 MB it
    allocated and freed the process still holds."""
    pool, kept = subprocess.run(
        [sys.executable, "-c", ARROW_PROBE], env=clean_env(**env), capture_output=True, text=True, check=True
    ).stdout.split()
    return pool, int(kept)


def test_arrow_allocates_with_jemalloc_and_frees_at_once_unless_the_person_chose_otherwise():
    pool, kept = arrow_in_a_fresh_process()
    assert pool == "jemalloc" and kept < 8
    assert arrow_in_a_fresh_process(ARROW_DEFAULT_MEMORY_POOL="system")[0] == "system"
    decaying = "dirty_decay_ms:60000,muzzy_decay_ms:60000"
    assert arrow_in_a_fresh_process(JE_ARROW_MALLOC_CONF=decaying)[1] > 24


def test_loading_the_definitions_leaves_what_only_some_steps_need_to_them():
    """`datasets` (0.3 s and 26 MB to import) loads with the export's writers; cryptography (8 MB)
    and the server stack with a webhook receiver."""
    probe = (
        "import sys, flux_pipeline.definitions; "
        "print(*[name in sys.modules for name in ('datasets', 'cryptography', 'starlette')])"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], env=clean_env(), capture_output=True, text=True, check=True
    )
    assert loaded.stdout.split() == ["False", "False", "False"]
