"""The whole asset graph through a real DagsterInstance against the emulator."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flux_pipeline.dataset.catalog.table import partition_file
from flux_pipeline.dataset.files.image_hashes import from_int64, perceptual_hash_of
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import REDUX, TEXT_TO_IMAGE
from flux_pipeline.lib.partitions import prompt_tables

from .conftest import fal_stand_in, request_stats
from .dataset_fixtures import make_project

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path):
    with EmulatorServer(fal_stand_in(latency=0.05)) as server, dg.instance_for_test() as instance:
        yield make_project(tmp_path, server, instance)


def check_results(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_whole_graph_catalog_matches_what_the_emulator_returned(project):
    for partition in ("animals", "landscapes"):
        result = project.run(partition)
        assert result.success, partition
        assert all(e.passed for e in check_results(result).values())

    assert project.report().success
    catalog = project.catalog()
    emulator = project.emulator.emulator
    assert len(catalog) == emulator.stats()["images_billed"] == 11
    assert catalog["image_id"].is_unique
    by_pandas = pd.read_parquet(project.dataset.layout.catalog_dir)  # the README's way to read it
    assert sorted(by_pandas["image_id"]) == sorted(catalog["image_id"])
    assert by_pandas.groupby("partition", observed=True).size().to_dict() == {"animals": 7, "landscapes": 4}
    assert round(catalog["cost_usd"].sum(), 2) == emulator.stats()["cost_usd"] == 0.44

    for row in catalog.itertuples():
        request = emulator.requests[row.request_id]
        body = request.body
        assert request.endpoint == row.endpoint
        assert body["seed"] == row.seed
        assert body["has_nsfw_concepts"][row.image_index] == row.nsfw
        image = body["images"][row.image_index]
        assert (image["width"], image["height"]) == (row.width, row.height)
        served = emulator.own_file(image["url"]).data
        assert hashlib.sha256(served).hexdigest() == row.content_hash
        assert (project.dataset.layout.outputs_dir / row.file_path).read_bytes() == served
        assert from_int64(row.perceptual_hash) == perceptual_hash_of(served), "hashed once, when stored"
        assert row.billed_megapixels == math.ceil(row.width * row.height / 1024**2)
        assert row.cost_usd == pytest.approx(row.billed_megapixels * 0.04)
        assert row.prompt == request.payload["prompt"] and row.returned_prompt == body["prompt"]
        assert (
            row.run_id
            and row.code_version
            and row.unit_price == 0.04
            and row.price_source == "fal"
            and row.backend
        )

    by_prompt = catalog.set_index(["prompt_id", "endpoint", "image_index"])
    assert by_prompt.loc[("owl-01", TEXT_TO_IMAGE, 1), "seed"] == 102, "two images, one seed"
    assert by_prompt.loc[("otter-01", TEXT_TO_IMAGE, 0), ["width", "height", "output_format"]].tolist() == [
        640,
        480,
        "png",
    ]
    heron_parent = by_prompt.loc[("heron-01", TEXT_TO_IMAGE, 0), "image_id"]
    heron_redux = by_prompt.loc[("heron-01", REDUX, 0)]
    assert (
        heron_redux["parent_image_id"] == heron_parent
        and heron_redux["prompt"] == "the same heron, watercolour"
    )
    coast_redux = by_prompt.loc[("coast-01", REDUX, 0)]
    assert pd.isna(coast_redux["parent_image_id"])
    assert coast_redux["parent_source"].endswith("source_images/lighthouse.png")
    assert emulator.requests[coast_redux["request_id"]].payload["num_inference_steps"] == 20
    desert = by_prompt.loc[("desert-01", TEXT_TO_IMAGE, 0)]
    assert desert["returned_prompt"] != desert["prompt"], "enhance_prompt returns the enhanced prompt"
    assert "lynx-01" not in set(catalog["prompt_id"])

    reports = project.dataset.layout.reports_dir
    report = pd.read_parquet(reports / "cost_by_partition.parquet").set_index("partition")
    assert report.loc["animals", "images"] == 7 and report.loc["landscapes", "images"] == 4
    total = report.loc["TOTAL"]
    assert total["partition_cost_usd"] == total["spent_usd"] == pytest.approx(0.44)
    assert report.loc["TOTAL", "redux_images"] == 2
    runs = pd.read_parquet(reports / "cost_by_run.parquet")
    assert len(runs) == 2 and runs["spent_usd"].sum() == pytest.approx(0.44)
    days = pd.read_parquet(reports / "cost_by_day.parquet")
    assert days["spent_usd"].sum() == pytest.approx(0.44) and days["requests_billed"].sum() == 10


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    events = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    return {m.asset_key.to_user_string(): {k: v.value for k, v in m.metadata.items()} for m in events}


def test_materialization_metadata(project):
    result = project.run("animals")
    metadata = materializations(result)
    assert metadata["prompts"]["rejected_rows"] == 1
    assert metadata["prompts"]["estimated_cost_usd"] == pytest.approx(0.28), "6 megapixels + 1 Redux"
    assert metadata["prompts"]["estimated_megapixels"] == 7
    assert metadata["images"]["images"] == 6
    assert metadata["images"]["spent_usd"] == metadata["images"]["partition_cost_usd"] == pytest.approx(0.24)
    assert metadata["images"]["spent_megapixels"] == 6 and metadata["redux_variations"]["spent_usd"] == 0.04
    assert metadata["images"]["fal_calls"] >= 4 * 5 and metadata["images"]["fal_retries"] == 0
    assert metadata["images"]["fal_latency_p50_s"] > 0
    assert next(iter(metadata["images"])) == "spent_usd", "the number people plot comes first"

    again = materializations(project.run("animals"))
    assert again["prompts"]["estimated_cost_usd"] == 0 and again["prompts"]["paid_requests"] == 6
    assert again["images"]["spent_usd"] == again["redux_variations"]["spent_usd"] == 0, "nothing billed again"
    assert again["images"]["partition_cost_usd"] == pytest.approx(0.24), "the partition's value is unchanged"
    assert again["catalog"]["partition_cost_usd"] == pytest.approx(0.28)
    assert metadata["catalog"]["preview"].startswith("![animals contact sheet](data:image/png;base64,")
    assert len(metadata["catalog"]["catalog_preview"].records) == 7


def test_queue_logs_reach_the_dagster_log(project):
    result = project.run("landscapes")
    messages = [e.message for e in project.instance.all_logs(result.run_id) if e.message]
    forwarded = [m for m in messages if " logs: step 1/28 | step 2/28" in m]
    assert len(forwarded) == 3 and all(m.endswith("step 28/28") for m in forwarded)
    assert any(" logs: step 1/20 |" in m for m in messages), "the Redux request ran 20 steps"


def test_rematerializing_replaces_the_partition_rows(project):
    assert project.run("animals").success
    first = project.catalog()
    billed = request_stats(project.emulator)
    assert project.run("animals").success
    second = project.catalog()
    assert len(second) == len(first) == 7
    assert sorted(second["image_id"]) == sorted(first["image_id"])
    assert request_stats(project.emulator) == billed, "a finished partition makes zero requests"
    assert set(second["run_id"]) == set(first["run_id"]), "rows keep the run that paid for them"
    images = list((project.dataset.layout.partition_files("animals").folder / "images").iterdir())
    assert len(images) == 7, "the same stable file names are overwritten"


def test_invalid_row_is_rejected_with_its_reason_and_neighbours_succeed(project):
    assert project.run("animals").success
    rejects = pq.read_table(
        project.dataset.layout.partition_files("animals").folder / "rejects.parquet"
    ).to_pylist()
    assert rejects == [
        {
            "row": 4,
            "prompt_id": "lynx-01",
            "field": "num_images",
            "reason": "Input should be less than or equal to 4",
        }
    ]
    assert set(project.catalog()["prompt_id"]) == {"fox-01", "owl-01", "otter-01", "heron-01", "seal-01"}


def test_redux_images_must_be_files_inside_the_prompts_folder(project, tmp_path):
    outside = tmp_path / "private.png"
    outside.write_bytes(
        (project.dataset.layout.prompts_dir / "source_images" / "lighthouse.png").read_bytes()
    )
    (project.dataset.layout.prompts_dir / "source_images" / "link.png").symlink_to(outside)
    sources = [
        "../private.png",
        str(outside),
        "s3://someone-else/image.png",
        "source_images/link.png",
        "source_images/missing.png",
        "source_images/lighthouse.png",
    ]
    pq.write_table(
        pa.table(
            {
                "prompt_id": [f"r{i}" for i in range(len(sources))],
                "prompt": ["a lighthouse"] * len(sources),
                "image_size": ["square"] * len(sources),
                "redux_image": sources,
            }
        ),
        project.dataset.layout.prompts_dir / "sources.parquet",
    )
    assert project.run("sources").success
    rejects = pq.read_table(
        project.dataset.layout.partition_files("sources").folder / "rejects.parquet"
    ).to_pylist()
    assert [(r["prompt_id"], r["field"]) for r in rejects] == [(f"r{i}", "redux_image") for i in range(5)]
    assert all("not a path inside the prompts folder" in r["reason"] for r in rejects[:4])
    assert "not found" in rejects[4]["reason"]
    catalog = project.catalog(["sources"])
    assert sorted(zip(catalog["prompt_id"], catalog["endpoint"])) == [("r5", TEXT_TO_IMAGE), ("r5", REDUX)]


def test_an_over_budget_partition_fails_its_check_before_anything_is_sent(project):
    result = project.with_settings(budget_usd=0.10).run("animals")
    assert not result.success
    check = check_results(result)["estimate_within_budget"]
    assert not check.passed and check.metadata["estimated_cost_usd"].value == pytest.approx(0.28)
    assert "exceeds the budget of $0.10" in check.description
    assert request_stats(project.emulator)["requests_submitted"] == 0
    assert project.emulator.emulator.stats()["cost_usd"] == 0, "a backfill of it spends $0"


def test_budget_runs_out_mid_partition(project):
    """The second line of defence: `images` materialized on its own, past the estimate's check."""
    assert project.materialize("animals", "prompts").success
    limited = project.with_settings(budget_usd=0.10)
    result = limited.materialize("animals", "images")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.message + str(failure.event_specific_data.user_failure_data)
    assert "budget of $0.10" in message and "not sent" in message
    billed = project.emulator.emulator.stats()["cost_usd"]
    assert 0 < billed <= 0.10
    spent = pq.read_table(
        limited.dataset.layout.partition_files("animals").folder / "generated.parquet"
    ).to_pandas()
    assert spent["cost_usd"].sum() == pytest.approx(billed), "what was paid for is kept"


