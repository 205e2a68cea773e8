"""`review_decisions` in a real Dagster run (a module of its own: playwright's sync API keeps an event
loop running in the page tests' module, where Dagster's asyncio steps cannot start one)."""

from __future__ import annotations

from flux_pipeline.dataset.catalog.decisions import DecisionLog


def test_a_changed_decision_gives_review_decisions_a_new_version_and_the_export_drops_it(tmp_path):
    import dagster as dg
    import pandas as pd

    from flux_pipeline.emulator.engine import EmulatorConfig
    from flux_pipeline.emulator.server import EmulatorServer
    from flux_pipeline.pipeline.review import decisions_snapshot

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


def test_review_sensor_refreshes_only_partitions_whose_decisions_changed(tmp_path):
    import dagster as dg

    from flux_pipeline.emulator.engine import EmulatorConfig
    from flux_pipeline.emulator.server import EmulatorServer

    from .dataset_fixtures import make_project

    with EmulatorServer(EmulatorConfig(latency=0.02)) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance)
        assert project.run("animals").success and project.run("landscapes").success
        billed = server.emulator.stats()["images_billed"]
        review_sensor = project.defs.resolve_sensor_def("review_sensor")
        assert review_sensor.default_status == dg.DefaultSensorStatus.STOPPED

        def tick() -> list[str]:
            with dg.build_sensor_context(instance=instance) as context:
                return [request.partition_key for request in review_sensor(context).run_requests]

        assert tick() == [], "decisions unchanged since the build: nothing to refresh"
        image = project.catalog(["animals"]).image_id.iloc[0]
        with DecisionLog(project.dataset.ledger_location()) as log:
            log.record("animals", image, "reject", "bob", "artifact")
        assert tick() == ["animals"]
        refresh = project.defs.resolve_job_def("refresh_review")
        assert refresh.execute_in_process(partition_key="animals", instance=instance).success
        assert tick() == []
        with DecisionLog(project.dataset.ledger_location()) as log:
            log.record("animals", image, "reject", "carol", "artifact")  # the same decision again
        assert tick() == [], "a decision recorded again unchanged changes nothing"
        assert server.emulator.stats()["images_billed"] == billed, "refreshing the review pays nothing"
