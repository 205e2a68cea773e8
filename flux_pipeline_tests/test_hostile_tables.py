"""Hostile or unusual prompt tables, through real runs of the graph against the emulator: every
bad row is a reject naming its field, a table that cannot be read fails naming the file and
commits nothing, and tables other writers produce are read."""

from __future__ import annotations

import base64
import hashlib

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import REDUX, TEXT_TO_IMAGE

from .dataset_fixtures import make_project


@pytest.fixture
def project(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        yield make_project(tmp_path, server, instance)


def run_table(project, name: str, table: pa.Table | pd.DataFrame) -> dg.ExecuteInProcessResult:
    path = project.dataset.layout.table(name)
    if isinstance(table, pd.DataFrame):
        table.to_parquet(path)
    else:
        pq.write_table(table, path)
    return project.run(name)


def rejects_of(project, name: str) -> dict[str, tuple[str, str]]:
    """prompt_id → (field, reason) of the partition's rejects."""
    path = project.dataset.layout.partition_files(name).rejects
    return {r["prompt_id"]: (r["field"], r["reason"]) for r in pq.read_table(path).to_pylist()}


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return str(failure.event_specific_data.user_failure_data.description)


def test_a_data_uri_redux_image_is_sent_as_is_with_its_hash_as_lineage(project):
    png = (project.dataset.layout.prompts_dir / "source_images" / "lighthouse.png").read_bytes()
    uri = f"data:image/png;base64,{base64.b64encode(png).decode()}"
    table = pa.table(
        {
            "prompt_id": ["inline", "not-image", "broken"],
            "prompt": ["a lighthouse"] * 3,
            "image_size": ["square"] * 3,
            "redux_image": [uri, "data:text/plain;base64,aGVsbG8=", "data:image/png;base64,%%%"],
        }
    )
    assert run_table(project, "inline", table).success

    rejects = rejects_of(project, "inline")
    assert rejects["not-image"] == ("redux_image", "the data URI holds 'text/plain', not an image")
    assert rejects["broken"][0] == "redux_image" and "data URI" in rejects["broken"][1]
    redux = project.catalog(["inline"]).set_index("endpoint").loc[REDUX]
    assert redux["parent_source"] == f"data:image/png;sha256={hashlib.sha256(png).hexdigest()}"
    emulator = project.emulator.emulator
    assert emulator.requests[redux["request_id"]].payload["image_url"] == uri, "sent as it is"
    assert not any(name.startswith("upload-") for name in emulator.files), "nothing uploaded"


@pytest.mark.parametrize("character", ["\x00", "\n", "\x1b", "\x7f"])
def test_a_control_character_in_a_redux_path_rejects_the_row(project, character):
    table = pa.table(
        {
            "prompt_id": ["odd", "fine"],
            "prompt": ["a lighthouse"] * 2,
            "image_size": ["square"] * 2,
            "redux_image": [f"source_images/light{character}house.png", "source_images/lighthouse.png"],
        }
    )
    assert run_table(project, "odd", table).success
    field, reason = rejects_of(project, "odd")["odd"]
    assert field == "redux_image" and "control character" in reason
    catalog = project.catalog(["odd"])
    assert set(catalog["prompt_id"]) == {"fine"} and set(catalog["endpoint"]) == {TEXT_TO_IMAGE, REDUX}


def test_a_corrupt_data_page_fails_naming_the_file_and_commits_nothing(project):
    rows = 3000
    table = pa.table({"prompt_id": [f"p{i}" for i in range(rows)], "prompt": ["x"] * rows})
    path = project.dataset.layout.table("corrupt")
    pq.write_table(table.slice(0, 10), path)
    assert project.run("corrupt").success
    files = project.dataset.layout.partition_files("corrupt")
    before = files.prompts.read_bytes(), files.rejects.read_bytes()

    pq.write_table(table, path, row_group_size=1024)
    page = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    with open(path, "r+b") as stream:  # the footer stays valid; a page header in the middle does not
        stream.seek(page)
        stream.write(b"\xff" * 64)
    result = project.run("corrupt")

    assert not result.success
    message = step_failure(result)
    assert str(path) in message and "rows from 1024 on cannot be read" in message
    assert (files.prompts.read_bytes(), files.rejects.read_bytes()) == before, "nothing committed"
    assert not list(files.folder.glob(".*.tmp")), "no temporary file left behind"


def test_seeds_the_catalog_cannot_store_are_rejected_naming_seed(project):
    table = pa.table(
        {
            "prompt_id": ["huge", "fine", "largest"],
            "prompt": ["x"] * 3,
            "image_size": ["square"] * 3,
            "seed": pa.array([2**64 - 1, 7, 2**63 - 1], pa.uint64()),
        }
    )
    assert run_table(project, "seeds", table).success
    assert rejects_of(project, "seeds") == {
        "huge": ("seed", "Input should be less than or equal to 9223372036854775807")
    }
    assert sorted(project.catalog(["seeds"])["seed"]) == [7, 2**63 - 1]


def test_sizes_beyond_fals_limits_are_rejected_naming_the_side(project):
    table = pa.table(
        {
            "prompt_id": ["absurd", "zero", "tall", "largest-thin", "fine"],
            "prompt": ["x"] * 5,
            "width": [100_000, 0, 64, 14_142, 64],
            "height": [100_000, 64, 20_000, 1, 48],
        }
    )
    assert run_table(project, "sizes", table).success
    assert rejects_of(project, "sizes") == {
        "absurd": ("width", "Input should be less than or equal to 14142"),
        "zero": ("width", "Input should be greater than 0"),
        "tall": ("height", "Input should be less than or equal to 14142"),
    }
    catalog = project.catalog(["sizes"]).set_index("prompt_id")
    assert sorted(catalog.index) == ["fine", "largest-thin"]
    assert project.emulator.emulator.stats()["images_billed"] == 2, "nothing absurd was paid for"


def test_rejects_are_summed_up_in_one_log_event(project):
    rows = 30
    table = pa.table(
        {
            "prompt_id": [f"r{i}" for i in range(rows)] + ["ok"],
            "prompt": ["x"] * (rows + 1),
            "num_images": [9] * (rows // 2) + [0] * (rows // 2) + [1],
            "image_size": ["square"] * (rows + 1),
        }
    )
    result = run_table(project, "many", table)
    assert result.success
    warnings = [
        entry.user_message
        for entry in project.instance.all_logs(result.run_id)
        if entry.step_key == "prompts" and entry.level == 30  # logging.WARNING
    ]
    assert len(warnings) == 1
    summary = warnings[0]
    assert "30 row(s) rejected" in summary and "by field: num_images 30" in summary
    assert "15 × num_images: Input should be less than or equal to 4" in summary
    assert "15 × num_images: Input should be greater than or equal to 1" in summary
    assert "row 0 (prompt_id 'r0')" in summary and "prompt_id 'r5'" not in summary, "the first few rows"
    assert len(rejects_of(project, "many")) == rows, "every reject is still in rejects.parquet"


def test_tables_written_with_pandas_categoricals_and_float_integers_are_read(project):
    frame = pd.DataFrame(
        {
            "prompt_id": ["a", "b", "c", "d"],
            "prompt": pd.Categorical(["a calm lake", "a calm lake", "a quiet pond", "a still sea"]),
            "image_size": pd.Categorical(["square", "square", None, "square"]),
            "width": [np.nan, np.nan, 64.0, np.nan],
            "height": [np.nan, np.nan, 48.0, np.nan],
            "seed": [1.0, np.nan, 3.0, 4.5],  # an integer column with gaps: pandas writes floats
            "num_images": pd.array([2, None, 1, 1], dtype="Int64"),
        }
    )
    result = run_table(project, "pandas", frame)
    assert result.success
    assert pa.types.is_dictionary(pq.read_schema(project.dataset.layout.table("pandas")).field("prompt").type)
    assert rejects_of(project, "pandas") == {"d": ("seed", "must be a whole number, not 4.5")}
    catalog = project.catalog(["pandas"])
    assert sorted(catalog["prompt_id"]) == ["a", "a", "b", "c"]
    assert catalog.set_index("prompt_id").loc["c", ["width", "height", "seed"]].tolist() == [64, 48, 3]


def test_tables_with_large_strings_as_polars_writes_them_are_read(project):
    table = pa.table(
        {
            "prompt_id": pa.array(["x", "y"], pa.large_string()),
            "prompt": pa.array(["a red kite", "a blue kite"], pa.large_string()),
            "image_size": pa.array(["square", "square"], pa.string_view()),
            "output_format": pa.array(["png", "jpeg"], pa.large_string()).dictionary_encode(),
            "seed": pa.array([5, 6], pa.uint8()),
        }
    )
    assert run_table(project, "polars", table).success
    catalog = project.catalog(["polars"]).set_index("prompt_id")
    assert catalog.loc["x", "output_format"] == "png" and catalog.loc["y", "seed"] == 6


def test_a_redux_file_swapped_for_a_symlink_out_after_prompts_fails_its_row_and_is_not_sent(
    project, tmp_path
):
    folder = project.dataset.layout.prompts_dir / "source_images"
    (folder / "mine.png").write_bytes((folder / "lighthouse.png").read_bytes())
    table = pa.table(
        {
            "prompt_id": ["swapped", "kept"],
            "prompt": ["a lighthouse"] * 2,
            "image_size": ["square"] * 2,
            "redux_image": ["source_images/mine.png", "source_images/lighthouse.png"],
        }
    )
    pq.write_table(table, project.dataset.layout.table("swap"))
    project.instance.add_dynamic_partitions("prompt_tables", ["swap"])
    assert materialize(project, "swap", ["prompts", "images"]).success

    private = tmp_path / "private.png"
    private.write_bytes(b"\x89PNG private bytes that must never leave this machine")
    (folder / "mine.png").unlink()
    (folder / "mine.png").symlink_to(private)
    assert materialize(project, "swap", ["redux_variations"]).success

    failures = pq.read_table(
        project.dataset.layout.partition_files("swap").step_failures("variations")
    ).to_pylist()
    assert [(f["prompt_id"], f["field"]) for f in failures] == [("swapped", "redux_image")]
    assert "no longer a file inside the prompts folder" in failures[0]["error"]
    emulator = project.emulator.emulator
    uploaded = [stored.data for name, stored in emulator.files.items() if name.startswith("upload-")]
    assert uploaded == [(folder / "lighthouse.png").read_bytes()], "only the file inside was sent"


def materialize(project, partition: str, assets: list[str]) -> dg.ExecuteInProcessResult:
    """Some assets of the graph alone, as from the UI."""
    job = dg.define_asset_job("some_assets", selection=assets)
    defs = dg.Definitions.merge(project.defs, dg.Definitions(jobs=[job]))
    return defs.resolve_job_def("some_assets").execute_in_process(
        partition_key=partition, instance=project.instance, raise_on_error=False
    )
