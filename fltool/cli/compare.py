"""``fltool compare``: a thin wrapper over fltool.analysis.compare (parse, call, print)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from typing_extensions import Annotated

from fltool.cli.common import console, fmt, table


def _cells(row: list, runs: int) -> list:
    """Values as fmt prints them, differences signed."""
    values = [fmt(v) for v in row[1:1 + runs]]
    deltas = ["n/a" if d is None else (f"{d:+.3f}" if isinstance(d, float) else f"{d:+d}")
              for d in row[1 + runs:]]
    return [row[0], *values, *deltas]


def compare(
    runs: Annotated[List[Path], typer.Argument(help="Two or more run folders (work dirs of fltool train); the "
                                                    "first is the baseline.", show_default=False)],
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out-dir", help="Output folder (default: work_dirs/compare_<A>_vs_<B>...).", show_default=False)] = None,
) -> None:
    """Two or more runs side by side: COCO metrics overall and per class, TIDE error types, speed, and their loss and
    AP curves, with differences to the first run.

    Reads what each run keeps: metrics.json, MMEngine's */vis_data/scalars.json, and analysis/pr.json and
    analysis/errors.json where `fltool analyze pr` / `errors` ran (nothing is rerun). Writes compare.png (one figure
    for a report: loss, validation AP, metrics, errors), compare_*.csv and compare.json.
    """
    from fltool.analysis.compare import columns, compare_runs, save_comparison

    if len(runs) < 2:
        raise typer.BadParameter("give two or more runs: fltool compare RUN_A RUN_B [RUN_C ...]")
    comp = compare_runs(runs)
    names = [r.name for r in comp.runs]
    out_dir = out_dir or Path("work_dirs") / ("compare_" + "_vs_".join(Path(n).name for n in names))[:120]
    files = save_comparison(comp, out_dir)
    n = len(comp.runs)
    console.print(table("fltool compare: " + " vs ".join(names), columns("metric", names),
                        [_cells(r, n) for r in comp.metric_rows()],
                        caption="COCO bbox metrics of each run's final evaluation; train s/iter: median of "
                                "MMEngine's per-iteration time"))
    if comp.class_rows():
        console.print(table("AP per class", columns("class", names), [_cells(r, n) for r in comp.class_rows()]))
    if comp.error_rows():
        console.print(table("TIDE errors (dAP50; n: number of errors)", columns("error", names),
                            [_cells(r, n) for r in comp.error_rows()]))
    for key, path in files.items():
        console.print(f"{key}: {path}", highlight=False, soft_wrap=True)
