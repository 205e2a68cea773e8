"""The FLUX models a team chooses between (schnell, dev, pro, ultra, ultra Redux), each with its own
input, limits and billing unit: served by the emulator with fal's 422s and prices, called by fal's
own client, and mixed in one partition that is estimated, billed, cataloged and reconciled per
model to the cent."""

from __future__ import annotations

import dagster as dg
import httpx
import pandas as pd
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import DEV, REDUX, SCHNELL, TEXT_TO_IMAGE, ULTRA, ULTRA_REDUX

from .conftest import ADMIN_KEY, SECRET_KEY, fal_stand_in
from .dataset_fixtures import make_project
from .test_money import latest, spent

AUTH = {"Authorization": f"Key {SECRET_KEY}"}


def test_each_endpoint_answers_with_its_own_schema_and_price():
    with EmulatorServer(EmulatorConfig(latency=0.01)) as server:
        base = f"http://127.0.0.1:{server.port}"
        bad = {
            SCHNELL: ({"prompt": "a fox", "num_inference_steps": 13}, "num_inference_steps"),
            SCHNELL + " ": ({"prompt": "a fox", "safety_tolerance": "3"}, "safety_tolerance"),
            DEV: ({"prompt": "a fox", "guidance_scale": 25}, "guidance_scale"),
            ULTRA: ({"prompt": "a fox", "image_size": "square"}, "image_size"),
            ULTRA + " ": ({"prompt": "a fox", "aspect_ratio": "5:1"}, "aspect_ratio"),
            ULTRA_REDUX: ({"prompt": "a fox"}, "image_url"),
        }
        for endpoint, (body, field) in bad.items():
            answer = httpx.post(f"{base}/run/{endpoint.strip()}", json=body, headers=AUTH, timeout=30)
            assert answer.status_code == 422, (endpoint, answer.text)
            assert answer.json()["detail"][0]["loc"] == ["body", field]
        ultra = httpx.post(
            f"{base}/run/{ULTRA}", json={"prompt": "a fox", "aspect_ratio": "1:1", "raw": True}, headers=AUTH
        ).json()
        assert (ultra["images"][0]["width"], ultra["images"][0]["height"]) == (2048, 2048)
        query = [("endpoint_id", e) for e in (SCHNELL, DEV, ULTRA, ULTRA_REDUX, TEXT_TO_IMAGE)]
        prices = httpx.get(f"{base}/v1/models/pricing", params=query, headers=AUTH).json()["prices"]
        by_endpoint = {p["endpoint_id"]: (p["unit_price"], p["unit"]) for p in prices}
        assert by_endpoint == {
            SCHNELL: (0.003, "megapixels"),
            DEV: (0.025, "megapixels"),
            ULTRA: (0.06, "image"),
            ULTRA_REDUX: (0.06, "image"),
            TEXT_TO_IMAGE: (0.04, "megapixels"),
        }
        billed = {b.endpoint: (b.unit, b.cost_usd) for b in server.emulator.billing}
        assert billed == {ULTRA: ("image", 0.06)}, "only the valid run was billed, per image"


MIXED_ROWS = [
    {"prompt_id": "pro", "prompt": "a fox", "model": None, "image_size": "square", "seed": 1},
    {"prompt_id": "fast", "prompt": "a fox", "model": SCHNELL, "num_inference_steps": 2, "seed": 2},
    {"prompt_id": "dev", "prompt": "a fox", "model": DEV, "guidance_scale": 5.0, "seed": 3},
    {"prompt_id": "ultra", "prompt": "a fox", "model": ULTRA, "aspect_ratio": "1:1", "raw": True, "seed": 4},
    {"prompt_id": "vary", "prompt": "a fox", "model": ULTRA, "redux_image": "generated", "seed": 5},
    {"prompt_id": "bad-model", "prompt": "a fox", "model": "fal-ai/flux/pro-max"},
    {"prompt_id": "bad-field", "prompt": "a fox", "model": SCHNELL, "safety_tolerance": "3"},
    {"prompt_id": "bad-size", "prompt": "a fox", "model": ULTRA, "image_size": "square"},
    {"prompt_id": "bad-steps", "prompt": "a fox", "model": SCHNELL, "num_inference_steps": 13},
]


def test_a_partition_mixing_models_is_estimated_billed_and_reconciled_per_model(tmp_path):
    config = fal_stand_in(latency=0.02, admin_keys=(ADMIN_KEY,))
    with EmulatorServer(config) as server, dg.instance_for_test() as instance:
        project = make_project(tmp_path, server, instance, samples=False, admin_key=ADMIN_KEY)
        prompts_dir = project.dataset.layout.prompts_dir
        prompts_dir.mkdir(parents=True)
        pd.DataFrame(MIXED_ROWS).to_parquet(prompts_dir / "mixed.parquet")
        result = project.run("mixed")
        assert result.success
        failed_checks = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
        assert failed_checks == [], "cost_recomputes, billed_units_match and the others hold per model"
        rejects = pd.read_parquet(project.dataset.layout.partition_files("mixed").rejects)
        assert dict(zip(rejects.prompt_id, rejects.field)) == {
            "bad-model": "model",
            "bad-field": "safety_tolerance",
            "bad-size": "image_size",
            "bad-steps": "num_inference_steps",
        }
        catalog = project.catalog().set_index(["prompt_id", "endpoint"])
        assert catalog.loc[("pro", TEXT_TO_IMAGE), "cost_usd"] == pytest.approx(0.04)
        assert catalog.loc[("fast", SCHNELL), "cost_usd"] == pytest.approx(0.003)
        assert catalog.loc[("dev", DEV), "cost_usd"] == pytest.approx(0.025)
        ultra = catalog.loc[("ultra", ULTRA)]
        assert (ultra.billing_unit, ultra.cost_usd, ultra.width, ultra.height) == ("image", 0.06, 2048, 2048)
        vary = catalog.loc[("vary", ULTRA_REDUX)]
        assert (
            vary.billing_unit == "image" and vary.parent_image_id == catalog.loc[("vary", ULTRA), "image_id"]
        )
        assert REDUX not in catalog.index.get_level_values("endpoint")
        billed = server.emulator.stats()
        assert billed["requests_billed"] == len(catalog) == 6, "rejected rows were never sent"
        assert round(catalog.cost_usd.sum(), 6) == billed["cost_usd"] == pytest.approx(0.248)
        assert spent(instance, "images", "redux_variations") == billed["cost_usd"]
        assert latest(instance, "prompts")["estimated_cost_usd"] == pytest.approx(0.248)
        reconciled = latest(instance, "billing_reconciliation")
        assert reconciled["matched"] == 6 and reconciled["units_mismatch"] == 0
        assert reconciled["list_cost_usd"] == reconciled["fal_billed_usd"] == pytest.approx(0.248)

        project.report()
        by_model = pd.read_parquet(project.dataset.layout.reports_dir / "cost_by_model.parquet")
        assert dict(zip(by_model.endpoint, by_model.spent_usd)) == pytest.approx(
            {TEXT_TO_IMAGE: 0.04, SCHNELL: 0.003, DEV: 0.025, ULTRA: 0.12, ULTRA_REDUX: 0.06}
        )
        assert project.run("mixed").success
        assert server.emulator.stats()["requests_billed"] == 6, "a re-run pays nothing again"