def test_checks_catch_a_corrupted_file(project):
    assert project.run("animals").success
    row = project.catalog().iloc[0]
    path = project.dataset.layout.outputs_dir / row.file_path
    path.write_bytes(path.read_bytes()[:-10])
    evaluation = run_checks(project, "animals", ["files_match_hashes"])["files_match_hashes"]
    assert not evaluation.passed and evaluation.metadata["hash_mismatches"].value == 1
    assert evaluation.metadata["examples"].value == row.image_id


def test_checks_catch_duplicate_rows_and_wrong_costs(project):
    assert project.run("animals").success
    path = partition_file(project.dataset.layout.catalog_dir, "animals")
    rows = pq.read_table(path)
    cheap = pa.Table.from_pylist([{**rows.slice(0, 1).to_pylist()[0], "cost_usd": 0.01}], schema=rows.schema)
    pq.write_table(pa.concat_tables([rows, cheap]), path)
    evaluations = run_checks(project, "animals", ["unique_image_ids", "cost_recomputes"])
    assert not evaluations["unique_image_ids"].passed
    assert evaluations["unique_image_ids"].metadata["examples"].value == rows["image_id"][0].as_py()
    assert not evaluations["cost_recomputes"].passed
    assert evaluations["cost_recomputes"].metadata["wrong_costs"].value == 1
    assert evaluations["cost_recomputes"].metadata["rows"].value == 8


