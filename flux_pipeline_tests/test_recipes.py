"""Prompt recipes: expansion (product, sample, balance, weights, exclusions), errors that name the
key, a recipe partition built end to end against the emulator, and `flux-pipeline recipe preview`."""

from __future__ import annotations

import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from upath import UPath

from flux_pipeline import cli
from flux_pipeline.dataset.catalog.decisions import KEEP, REJECT, DecisionLog
from flux_pipeline.dataset.costs.pricing import price_list
from flux_pipeline.dataset.costs.recipe_preview import preview_recipe
from flux_pipeline.dataset.files.images import sha256_of
from flux_pipeline.dataset.files.layout import DatasetLayout
from flux_pipeline.dataset.files.storage import write_parquet_atomically
from flux_pipeline.dataset.plan.prompt_table import open_prompt_table
from flux_pipeline.dataset.plan.recipe_rows import expand
from flux_pipeline.dataset.plan.recipe_spec import RecipeError, load_recipe
from flux_pipeline.dataset.plan.table_source import planned_rows, recipe_table, source_version
from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import ENDPOINTS, SCHNELL, TEXT_TO_IMAGE
from flux_pipeline.lib.table_versions import built_version, scan_prompt_tables

from .dataset_fixtures import make_project
from .test_dataset import materializations, sense

REPO = Path(__file__).resolve().parent.parent
WILDLIFE = {
    "templates": ["a {style} of a {species} in the {habitat}", "{style}: a {species}, {habitat}"],
    "axes": {
        "species": ["red fox", "snow leopard", "barn owl", "sea otter"],
        "habitat": ["forest", "tundra", "river delta"],
        "style": ["watercolor", "photograph", "pencil sketch"],
    },
    "mode": "sample",
    "sample": {"n": 12, "seed": 3, "balance": ["species", "style"]},
    "exclude": [{"species": "sea otter", "habitat": "tundra"}],
    "defaults": {"model": SCHNELL, "image_size": "square", "seed_from": "row"},
}
DEFAULTS = {"image_size": "landscape_4_3", "num_images": 1, "output_format": "jpeg"}


def write_recipe(folder: Path, name: str, recipe: dict) -> UPath:
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return UPath(path)


def build_table(tmp_path: Path, recipe: UPath, destination: Path) -> None:
    """What materializing `prompts` writes and checks for a recipe partition (in a dataset rooted at
    tmp_path)."""
    layout, path = DatasetLayout(UPath(tmp_path)), UPath(destination)
    write_parquet_atomically(recipe_table(layout, recipe, str(tmp_path / "ledger.sqlite")), path)
    list(planned_rows(recipe, open_prompt_table(path), path, DEFAULTS, layout.prompts_dir))


def rows_of(tmp_path: Path, recipe: dict) -> pd.DataFrame:
    path = write_recipe(tmp_path, "recipe", recipe)
    return expand(load_recipe(path), path).to_pandas()


def test_product_minus_exclusions_fills_the_templates(tmp_path):
    recipe = {
        "templates": ["a {colour} {animal}"],
        "axes": {"animal": ["cat", "dog"], "colour": ["red", "green", "blue"], "legs": [4]},
        "exclude": [{"animal": "dog", "colour": "green", "legs": 4}],
        "defaults": {"seed": 5, "num_images": 2},
    }
    rows = rows_of(tmp_path, recipe)
    assert list(rows["prompt"]) == ["a red cat", "a green cat", "a blue cat", "a red dog", "a blue dog"]
    assert set(rows["axis_legs"]) == {"4"}
    assert list(zip(rows["axis_animal"], rows["axis_colour"])) == [
        ("cat", "red"),
        ("cat", "green"),
        ("cat", "blue"),
        ("dog", "red"),
        ("dog", "blue"),
    ]
    assert rows["prompt_id"].is_unique and set(rows["seed"]) == {5} and set(rows["num_images"]) == {2}


def test_the_same_recipe_gives_a_byte_identical_table(tmp_path):
    path = write_recipe(tmp_path, "wildlife", WILDLIFE)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    build_table(tmp_path, path, first)
    build_table(tmp_path, path, second)
    assert first.read_bytes() == second.read_bytes()
    assert pq.read_table(first).num_rows == 12


