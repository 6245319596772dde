"""scripts/tune_vs_grid.py: the trial at which the tune's best-so-far first reaches the grid's best seed's AP."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "tune_vs_grid.py"


def test_the_first_trial_at_or_above_the_grid_best_of_the_seed_is_reported(tmp_path):
    grid, tune = tmp_path / "grid", tmp_path / "tune"
    points = [{"id": "g0"}, {"id": "g1"}, {"id": "g2"}]
    grid.mkdir()
    (grid / "sweep.json").write_text(json.dumps({"points": points}))
    for pid, seed0, seed1 in (("g0", 0.50, 0.99), ("g1", 0.70, 0.10), ("g2", 0.60, 0.20)):
        for seed, ap in ((0, seed0), (1, seed1)):
            (grid / pid / f"seed{seed}").mkdir(parents=True)
            (grid / pid / f"seed{seed}" / "metrics.json").write_text(json.dumps({"bbox": {"AP": ap}}))
    tune.mkdir()
    trials = [{"number": i, "state": s, "params": {}, "ap": ap} for i, (s, ap) in
              enumerate([("COMPLETE", 0.6), ("PRUNED", 0.1), ("COMPLETE", 0.7), ("COMPLETE", 0.8)])]
    (tune / "trials.json").write_text(json.dumps(trials + [{"number": 4, "state": "FAIL", "params": {}, "ap": None}]))
    out = tmp_path / "fig" / "tvg.png"
    printed = subprocess.run([sys.executable, str(SCRIPT), "--tune", str(tune), "--grid", str(grid), "--out",
                              str(out)], capture_output=True, text=True, check=True).stdout
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["grid_best"] == 0.70 and record["grid_best_point"] == "g1"  # seed 0's, not seed 1's 0.99
    assert record["trials_to_reach_grid_best"] == 3 and record["tune_best"] == 0.8 and record["trials"] == 4
    assert out.stat().st_size > 5_000 and "reached at trial 3 of 4" in printed
    seed1 = subprocess.run([sys.executable, str(SCRIPT), "--tune", str(tune), "--grid", str(grid), "--seed", "1",
                            "--out", str(out)], capture_output=True, text=True, check=True).stdout
    assert "not reached" in seed1