def run_checks(project, partition: str, checks: list[str]) -> dict[str, dg.AssetCheckEvaluation]:
    """Execute some catalog checks alone on a materialized partition, as from the UI."""
    keys = [dg.AssetCheckKey(dg.AssetKey("catalog"), name) for name in checks]
    checks_job = dg.define_asset_job(
        "catalog_checks", selection=dg.AssetSelection.checks(*keys), partitions_def=prompt_tables
    )
    defs = dg.Definitions.merge(project.defs, dg.Definitions(jobs=[checks_job]))
    # a checks-only job takes its partition as a run tag (Dagster 1.13 cannot infer it from checks)
    result = defs.resolve_job_def("catalog_checks").execute_in_process(
        tags={"dagster/partition": partition}, instance=project.instance, raise_on_error=False
    )
    return check_results(result)


def test_nsfw_rate_check_warns(project):
    table = pa.Table.from_pylist(
        [
            {"prompt_id": f"p{i}", "prompt": "nsfw test" if i < 2 else "calm lake", "image_size": "square"}
            for i in range(4)
        ]
    )
    pq.write_table(table, project.dataset.layout.prompts_dir / "flagged.parquet")
    result = project.run("flagged")
    assert result.success
    evaluation = check_results(result)["nsfw_rate"]
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["nsfw_rate"].value == 0.5
    assert project.catalog(["flagged"])["nsfw"].sum() == 2


