"""The code location's surface: what it exposes is what the snapshot records, and `dg check defs`
accepts it."""

import json
import subprocess
import sys
from pathlib import Path

from flux_pipeline.definitions import defs

from .conftest import clean_env
from .definitions_snapshot import SNAPSHOT, snapshot

ROOT = Path(__file__).parent.parent


def test_the_code_location_exposes_what_the_snapshot_records():
    assert snapshot(defs) == json.loads(SNAPSHOT.read_text())


def test_dg_check_defs_accepts_the_code_location():
    env = clean_env()
    dg_cli = Path(sys.executable).with_name("dg")
    done = subprocess.run(
        [str(dg_cli), "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stdout + done.stderr