@pytest.mark.parametrize("n", [12, 10, 7])
def test_a_balanced_sample_gives_each_value_its_share(tmp_path, n):
    rows = rows_of(tmp_path, {**WILDLIFE, "sample": {"n": n, "seed": 11, "balance": ["species", "style"]}})
    assert len(rows) == n and rows["prompt_id"].is_unique
    for axis, k in (("species", 4), ("style", 3)):
        counts = Counter(rows[f"axis_{axis}"])
        assert len(counts) == k and set(counts.values()) <= {n // k, -(-n // k)}, (axis, counts)
    assert not ((rows["axis_species"] == "sea otter") & (rows["axis_habitat"] == "tundra")).any()
    other_seed = rows_of(tmp_path, {**WILDLIFE, "sample": {"n": n, "seed": 12, "balance": ["species"]}})
    assert set(other_seed["prompt_id"]) != set(rows["prompt_id"])


HUGE = {
    "templates": ["{a} {b} {c} {d} {e} {f} {g} {h}"],
    "axes": {axis: [f"{axis}{i}" for i in range(100)] for axis in "abcdefgh"},  # 10^16 combinations
    "mode": "sample",
    "sample": {"n": 1000, "seed": 5, "balance": ["a", "b"]},
    "exclude": [{"a": "a0", "c": "c1"}, {"d": "d7"}, {"a": "a3", "b": "b3"}],
}


def test_a_sample_of_a_space_of_ten_to_the_sixteen_is_drawn_without_enumerating_it(tmp_path):
    rows = rows_of(tmp_path, HUGE)
    assert len(rows) == 1000 and rows["prompt_id"].is_unique
    for axis in ("a", "b"):
        counts = Counter(rows[f"axis_{axis}"])
        assert len(counts) == 100 and set(counts.values()) == {10}, "1000 rows over 100 values: 10 each"
    assert not ((rows["axis_a"] == "a0") & (rows["axis_c"] == "c1")).any()
    assert not (rows["axis_d"] == "d7").any()
    assert not ((rows["axis_a"] == "a3") & (rows["axis_b"] == "b3")).any()
    again = rows_of(tmp_path, HUGE)
    pd.testing.assert_frame_equal(rows, again)


@pytest.mark.parametrize("balance", [["a", "b"], []])
def test_growing_n_keeps_every_row_already_drawn(tmp_path, balance):
    small = rows_of(tmp_path, {**HUGE, "sample": {"n": 333, "seed": 5, "balance": balance}})
    grown = rows_of(tmp_path, {**HUGE, "sample": {"n": 1000, "seed": 5, "balance": balance}})
    pd.testing.assert_frame_equal(grown.head(333), small)
    for axis in balance:
        assert set(Counter(small[f"axis_{axis}"]).values()) == {3, 4}, "333 over 100 values: 3 or 4 each"


def test_the_balance_is_exact_for_every_n_and_deals_every_pair_of_values(tmp_path):
    recipe = {**HUGE, "axes": {**HUGE["axes"], "a": ["x", "y", "z"], "b": ["p", "q"]}, "exclude": []}
    for n in (1, 2, 5, 7, 50, 301):
        rows = rows_of(tmp_path, {**recipe, "sample": {"n": n, "seed": 9, "balance": ["a", "b"]}})
        for axis, k in (("a", 3), ("b", 2)):
            assert set(Counter(rows[f"axis_{axis}"]).values()) <= {n // k, -(-n // k)}, (n, axis)
    pairs = Counter(zip(rows["axis_a"], rows["axis_b"]))
    assert len(pairs) == 6, "the balanced axes' blocks are shuffled apart, so every pair appears"


def test_a_balance_an_exclusion_makes_impossible_is_refused_naming_the_axis(tmp_path):
    path = write_recipe(tmp_path, "bad", {**HUGE, "exclude": [{"b": "b9"}]})
    with pytest.raises(
        RecipeError, match=r"sample.balance\[1\]: b cannot balance: its value 'b9' is excluded"
    ):
        expand(load_recipe(path), path)


def test_a_product_over_the_cap_names_mode_sample_as_the_way_out(tmp_path):
    recipe = {key: value for key, value in HUGE.items() if key != "sample"} | {"mode": "product"}
    with pytest.raises(
        RecipeError, match=r"axes: 10000000000000000 combinations; mode: product .*mode: sample"
    ):
        load_recipe(write_recipe(tmp_path, "product", recipe))


def test_weights_draw_heavier_values_more_often(tmp_path):
    recipe = {
        "templates": ["{light} {place}"],
        "axes": {
            "light": [{"value": "dawn", "weight": 50}, "noon"],
            "place": [f"place {i}" for i in range(30)],
        },
        "mode": "sample",
        "sample": {"n": 20, "seed": 1},
    }
    counts = Counter(rows_of(tmp_path, recipe)["axis_light"])
    assert counts["dawn"] >= 17, counts


def test_editing_one_axis_value_leaves_the_other_rows_as_they_were(tmp_path):
    recipe = {**WILDLIFE, "mode": "product", "sample": None}
    del recipe["sample"]
    before = rows_of(tmp_path, recipe).set_index("prompt_id")
    edited = json.loads(json.dumps(recipe))
    edited["axes"]["habitat"][1] = "taiga"
    edited["exclude"] = [{"species": "sea otter", "habitat": "taiga"}]
    after = rows_of(tmp_path, edited).set_index("prompt_id")
    kept = before[before["axis_habitat"] != "tundra"]
    assert len(kept) == 24
    pd.testing.assert_frame_equal(after.loc[kept.index], kept)
    assert set(after.index) - set(before.index) == set(after[after["axis_habitat"] == "taiga"].index)


def with_changes(**changes) -> dict:
    recipe = json.loads(json.dumps(WILDLIFE))
    for key, value in changes.items():
        *parents, last = key.split("__")
        target = recipe
        for parent in parents:
            target = target[parent]
        target[last] = value
    return recipe


BAD_RECIPES = [
    (with_changes(axes__species=[]), "axes.species: an axis needs at least one value"),
    (with_changes(axes__species=["fox", "fox"]), "axes.species[1]: duplicate value 'fox'"),
    (with_changes(axes__species=["fox", {"value": "owl", "weight": -1}]), "axes.species[1].weight: "),
    (with_changes(templates=["a {colour} fox"]), "templates[0]: unknown slot {colour}"),
    (with_changes(sample__n=36), "sample.n: 36 is more than the 33 combinations left after exclusions"),
    (with_changes(sample__balance=["size"]), "sample.balance[0]: unknown axis 'size'"),
    (with_changes(mode="product"), "sample: only with mode: sample"),
    (with_changes(exclude=[{"colour": "red"}]), "exclude[0].colour: unknown axis"),
    (
        with_changes(exclude=[{"species": "wolf"}]),
        "exclude[0].species: 'wolf' is not a value of axis species",
    ),
    (with_changes(defaults__model="fal-ai/flux/turbo"), "defaults.model: unknown model 'fal-ai/flux/turbo'"),
    (with_changes(defaults__guidance_scale=3.5), f"defaults.guidance_scale: {SCHNELL} does not take"),
    (with_changes(defaults__num_images=9), "defaults.num_images: Input should be less than or equal to 4"),
    (with_changes(defaults__num_inference_steps=40), "defaults.num_inference_steps: "),
    (with_changes(defaults__image_size={"width": 0, "height": 64}), "defaults.image_size.width: "),
    (with_changes(defaults__seed=1), "defaults.seed_from: give either seed or seed_from"),
    (with_changes(defaults__redux={"share": 2}), "defaults.redux.share: "),
    (with_changes(templats=["x"]), "templats: Extra inputs are not permitted"),
]


@pytest.mark.parametrize(("recipe", "message"), BAD_RECIPES)
def test_a_bad_recipe_names_the_key(tmp_path, recipe, message):
    path = write_recipe(tmp_path, "bad", recipe)
    destination = tmp_path / "out" / "table.parquet"
    with pytest.raises(RecipeError) as raised:
        build_table(tmp_path, path, destination)
    assert str(raised.value).startswith(f"recipe {path}: {message}"), str(raised.value)


def test_a_recipe_that_is_not_yaml_is_an_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("templates: [unclosed\n")
    with pytest.raises(RecipeError, match="not readable YAML"):
        load_recipe(UPath(path))


def test_recipes_are_partitions_next_to_tables(tmp_path, caplog):
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        zoo = write_recipe(tmp_path / "recipes", "zoo", WILDLIFE)
        write_recipe(tmp_path / "recipes", "animals", WILDLIFE)  # named like a table: the table wins
        with caplog.at_level(logging.WARNING):
            found = scan_prompt_tables(project.dataset, logging.getLogger(__name__))
    assert found == {
        "animals": sha256_of(project.dataset.layout.table("animals")),
        "landscapes": sha256_of(project.dataset.layout.table("landscapes")),
        "zoo": sha256_of(zoo),
    }
    assert "the prompt table" in caplog.text and "animals.yaml" in caplog.text


SMALL = {
    "templates": ["a {style} of a {species}"],
    "axes": {"species": ["fox", "owl", "otter"], "style": ["watercolor", "photograph"]},
    "mode": "sample",
    "sample": {"n": 4, "seed": 2, "balance": ["style"]},
    "defaults": {"model": SCHNELL, "image_size": "square", "seed_from": "row", "redux": {"share": 0.5}},
}


def test_a_recipe_partition_end_to_end_and_an_edit_pays_only_for_new_rows(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        recipe = write_recipe(tmp_path / "recipes", "zoo", SMALL)
        result = project.run("zoo")
        assert result.success
        catalog = project.catalog(["zoo"])
        stats = server.emulator.stats()
        assert len(catalog) == stats["images_billed"] > 4, "4 rows, some with a Redux variation"
        table = pq.read_table(project.dataset.layout.partition_files("zoo").recipe_table).to_pandas()
        axes_of = {
            row.prompt_id: {"species": row.axis_species, "style": row.axis_style}
            for row in table.itertuples()
        }
        assert {row.prompt_id: json.loads(row.axes) for row in catalog.itertuples()} == {
            key: axes_of[key] for key in catalog["prompt_id"]
        }
        assert set(catalog["endpoint"]) == {SCHNELL, "fal-ai/flux-pro/v1.1/redux"}
        balance = materializations(result)["catalog"]["axis_balance"]
        images_per_style = Counter(json.loads(a)["style"] for a in catalog["axes"])
        for style, images in images_per_style.items():
            assert f"| style | {style} | {images} |" in balance
        exported = pd.concat(
            pd.read_parquet(path) for path in (tmp_path / "exports" / "zoo").glob("*/hf/data/*.parquet")
        )
        assert sorted(exported["axes"].map(json.loads).map(lambda a: a["species"])) == sorted(
            json.loads(a)["species"] for a in catalog["axes"]
        )
        version = sha256_of(recipe)
        assert built_version(instance, "zoo") == version

        assert project.run("zoo").success
        assert server.emulator.stats()["images_billed"] == stats["images_billed"], "unchanged: nothing sent"

        edited = json.loads(json.dumps(SMALL))
        drawn = json.loads(catalog["axes"].iloc[0])["species"]  # a value the sample holds
        edited["axes"]["species"][SMALL["axes"]["species"].index(drawn)] = "lynx"
        write_recipe(tmp_path / "recipes", "zoo", edited)
        assert sha256_of(recipe) != version
        assert project.run("zoo").success
        assert built_version(instance, "zoo") == sha256_of(recipe)
        new_catalog = project.catalog(["zoo"])
        new_rows = set(new_catalog["prompt_id"]) - set(catalog["prompt_id"])
        assert new_rows and all(
            "lynx" in json.loads(a)["species"]
            for a in new_catalog[new_catalog["prompt_id"].isin(new_rows)]["axes"]
        )
        paid_for = len(new_catalog[new_catalog["prompt_id"].isin(new_rows)])
        assert server.emulator.stats()["images_billed"] == stats["images_billed"] + paid_for


def test_a_sample_of_a_huge_space_builds_and_growing_it_pays_only_for_the_new_rows(tmp_path):
    huge = {**HUGE, "sample": {"n": 6, "seed": 5, "balance": ["a"]}, "defaults": {"model": SCHNELL}}
    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        write_recipe(tmp_path / "recipes", "space", huge)
        assert project.run("space").success
        first = set(project.catalog(["space"])["prompt_id"])
        assert len(first) == server.emulator.stats()["images_billed"] == 6
        write_recipe(tmp_path / "recipes", "space", {**huge, "sample": {**huge["sample"], "n": 10}})
        assert project.run("space").success
        grown = set(project.catalog(["space"])["prompt_id"])
        assert first < grown and len(grown) == 10
        assert server.emulator.stats()["images_billed"] == 10, "the 6 rows paid for stay; 4 new ones paid"


def test_a_bad_recipe_fails_its_partition_naming_the_key_and_sends_nothing(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        write_recipe(tmp_path / "recipes", "zoo", with_changes(axes__style=[]))
        result = project.run("zoo")
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "axes.style: an axis needs at least one value" in failure.step_failure_data.error.message
        assert server.emulator.stats()["images_billed"] == 0


def test_recipe_preview_prints_rows_and_cost(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FAL_KEY", raising=False)
    path = REPO / "data" / "recipes" / "wildlife.yaml"
    assert cli.main(["recipe", "preview", str(path), "--rows", "3"]) == 0
    out = capsys.readouterr().out
    rows = expand(load_recipe(UPath(path)), UPath(path)).to_pandas()
    assert f"{len(rows)} rows; the first 3" in out
    assert all(prompt in out for prompt in rows["prompt"][:3]) and rows["prompt"][3] not in out
    assert "estimated cost: $0.0360 for 12 request(s), 12 billed megapixels, at list prices" in out

    bad = write_recipe(tmp_path, "bad", with_changes(sample__n=99))
    assert cli.main(["recipe", "preview", str(bad)]) == 2
    assert "sample.n: 99 is more than the 33 combinations" in capsys.readouterr().err


DRAFTED = {
    **SMALL,
    "defaults": {
        "model": TEXT_TO_IMAGE,
        "draft_model": SCHNELL,
        "image_size": "square",
        "seed_from": "row",
        "safety_tolerance": 3,
        "redux": {"share": 0.5},
    },
}


def test_a_draft_then_a_final_of_only_the_kept_rows(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        recipes = tmp_path / "recipes"
        write_recipe(recipes, "zoo", DRAFTED)
        assert project.run("zoo").success
        drafts = project.catalog(["zoo"])
        assert len(drafts) == 4 and set(drafts["endpoint"]) == {SCHNELL}, "a draft: the cheap model, no Redux"
        billed = server.emulator.stats()["images_billed"]

        final = write_recipe(recipes, "zoo-final", {"final_of": "zoo"})
        unreviewed = project.run("zoo-final")
        assert not unreviewed.success and server.emulator.stats()["images_billed"] == billed
        failure = next(e for e in unreviewed.all_events if e.is_step_failure)
        assert "keep: none of the 4 draft rows of 'zoo' has a kept image yet" in str(
            failure.step_failure_data
        )

        ledger = project.dataset.ledger_location()
        images = list(drafts["image_id"])
        with DecisionLog(ledger) as log:
            log.record("zoo", images[0], KEEP, "tester")
            log.record("zoo", images[1], KEEP, "tester")
            log.record("zoo", images[2], REJECT, "tester", "blurry")
        version = source_version(project.dataset.layout, final, lambda: ledger)
        prices = price_list(list(ENDPOINTS), project.dataset.configured_price(), {})
        preview = preview_recipe(final, project.dataset.layout, ledger, DEFAULTS, prices, 10)
        assert preview.rows == 2 and sorted(preview.head["draft_image_id"]) == sorted(images[:2])
        assert project.run("zoo-final").success
        finals = project.catalog(["zoo-final"])
        rendered = finals[finals["endpoint"] == TEXT_TO_IMAGE].set_index("prompt_id")
        kept = drafts[drafts["image_id"].isin(images[:2])].set_index("prompt_id")
        assert sorted(rendered.index) == sorted(kept.index)
        assert (rendered["draft_image_id"] == kept.loc[rendered.index, "image_id"]).all()
        assert (
            rendered[["prompt", "seed", "axes"]] == kept.loc[rendered.index, ["prompt", "seed", "axes"]]
        ).all(axis=None)
        assert server.emulator.stats()["images_billed"] == billed + len(finals), "only the kept rows"

        with DecisionLog(ledger) as log:
            log.record("zoo", images[3], KEEP, "tester")
        assert source_version(project.dataset.layout, final, lambda: ledger) != version, "a new keep: stale"
        before = server.emulator.stats()["images_billed"]
        assert project.run("zoo-final").success
        again = project.catalog(["zoo-final"])
        added = again[~again["image_id"].isin(finals["image_id"])]
        assert set(added["prompt_id"]) == {drafts["prompt_id"][3]}
        assert server.emulator.stats()["images_billed"] == before + len(added), "the kept rows were paid once"


def test_a_final_recipe_needs_a_draft_recipe(tmp_path):
    path = write_recipe(tmp_path / "recipes", "final", {"final_of": "ghost", "keep": "all"})
    with pytest.raises(RecipeError, match="final_of: 'ghost' is not a recipe partition"):
        build_table(tmp_path, path, tmp_path / "table.parquet")
    bad_keep = write_recipe(tmp_path / "recipes", "final", {"final_of": "ghost", "keep": "best"})
    with pytest.raises(RecipeError, match="keep: Input should be 'reviewed' or 'all'"):
        build_table(tmp_path, bad_keep, tmp_path / "table.parquet")


def test_the_sensor_adopts_a_built_recipe_and_reruns_an_edited_one_or_a_new_keep(tmp_path):
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        recipes = tmp_path / "recipes"
        write_recipe(recipes, "zoo", DRAFTED)
        assert project.run("zoo").success
        first = sense(project, apply=True)
        assert first.run_requests == [], "built from its current recipe: adopted"

        edited = json.loads(json.dumps(DRAFTED))
        edited["templates"] = ["a {style} of one {species}"]
        recipe = write_recipe(recipes, "zoo", edited)
        changed = sense(project, first.cursor, apply=True)
        assert [(r.partition_key, r.run_key) for r in changed.run_requests] == [
            ("zoo", f"zoo:{sha256_of(recipe)}")
        ]
        assert project.run("zoo").success

        write_recipe(recipes, "zoo-final", {"final_of": "zoo", "keep": "reviewed"})
        with DecisionLog(project.dataset.ledger_location()) as log:
            log.record("zoo", project.catalog(["zoo"])["image_id"][0], KEEP, "tester")
        final = sense(project, changed.cursor, apply=True)
        assert [r.partition_key for r in final.run_requests] == ["zoo-final"]
        assert project.run("zoo-final").success
        assert sense(project, final.cursor).run_requests == []
        with DecisionLog(project.dataset.ledger_location()) as log:
            log.record("zoo", project.catalog(["zoo"])["image_id"][1], KEEP, "tester")
        assert [r.partition_key for r in sense(project, final.cursor).run_requests] == ["zoo-final"]


def test_the_nightly_schedule_prices_a_recipe_and_leaves_a_bad_one_out(tmp_path, capsys):
    with EmulatorServer(EmulatorConfig(latency=0.05)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False)
        zoo = write_recipe(tmp_path / "recipes", "zoo", SMALL)
        write_recipe(tmp_path / "recipes", "broken", with_changes(axes__style=[]))
        tight = project.with_settings(nightly_budget_usd=0.0001)
        dataset = tight.dataset
        prices = price_list(list(ENDPOINTS), dataset.configured_price(), {})
        defaults = dataset.request_defaults()
        expected = preview_recipe(zoo, dataset.layout, dataset.ledger_location(), defaults, prices, 1)
        nightly = tight.defs.resolve_schedule_def("nightly_backfill")
        with dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 12, 5, 2, tzinfo=UTC)
        ) as context:
            skipped = nightly(context)
        assert isinstance(skipped, dg.SkipReason)
        assert f"(zoo ${expected.estimate.cost_usd:.4f})" in skipped.skip_message
        log = capsys.readouterr().err
        assert "not building broken tonight" in log and "axes.style: an axis needs at least one value" in log
        assert server.emulator.stats()["images_billed"] == 0
