"""`review_decisions` in a real Dagster run (a module of its own: playwright's sync API keeps an event
loop running in the page tests' module, where Dagster's asyncio steps cannot start one)."""

from __future__ import annotations

from flux_pipeline.dataset.decisions import DecisionLog


def test_a_changed_decision_gives_review_decisions_a_new_version_and_the_export_drops_it(tmp_path):
    import dagster as dg
    import pandas as pd

    from flux_pipeline.emulator.engine import EmulatorConfig
    from flux_pipeline.emulator.server import EmulatorServer
    from flux_pipeline.review_asset import decisions_snapshot

    from .dataset_fixtures import make_project

    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        assert project.run("animals").success

        def latest(asset: str) -> dg.AssetMaterialization:
            return instance.get_latest_materialization_event(dg.AssetKey(asset)).asset_materialization

        before = latest("review_decisions").tags["dagster/data_version"]
        image = project.catalog(["animals"]).image_id.iloc[0]
        with DecisionLog(project.dataset.ledger_location()) as log:
            log.record("animals", image, "reject", "bob", "artifact")
        assert project.materialize("animals", "review_decisions", "training_export").success
        reviewed = latest("review_decisions")
        assert reviewed.tags["dagster/data_version"] != before
        assert (reviewed.metadata["rejected"].value, reviewed.metadata["undecided"].value) == (1, 6)
        assert reviewed.metadata["rejected_by_reason"].value == {"artifact": 1}
        snapshot = pd.read_parquet(str(decisions_snapshot(project.dataset, "animals")))
        assert list(snapshot.image_id) == [image] and snapshot.reviewer.tolist() == ["bob"]
        assert latest("training_export").metadata["removed_rejected"].value == 1
