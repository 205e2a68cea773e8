"""The FLUX models a team chooses between (schnell, dev, pro, ultra, ultra Redux), each with its own
input, limits and billing unit: served by the emulator with fal's 422s and prices, called by fal's
own client, and mixed in one partition that is estimated, billed, cataloged and reconciled per
model to the cent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import httpx
import pandas as pd
import pytest

from flux_pipeline.emulator.engine import EmulatorConfig
from flux_pipeline.emulator.server import EmulatorServer
from flux_pipeline.fal.models import DEV, REDUX, SCHNELL, TEXT_TO_IMAGE, ULTRA, ULTRA_REDUX

from .conftest import ADMIN_KEY, SECRET_KEY
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
