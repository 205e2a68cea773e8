"""The FluxDataset component as a team uses it: a fresh dg project made by `create-dagster`, the
component listed by `dg list components` and scaffolded by `dg scaffold defs`, its YAML edited and
checked by `dg check defs` (a bad key named by its path, before any run), then two datasets of the
same code location each building a partition against the emulator over HTTP: their keys, partitions,
folders, ledgers and cost reports apart, and billed == cataloged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from .conftest import SECRETS, clean_env, emulator_env

BIN = Path(sys.executable).parent
PROJECT = "teamproj"
BUILD = """
import json, sys
import dagster as dg
from upath import UPath
from flux_pipeline.dataset.catalog.table import read_catalog
from teamproj.definitions import defs

defs = defs()
instance = dg.DagsterInstance.ephemeral()
done = {}
for name in sys.argv[1:]:
    instance.add_dynamic_partitions(f"{name}__prompt_tables", ["garden"])
    result = defs.resolve_job_def(f"{name}__build_dataset").execute_in_process(
        partition_key="garden", instance=instance, raise_on_error=False
    )
    report = defs.resolve_job_def(f"{name}__report_costs").execute_in_process(instance=instance)
    done[name] = {
        "success": result.success and report.success,
        "catalog": len(read_catalog(UPath(f"data/{name}/catalog"))),
        "keys": sorted(k.to_user_string() for k in defs.resolve_all_asset_keys() if k.path[0] == name),
    }
print(json.dumps(done))
"""


def run(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


def write_table(path: Path, rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = [
        {"prompt_id": f"g{i}", "prompt": f"a garden bird, number {i}", "image_size": "square_hd"}
        for i in range(rows)
    ]
    pq.write_table(pa.Table.from_pylist(table), path)


@pytest.fixture
def team_project(tmp_path, emulator) -> tuple[Path, dict]:
    """A fresh dg project, made as a team makes one, with flux_pipeline in its environment."""
    env = clean_env(**emulator_env(emulator), FAL_API_URL=emulator.url, DAGSTER_DG_UPDATE_CHECK_ENABLED="0")
    made = run(env, str(BIN / "create-dagster"), "project", "--no-uv-sync", PROJECT, cwd=tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    root = tmp_path / PROJECT
    return root, {**env, "PYTHONPATH": str(root / "src")}


def test_a_team_adds_two_flux_datasets_to_its_own_project_in_yaml(team_project, emulator):
    root, env = team_project
    dg_ = str(BIN / "dg")
    listed = run(env, dg_, "list", "components", "--json", cwd=root)
    assert "flux_pipeline.components.FluxDataset" in {c["key"] for c in json.loads(listed.stdout)["items"]}, (
        listed.stderr
    )

    for name in ("birds", "fish"):
        scaffolded = run(env, dg_, "scaffold", "defs", "flux_pipeline.components.FluxDataset", name, cwd=root)
        assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    definition = root / "src" / PROJECT / "defs" / "birds" / "defs.yaml"
    document = yaml.safe_load(definition.read_text())
    assert document["type"] == "flux_pipeline.components.FluxDataset"
    assert (
        document["attributes"]["data_dir"] == "data/birds" and (root / "data" / "birds" / "prompts").is_dir()
    )
    assert document["attributes"]["schedule"]["enabled"] is False, "the schedule is off by default"

    document["attributes"]["budget_usd"] = 2.5
    document["attributes"]["unknown_setting"] = 1
    definition.write_text(yaml.safe_dump(document))
    refused = run(env, dg_, "check", "defs", cwd=root)
    assert refused.returncode != 0
    assert "attributes.unknown_setting" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    del document["attributes"]["unknown_setting"]
    document["attributes"]["export"]["formats"] = ["tar"]
    definition.write_text(yaml.safe_dump(document))
    refused = run(env, dg_, "check", "defs", cwd=root)
    said = refused.stdout + refused.stderr
    assert (
        refused.returncode != 0
        and "birds/defs.yaml" in said
        and "attributes.export" in said
        and "'tar'" in said
    )
    document["attributes"]["export"]["formats"] = ["hf_paths"]
    definition.write_text(yaml.safe_dump(document))
    checked = run(env, dg_, "check", "defs", cwd=root)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    write_table(root / "data" / "birds" / "prompts" / "garden.parquet", 3)
    write_table(root / "data" / "fish" / "prompts" / "garden.parquet", 2)
    built = run(env, sys.executable, "-c", BUILD, "birds", "fish", cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    done = json.loads(built.stdout.strip().splitlines()[-1])
    assert done["birds"]["success"] and done["fish"]["success"]
    assert (done["birds"]["catalog"], done["fish"]["catalog"]) == (3, 2), "each dataset its own partition"
    assert emulator.emulator.stats()["images_billed"] == 5, (
        "billed == cataloged: neither paid the other's rows"
    )
    assert "birds/prompts" in done["birds"]["keys"] and "fish/catalog" in done["fish"]["keys"]
    for name, images in (("birds", 3), ("fish", 2)):
        report = pq.read_table(root / "data" / name / "reports" / "cost_by_partition.parquet").to_pylist()
        assert report[-1]["partition"] == "TOTAL" and report[-1]["images"] == images, (
            "a cost report per dataset"
        )
    birds_export = root / "data" / "birds" / "exports" / "garden"
    assert {p.name for p in next(p for p in birds_export.iterdir() if p.is_dir()).iterdir()} == {
        "hf_paths",
        "manifest.json",
    }, "the YAML's export formats"
    assert not any(secret in built.stdout + built.stderr for secret in SECRETS)
