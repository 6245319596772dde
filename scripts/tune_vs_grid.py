"""How many trials ``fltool tune`` needs to reach the best AP of an ``fltool sweep`` grid, at the same schedule and
seed: the best AP so far after each trial, against the grid's best (and the grid's own best-so-far in its order).

    .venv/bin/python scripts/tune_vs_grid.py --tune work_dirs/tune_loss --grid work_dirs/repro/synth_grid \\
        [--seed 0] [--out docs/figures/tune_vs_grid.png]

Reads the tune folder's ``trials.json`` (a pruned trial counts with the AP of its last evaluation, as Optuna saw it)
and the grid's runs of ``--seed`` (each point's ``seed<S>/metrics.json``, in the order of its ``sweep.json``); writes
the plot and a JSON beside it, and prints the answer.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def grid_aps(grid: Path, seed: int) -> list[tuple[str, float]]:
    """(point id, AP of ``seed``) in the sweep's order; a point without that seed's finished run is left out."""
    points = json.loads((grid / "sweep.json").read_text())["points"]
    out = []
    for point in points:
        metrics = grid / point["id"] / f"seed{seed}" / "metrics.json"
        if metrics.is_file():
            out.append((point["id"], json.loads(metrics.read_text())["bbox"]["AP"]))
    return out


def running_best(values: list[float]) -> list[float]:
    best, out = float("-inf"), []
    for v in values:
        best = max(best, v)
        out.append(best)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tune", type=Path, required=True)
    parser.add_argument("--grid", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("tune_vs_grid.png"))
    args = parser.parse_args()
    trials = [t for t in json.loads((args.tune / "trials.json").read_text()) if t.get("ap") is not None]
    grid = grid_aps(args.grid, args.seed)
    if not trials or not grid:
        raise SystemExit(f"nothing to compare: {len(trials)} trials with an AP, {len(grid)} grid runs of seed "
                         f"{args.seed}")
    target_id, target = max(grid, key=lambda g: g[1])
    tune_best = running_best([t["ap"] for t in trials])
    reached = next((i + 1 for i, v in enumerate(tune_best) if v >= target), None)
    record = {"grid": str(args.grid), "seed": args.seed, "grid_points": len(grid), "grid_best": target,
              "grid_best_point": target_id, "tune": str(args.tune), "trials": len(trials),
              "trials_to_reach_grid_best": reached,
              "tune_best": tune_best[-1], "tune_best_trial": max(trials, key=lambda t: t["ap"])["number"],
              "per_trial": [{"trial": t["number"], "state": t["state"], "params": t["params"], "ap": t["ap"],
                             "iteration": t.get("iteration")} for t in trials]}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(range(1, len(trials) + 1), [t["ap"] for t in trials], "o", color="#1f77b4", alpha=0.5,
            label="tune: each trial (pruned: AP at its last evaluation)")
    ax.step(range(1, len(trials) + 1), tune_best, where="post", color="#1f77b4", label="tune: best so far")
    ax.step(range(1, len(grid) + 1), running_best([g[1] for g in grid]), where="post", color="#ff7f0e",
            label="grid (sweep order): best so far")
    ax.axhline(target, color="#ff7f0e", ls="--", lw=1, label=f"grid best {target:.3f} ({target_id})")
    if reached:
        ax.axvline(reached, color="grey", ls=":", lw=1)
    ax.set(xlabel="trials / grid points trained", ylabel=f"COCO AP (val), seed {args.seed}",
           title=f"fltool tune against the {len(grid)}-point grid: grid best reached at trial "
                 f"{reached if reached else 'never'}")
    ax.title.set_fontsize(9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"grid best (seed {args.seed}, {len(grid)} points): {target:.3f} at {target_id}; tune: "
          f"{'reached at trial ' + str(reached) if reached else 'not reached'} of {len(trials)} "
          f"(best {tune_best[-1]:.3f}); {args.out}")


if __name__ == "__main__":
    main()