@pytest.mark.parametrize(
    "content,problem",
    [
        (b"not parquet at all", "not a readable Parquet file"),
        (pa.table({"prompt_id": ["a"]}), "missing required column(s) prompt"),
        (pa.table({"prompt_id": ["a"], "prompt": [3]}), "column 'prompt' has type int64"),
        (pa.table({"prompt_id": pa.array([], pa.string()), "prompt": pa.array([], pa.string())}), "no rows"),
        (pa.table({"prompt_id": ["a"], "prompt": ["x"], "num_image": [2]}), "unknown column(s) num_image"),
    ],
)
def test_malformed_table_fails_naming_file_and_problem(project, content, problem):
    path = project.dataset.layout.prompts_dir / "broken.parquet"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        pq.write_table(content, path)
    assert project.run("animals").success
    result = project.run("broken")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.user_failure_data.description)
    assert str(path) in message and problem in message
    assert set(project.catalog()["partition"]) == {"animals"}, "other partitions are untouched"


def sense(project, cursor=None, apply=False) -> dg.SensorResult:
    """One tick of prompt_table_sensor; with `apply`, what the sensor daemon then records."""
    with dg.build_sensor_context(instance=project.instance, cursor=cursor) as context:
        result = project.defs.resolve_sensor_def("prompt_table_sensor")(context)
    if apply:
        for request in result.dynamic_partitions_requests:
            project.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        for event in result.asset_events:
            project.instance.report_runless_asset_event(event)
    return result


