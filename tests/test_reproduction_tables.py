"""scripts/reproduction_tables.py: REPRODUCTION.md's tables are the sweeps' results.json numbers, and a sweep not run
yet shows as 'not run' rather than as a number."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduction_tables.py"


def _point(settings: dict, aps: list[float]) -> dict:
    import statistics

    runs = [{"seed": i, "metrics": {"AP": ap, "AP50": ap + 0.1, "AP75": ap - 0.1}} for i, ap in enumerate(aps)]
    mean = {k: statistics.fmean(r["metrics"][k] for r in runs) for k in ("AP", "AP50", "AP75")}
    std = {k: statistics.stdev(r["metrics"][k] for r in runs) for k in ("AP", "AP50", "AP75")}
    return {"settings": settings, "n": len(runs), "mean": mean, "std": std, "runs": runs}


def _write(runs: Path, name: str, points: list[dict], max_iters=300) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "results.json").write_text(json.dumps({"seeds": [0, 1], "max_iters": max_iters,
                                                           "points": points}))


def test_tables_show_the_results_files_numbers_and_mark_missing_sweeps(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "synth_grid", [_point({"loss.gamma": 2, "loss.alpha": 0.25}, [0.30, 0.40]),
                                _point({"loss.gamma": 2, "loss.alpha": 0.5}, [0.50, 0.52]),
                                _point({"loss.gamma": 0, "loss.alpha": 0.75}, [0.2, 0.2])])
    _write(runs, "bccd_losses", [_point({"loss": "FL*"}, [0.41, 0.45])], max_iters=500)
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs)], capture_output=True, text=True,
                         check=True).stdout

    gamma2 = next(line for line in out.splitlines() if line.startswith("| 2 |"))
    assert gamma2.split(" | ")[1:4] == ["35.0 ± 7.1", "51.0 ± 1.4", "not run"]
    assert "alpha 0.5" in gamma2  # the best alpha here is read from the numbers, not assumed
    flstar = next(line for line in out.splitlines() if line.startswith("| FL*, gamma 2, beta 1 |") and "43.0" in line)
    assert "43.0 ± 2.8" in flstar and "41.0, 45.0" in flstar  # mean ± std (ddof 1) and each seed
    assert "BCCD: 500 iterations, seeds 0, 1" in out
    ce_01 = next(line for line in out.splitlines() if line.startswith("| 0.1 |"))
    assert ce_01.count("not run") == 3  # synth_ce_alpha was never run
    assert "(loss-cdf not run)" in out and "Full schedule: embedded dataset, - iterations" in out
