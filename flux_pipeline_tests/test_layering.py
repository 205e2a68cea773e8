"""dataset/ by concern: each room imports only the rooms below it, and none imports Dagster or the
layers above the dataset (read from the source, as an import graph)."""

from __future__ import annotations

import ast
from pathlib import Path

DATASET = Path(__file__).resolve().parent.parent / "flux_pipeline" / "dataset"
ROOMS = ["files", "money", "catalog", "plan", "costs", "export"]
"""Bottom first: a room may import the rooms before it."""
BELOW = {"export": {"files", "catalog"}}
"""export sits beside costs: it reads the catalog and the files, nothing that plans or prices."""
ABOVE_THE_DATASET = ("dagster", "flux_pipeline.lib", "flux_pipeline.pipeline", "flux_pipeline.resources")


def imports_of(path: Path) -> set[str]:
    """The flux_pipeline modules (absolute) and other top-level packages a module imports."""
    package = ["flux_pipeline", "dataset", *path.relative_to(DATASET).parent.parts]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            found.add(".".join([*base, *(node.module.split(".") if node.module else [])]))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_each_room_imports_only_the_rooms_below_it_and_nothing_above_the_dataset():
    upward, above = [], []
    for room in ROOMS:
        allowed = BELOW.get(room, set(ROOMS[: ROOMS.index(room)])) | {room}
        for path in sorted((DATASET / room).glob("*.py")):
            for name in imports_of(path):
                parts = name.split(".")
                if parts[:2] == ["flux_pipeline", "dataset"] and len(parts) > 2 and parts[2] not in allowed:
                    upward.append(f"{path.relative_to(DATASET)} imports {name}")
                if name.startswith(ABOVE_THE_DATASET):
                    above.append(f"{path.relative_to(DATASET)} imports {name}")
    assert upward == [] and above == []
    assert sorted(p.name for p in DATASET.iterdir() if p.suffix == ".py") == ["__init__.py"], (
        "no module outside a room"
    )