def test_sensor_registers_new_tables_and_reruns_changed_ones(project):
    dataset = project.dataset
    first = sense(project, apply=True)
    assert sorted(r.partition_key for r in first.run_requests) == ["animals", "landscapes"]
    assert first.dynamic_partitions_requests[0].partition_keys == ["animals", "landscapes"]

    again = sense(project, first.cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == [] and again.asset_events == []

    pq.write_table(
        pa.table({"prompt_id": ["n"], "prompt": ["new prompt"]}),
        dataset.layout.prompts_dir / "landscapes.parquet",
    )
    (dataset.layout.prompts_dir / "animals.parquet").unlink()
    changed = sense(project, again.cursor)
    assert [r.partition_key for r in changed.run_requests] == ["landscapes"]
    assert changed.dynamic_partitions_requests == [], "a deleted table keeps its partition"
    assert project.instance.get_dynamic_partitions("prompt_tables") == ["animals", "landscapes"]


def test_sensor_first_tick_adopts_tables_already_built(project, capsys):
    """After `flux-pipeline run` built a table, turning the sensor on runs only what is not built
    from its current table, and says once which partitions have no table."""
    assert project.run("animals").success
    project.instance.add_dynamic_partitions("prompt_tables", ["ghost"])
    first = sense(project, apply=True)
    assert [r.partition_key for r in first.run_requests] == ["landscapes"]
    assert {e.partition for e in first.asset_events} == {"animals", "landscapes"}, "versions are recorded"
    assert sense(project, first.cursor).run_requests == []
    log = capsys.readouterr().err  # the sensor's log, as its tick shows it
    assert "already built from their current table: animals" in log
    assert log.count("ghost have no prompt table") == 1, "said once"
    lost_cursor = sense(project)
    assert [r.partition_key for r in lost_cursor.run_requests] == ["landscapes"]
    assert lost_cursor.asset_events == [], "versions already recorded are not recorded again"

    path = project.dataset.layout.table("animals")
    pq.write_table(pq.read_table(path).slice(0, 3), path)
    assert [r.partition_key for r in sense(project, first.cursor).run_requests] == ["animals"]


def test_a_partition_without_a_table_fails_clearly(project):
    project.instance.add_dynamic_partitions("prompt_tables", ["ghost"])
    result = project.run("ghost")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.user_failure_data.description
    assert message.startswith("partition 'ghost' has no prompt table: expected ")
    assert message.split("expected ")[1].startswith(str(project.dataset.layout.table("ghost")))


DATASET_ASSETS = ["prompts", "images", "redux_variations", "catalog", "training_export"]


def requested(evaluation) -> dict[str, set]:
    return {
        key: evaluation.get_requested_partitions(dg.AssetKey(key))
        for key in [*DATASET_ASSETS, "cost_report"]
        if evaluation.get_num_requested(dg.AssetKey(key))
    }


def test_automation_runs_missing_partitions_with_a_table_once(project):
    assert project.run("animals").success
    project.record_table_versions("animals", "landscapes")
    project.instance.add_dynamic_partitions("prompt_tables", ["landscapes", "ghost"])  # ghost: no table

    first = dg.evaluate_automation_conditions(project.defs, project.instance)
    assert requested(first) == {**{key: {"landscapes"} for key in DATASET_ASSETS}, "cost_report": {None}}
    second = dg.evaluate_automation_conditions(project.defs, project.instance, cursor=first.cursor)
    assert second.total_requested == 0, "requested once; a failed run is not retried"

    assert project.run("landscapes").success
    third = dg.evaluate_automation_conditions(project.defs, project.instance, cursor=second.cursor)
    assert requested(third) == {"cost_report": {None}}, "the report follows a catalog change"
    assert project.report().success
    fourth = dg.evaluate_automation_conditions(project.defs, project.instance, cursor=third.cursor)
    assert fourth.total_requested == 0


def test_automation_leaves_partitions_being_built_and_their_report_alone(project):
    project.record_table_versions("animals")
    project.instance.add_dynamic_partitions("prompt_tables", ["animals"])
    run = project.instance.create_run_for_job(
        project.defs.resolve_job_def("build_dataset"), tags={"dagster/partition": "animals"}
    )
    assert run.status == dg.DagsterRunStatus.NOT_STARTED
    evaluation = dg.evaluate_automation_conditions(project.defs, project.instance)
    assert evaluation.total_requested == 0


def stale_status(project, asset: str, partition: str):
    """Dagster's own staleness verdict (as the UI shows it), through its test-time loading context."""
    from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._time import get_current_datetime

    graph = project.defs.resolve_asset_graph()
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=project.instance,
        asset_graph=graph,
    )
    resolver = CachingStaleStatusResolver(instance=project.instance, asset_graph=graph, loading_context=view)
    return resolver.get_status(dg.AssetKey(asset), partition)


def test_a_changed_table_makes_its_downstream_assets_stale(project):
    from dagster._core.definitions.data_version import StaleStatus

    first = sense(project, apply=True)
    assert {e.partition for e in first.asset_events} == {"animals", "landscapes"}
    assert {type(e).__name__ for e in first.asset_events} == {"AssetObservation", "AssetMaterialization"}
    assert project.run("animals").success
    consumed = project.instance.get_latest_materialization_event(
        dg.AssetKey("prompts")
    ).asset_materialization.tags
    table_sha = hashlib.sha256(project.dataset.layout.table("animals").read_bytes()).hexdigest()
    assert (
        consumed["dagster/input_data_version/prompt_table_files"]
        == hashlib.sha256(table_sha.encode()).hexdigest()
    )
    assert stale_status(project, "catalog", "animals") == StaleStatus.FRESH

    path = project.dataset.layout.table("animals")
    pq.write_table(pq.read_table(path).slice(0, 3), path)
    changed = sense(project, first.cursor, apply=True)
    assert {e.partition for e in changed.asset_events} == {"animals"}
    # Dagster 1.13 marks the direct dependent stale; the rest follow once prompts has a new version
    assert stale_status(project, "prompts", "animals") == StaleStatus.STALE
    assert stale_status(project, "prompts", "landscapes") != StaleStatus.STALE
    assert project.run("animals").success
    assert stale_status(project, "prompts", "animals") == StaleStatus.FRESH
    assert stale_status(project, "catalog", "animals") == StaleStatus.FRESH


def test_workspace_loads_like_the_webserver():
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful" in done.stdout + done.stderr


