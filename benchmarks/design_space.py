"""A design space of any size (run by hand, not in CI):

    .venv/bin/python benchmarks/design_space.py --axes 8 --values 100 --n 100000

Writes a recipe of `--axes` axes of `--values` values each (100^8 = 10^16 combinations), two of
them balanced and three exclusions, `mode: sample` with `n: --n`, then times `flux-pipeline recipe
preview` on it in a fresh process (what a person waits for), and, in this process, drawing the
rows alone and expanding them into the partition's table. Prints each time and peak RSS."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from upath import UPath

from flux_pipeline.dataset.plan.recipe_rows import expand, sample_assignments
from flux_pipeline.dataset.plan.recipe_spec import Recipe, combinations, load_recipe

BIN = Path(sys.executable).parent


def design_space(axes: int, values: int, n: int) -> dict:
    names = [f"axis{index}" for index in range(axes)]
    return {
        "templates": [" ".join(f"{{{name}}}" for name in names)],
        "axes": {name: [f"{name}-value{i}" for i in range(values)] for name in names},
        "mode": "sample",
        "sample": {"n": n, "seed": 1, "balance": names[:2]},
        "exclude": [
            {names[0]: f"{names[0]}-value0", names[2]: f"{names[2]}-value1"},
            {names[3]: f"{names[3]}-value7"},
        ],
        "defaults": {"image_size": "square", "seed_from": "row"},
    }


def timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    result = call()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--axes", type=int, default=8)
    parser.add_argument("--values", type=int, default=100)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "recipes" / "space.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(design_space(args.axes, args.values, args.n), sort_keys=False))
        recipe = load_recipe(UPath(path))
        assert isinstance(recipe, Recipe) and recipe.sample is not None
        draw_s, drawn = timed(lambda: sample_assignments(recipe, recipe.sample, UPath(path)))
        expand_s, table = timed(lambda: expand(recipe, UPath(path)))
        env = {"FLUX_DATA_DIR": folder, "PATH": str(BIN)}
        preview_s, done = timed(
            lambda: subprocess.run(
                [str(BIN / "flux-pipeline"), "recipe", "preview", str(path), "--rows", "5"],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
        )
    print(
        json.dumps(
            {
                "combinations": combinations(recipe),
                "n": args.n,
                "rows": table.num_rows,  # type: ignore[attr-defined]
                "distinct": len({tuple(a.values()) for a in drawn}),  # type: ignore[attr-defined]
                "draw_s": round(draw_s, 2),
                "expand_s": round(expand_s, 2),
                "recipe_preview_s": round(preview_s, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "preview_last_line": done.stdout.strip().splitlines()[-1],  # type: ignore[attr-defined]
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