def test_the_job_exports_each_partition_for_training_and_links_its_gallery(project):
    import datasets
    import webdataset

    from flux_pipeline.dataset.export import read_latest, version_folder

    assert project.run("animals").success
    catalog = project.catalog(["animals"])
    instance = project.instance
    exported = instance.get_latest_materialization_event(dg.AssetKey("training_export")).asset_materialization
    assert exported.partition == "animals"
    assert exported.metadata["catalog_rows"].value == len(catalog) == 7
    manifest = read_latest(project.dataset.layout.exports_dir, "animals")
    assert manifest.exported == exported.metadata["exported"].value == 7 - sum(manifest.removed.values())
    folder = version_folder(project.dataset.layout.exports_dir, manifest)
    shards = [str(folder / f.file) for split in manifest.splits.values() for f in split.webdataset]
    samples = list(webdataset.WebDataset(shards, shardshuffle=False).decode("pil"))
    parquet = [str(folder / split.parquet.file) for split in manifest.splits.values() if split.parquet]
    rows = datasets.load_dataset("parquet", data_files=parquet, split="train")
    assert len(samples) == len(rows) == manifest.exported
    assert {s["__key__"] for s in samples} == set(rows["image_id"]) <= set(catalog["image_id"])

    materialized = instance.get_latest_materialization_event(dg.AssetKey("catalog")).asset_materialization
    gallery = Path(materialized.metadata["gallery"].value)
    assert gallery == project.dataset.layout.partition_files("animals").folder / "gallery.html"
    page = gallery.read_text()
    assert all(f'data-image-id="{image_id}"' in page for image_id in catalog["image_id"])
    for step in ("images", "redux_variations", "catalog"):
        event = instance.get_latest_materialization_event(dg.AssetKey(step)).asset_materialization
        assert event.metadata["preview"].value.startswith("![")


def test_export_formats_come_from_the_dataset_resource_unless_the_run_config_names_them(project):
    """The code location chooses `hf_paths` (no copy of any image); a launch's run config chooses
    otherwise for its run, and keeps two versions."""
    from flux_pipeline.dataset.export import read_latest, version_folder

    paths = project.with_settings(export_formats=["hf_paths"])
    first = paths.run("animals")
    assert first.success
    exports = project.dataset.layout.exports_dir
    manifest = read_latest(exports, "animals")
    assert manifest.options.formats == ["hf_paths"]
    assert sorted(p.name for p in version_folder(exports, manifest).iterdir()) == [
        "hf_paths",
        "manifest.json",
    ]
    metadata = materializations(first)["training_export"]
    assert metadata["formats"] == "hf_paths" and metadata["export_bytes"] < 20_000

    config = {"ops": {"training_export": {"config": {"formats": ["webdataset"], "keep_versions": 2}}}}
    job = paths.defs.resolve_job_def("build_dataset")
    result = job.execute_in_process(
        partition_key="animals", instance=project.instance, run_config=config, raise_on_error=False
    )
    assert result.success
    again = read_latest(exports, "animals")
    assert again.options.formats == ["webdataset"] and again.options.keep_versions == 2
    assert {p.name for p in (exports / "animals").iterdir()} == {
        "latest.json",
        manifest.version,
        again.version,
    }
    assert materializations(result)["training_export"]["freed_bytes"] == 0, "two versions kept"


def test_a_re_run_keeps_the_export_of_an_unchanged_catalog_and_re_exports_after_a_decision(project):
    from flux_pipeline.dataset.catalog.decisions import REJECT, DecisionLog
    from flux_pipeline.dataset.export import read_latest

    exports = project.dataset.layout.exports_dir
    first = materializations(project.run("animals"))["training_export"]
    version = read_latest(exports, "animals").version
    again = materializations(project.run("animals"))["training_export"]
    assert first["unchanged"] is False and again["unchanged"] is True
    assert read_latest(exports, "animals").version == version and again["exported"] == first["exported"]
    with DecisionLog(project.dataset.ledger_location()) as log:
        log.record("animals", project.catalog(["animals"])["image_id"][0], REJECT, "tester", "blurry")
    after = materializations(project.run("animals"))["training_export"]
    assert after["unchanged"] is False and after["exported"] == first["exported"] - 1
    assert read_latest(exports, "animals").version != version
