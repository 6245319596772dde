"""Print the tables of REPRODUCTION.md from the runs of ``scripts/reproduce.sh`` (their results.json files).

    .venv/bin/python scripts/reproduction_tables.py [--runs work_dirs/repro] [--figures docs/figures]
    .venv/bin/python scripts/reproduction_tables.py --pick-best SWEEP_DIR GROUP... [--record FILE]
        (used by reproduce.sh)

Reads only what the sweeps, ``fltool analyze`` (loss-cdf, anchors, prior) and ``fltool bench speed-accuracy`` wrote;
a sweep not run yet shows as such. ``--figures`` also copies the heat map, loss-CDF, prior and speed/accuracy plots
there. ``--pick-best`` prints, for each GROUP (comma-separated loss presets of the sweep), the point index of the
group's highest seed-0 AP: the points ``reproduce.sh`` then trains with more seeds.

This file holds the sections up to Table 1e and ``main``; ``regime_tables.py`` the regime section,
``errors_tables.py`` the error breakdown of the regime's losses, and ``tables_common.py`` what they share.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Optional

from errors_tables import errors_sections
from regime_tables import chosen_length, lengths_arg, longer_lengths, pick_best, regime_sections
from tables_common import Sweep, cell, loss_cdf, per_seed, three

# The paper's numbers (../shared/PAPER.md): AP / AP50 / AP75 on COCO minival, R-50-FPN, 600 px
PAPER_1A = {0.1: (0.0, 0.0, 0.0), 0.25: (10.8, 16.0, 11.7), 0.5: (30.2, 46.7, 32.8), 0.75: (31.1, 49.4, 33.0),
            0.9: (30.8, 49.7, 32.3), 0.99: (28.7, 47.4, 29.9), 0.999: (25.1, 41.7, 26.1)}
PAPER_1B = {0: (0.75, 31.1), 0.5: (0.5, 32.9), 1: (0.25, 33.7), 2: (0.25, 34.0), 5: (0.25, 32.2)}  # best alpha, AP
PAPER_3 = {"CE": (31.1, 49.4, 33.0), "FL g2": (34.0, 52.5, 36.5), "FL* g2 b1": (33.8, 52.7, 36.3),
           "FL* g4 b0": (33.9, 51.8, 36.4)}
ALPHAS = [0.25, 0.5, 0.75]
GAMMAS = [0, 0.5, 1, 2, 5]


def paper(values) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


def table_1a(grid: Sweep, ce: Sweep) -> list[str]:
    out = ["| alpha | paper AP / AP50 / AP75 | AP | AP50 | AP75 | AP per seed |", "|---|---|---|---|---|---|"]
    for alpha, ref in PAPER_1A.items():
        point = (grid.point(**{"loss.gamma": 0, "loss.alpha": alpha}) if alpha in ALPHAS
                 else ce.point(loss=f"CE-a{alpha}"))
        out.append(f"| {alpha} | {paper(ref)} | {three(point)} | {per_seed(point)} |")
    return out


def table_1b(grid: Sweep) -> list[str]:
    out = ["| gamma \\ alpha | " + " | ".join(map(str, ALPHAS)) + " | best here | paper: best alpha, AP |",
           "|---|" + "---|" * (len(ALPHAS) + 2)]
    for gamma in GAMMAS:
        points = [grid.point(**{"loss.gamma": gamma, "loss.alpha": a}) for a in ALPHAS]
        done = [(p["mean"]["AP"], a) for p, a in zip(points, ALPHAS) if p is not None]
        best = f"alpha {max(done)[1]}" if done else "-"
        ref_alpha, ref_ap = PAPER_1B[gamma]
        out.append(f"| {gamma} | " + " | ".join(cell(p) for p in points) + f" | {best} | {ref_alpha}, {ref_ap} |")
    return out


def table_rows(rows: list[tuple[str, Optional[dict], str]]) -> list[str]:
    out = ["| loss | AP | AP50 | AP75 | AP per seed | paper AP / AP50 / AP75 |", "|---|---|---|---|---|---|"]
    for label, point, ref in rows:
        out.append(f"| {label} | {three(point)} | {per_seed(point)} | {ref} |")
    return out


def table_3_synth(grid: Sweep, flstar: Sweep) -> list[str]:
    return table_rows([
        ("CE, alpha 0.75 (paper's best CE)", grid.point(**{"loss.gamma": 0, "loss.alpha": 0.75}), paper(PAPER_3["CE"])),
        ("FL, gamma 2, alpha 0.25", grid.point(**{"loss.gamma": 2, "loss.alpha": 0.25}), paper(PAPER_3["FL g2"])),
        ("FL*, gamma 2, beta 1", flstar.point(loss="FL*"), paper(PAPER_3["FL* g2 b1"])),
        ("FL*, gamma 4, beta 0", flstar.point(loss="FL*-g4-b0"), paper(PAPER_3["FL* g4 b0"]))])


def table_full(sweep: Sweep) -> list[str]:
    return table_rows([
        ("CE, alpha 0.5", sweep.point(loss="CE-a0.5"), paper(PAPER_1A[0.5])),
        ("CE, alpha 0.75", sweep.point(loss="CE-a0.75"), paper(PAPER_1A[0.75])),
        ("FL, gamma 0.5, alpha 0.25", sweep.point(loss="FL-g0.5-a0.25"), "-"),
        ("FL, gamma 2, alpha 0.25 (the default config's loss)", sweep.point(loss="FL"), paper(PAPER_3["FL g2"]))])


def table_bccd(sweep: Sweep) -> list[str]:
    return table_rows([
        ("CE, alpha 0.25", sweep.point(loss="CE-a0.25"), paper(PAPER_1A[0.25])),
        ("CE, alpha 0.75", sweep.point(loss="CE-a0.75"), paper(PAPER_3["CE"])),
        ("FL, gamma 1, alpha 0.25", sweep.point(loss="FL-g1-a0.25"), "33.7 / 52.0 / 36.2"),
        ("FL, gamma 2, alpha 0.25", sweep.point(loss="FL"), paper(PAPER_3["FL g2"])),
        ("FL*, gamma 2, beta 1", sweep.point(loss="FL*"), paper(PAPER_3["FL* g2 b1"])),
        ("FL*, gamma 4, beta 0", sweep.point(loss="FL*-g4-b0"), paper(PAPER_3["FL* g4 b0"]))])


def own_data(runs: Path, seeds=(0, 1)) -> list[str]:
    """BCCD through `fltool train --data` (no config file) against the shipped BCCD config, same length, per seed."""
    rows = []
    for label, stem in (("`fltool train --data ../shared/data/bccd`", "bccd_data"),
                        ("`fltool train retinanet_r18-gn_bccd_320`", "bccd_cfg")):
        values = []
        for seed in seeds:
            path = runs / f"{stem}_s{seed}" / "metrics.json"
            if path.is_file():
                data = json.loads(path.read_text())
                values.append((seed, data["iteration"], data["bbox"]))
        if not values:
            rows.append(f"| {label} | (not run) | | |")
            continue
        aps = [v[2]["AP"] for v in values]
        mean = sum(aps) / len(aps)
        spread = (max(aps) - min(aps)) / 2 if len(aps) > 1 else float("nan")
        per_seed = ", ".join(f"seed {s}: {100 * b['AP']:.1f} / {100 * b['AP50']:.1f} / {100 * b['AP75']:.1f}"
                             for s, _, b in values)
        rows.append(f"| {label} | {values[0][1]} | {100 * mean:.1f} +- {100 * spread:.1f} | {per_seed} |")
    return ["| run | iterations | AP (mean +- half range) | AP / AP50 / AP75 per seed |", "|---|---|---|---|"] + rows


def speed(path: Path) -> list[str]:
    """One row per (scale, backend, precision): fltool's eager PyTorch, stock MMDetection's inference of the same
    weights, the ONNX Runtime and OpenVINO exports (fp32, bf16, int8), with each one's speed relative to fltool's
    eager fp32 path at that scale."""
    if not path.is_file():
        return ["(bench speed-accuracy not run)"]
    data = json.loads(path.read_text())
    env, settings = data["environment"], data["settings"]
    names = {"pytorch": "fltool (PyTorch, channels-last)", "mmdet": "stock MMDetection", "onnxruntime": "ONNX Runtime",
             "openvino": "OpenVINO"}
    precisions = ("fp32", "bf16", "int8")
    eager = {p["scale"]: p["median_ms"] for p in data["points"]
             if p.get("backend", "pytorch") == "pytorch" and p.get("precision", "fp32") == "fp32"}
    out = ["| scale (short side, px) | backend | AP | AP50 | ms per image (median) | p90 ms | speed vs fltool "
           "| GFLOPs |",
           "|---|---|---|---|---|---|---|---|"]
    def order(q: dict) -> tuple:
        backend, precision = q.get("backend", "pytorch"), q.get("precision", "fp32")
        return (q["scale"], list(names).index(backend) if backend in names else len(names),
                precisions.index(precision) if precision in precisions else len(precisions))

    for p in sorted(data["points"], key=order):
        ap = "n/a" if p.get("AP") is None else f"{100 * p['AP']:.1f}"
        ap50 = "n/a" if p.get("AP50") is None else f"{100 * p['AP50']:.1f}"
        ref = eager.get(p["scale"])
        ratio = f"{ref / p['median_ms']:.2f}x" if ref else "-"
        label = names.get(p.get("backend", "pytorch"), p.get("backend")) + \
            ("" if p.get("precision", "fp32") == "fp32" else f" {p['precision']}")
        out.append(f"| {p['scale']} | {label} | {ap} | {ap50} | "
                   f"{p['median_ms']:.1f} | {p['p90_ms']:.1f} | {ratio} | {p['flops'] / 1e9:.2f} |")
    out += ["", f"{env['device']} ({env['device_name']}), {env['threads']} thread(s), batch 1, "
                f"first {settings.get('num_images')} val images."]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("work_dirs/repro"))
    parser.add_argument("--figures", type=Path, default=None, help="copy the plots into this folder")
    parser.add_argument("--iters", default=None,
                        help="the length the regime's points were chosen at (reproduce.sh's ITERS, which it passes; "
                             "default: the length the longer runs' chosen.json records, else the shortest sparse_N "
                             "or dense_N sweep --runs holds)")
    parser.add_argument("--long-iters", type=lengths_arg, nargs="+", default=None,
                        help="the lengths at which the chosen points train again (reproduce.sh's LONG_ITERS, which "
                             "it passes; default: every longer length --runs holds a sparse_N or dense_N sweep of)")
    parser.add_argument("--pick-best", nargs="+", metavar=("SWEEP_DIR", "GROUP"), default=None,
                        help="print the point index of each group's best seed-0 AP, and exit")
    parser.add_argument("--record", type=Path, default=None,
                        help="with --pick-best: also write the choice to this JSON file (reproduce.sh: chosen.json "
                             "in the folder of the runs it picks for)")
    args = parser.parse_args()
    if args.pick_best:
        if len(args.pick_best) < 2:
            parser.error("--pick-best takes a sweep folder and one or more groups")
        print(" ".join(str(i) for i in pick_best(Path(args.pick_best[0]), args.pick_best[1:], args.record)))
        return
    runs = args.runs
    iters = args.iters or chosen_length(runs)
    if args.long_iters:
        long_iters = [n for group in args.long_iters for n in group]
    else:
        long_iters = longer_lengths(runs, iters) if iters else []
    grid, ce, flstar = Sweep(runs / "synth_grid"), Sweep(runs / "synth_ce_alpha"), Sweep(runs / "synth_flstar")
    long, bccd = Sweep(runs / "synth_full"), Sweep(runs / "bccd_losses")
    sections = [
        (f"Table 1a: embedded dataset, {grid.iters()} iterations, seeds {grid.seeds()}", table_1a(grid, ce)),
        (f"Table 1b: embedded dataset, AP, {grid.iters()} iterations, seeds {grid.seeds()}", table_1b(grid)),
        (f"Table 3: embedded dataset, {grid.iters()} iterations, seeds {flstar.seeds()}", table_3_synth(grid, flstar)),
        (f"Full schedule: embedded dataset, {long.iters()} iterations, seeds {long.seeds()}", table_full(long)),
        (f"BCCD: {bccd.iters()} iterations, seeds {bccd.seeds()}", table_bccd(bccd)),
        ("Your own data: BCCD through --data against the shipped BCCD config", own_data(runs)),
        ("Figure 4: loss CDF of the default model", loss_cdf(runs / "loss_cdf" / "loss_cdf.json")),
        ("Table 1e: speed vs accuracy of the default model", speed(runs / "speed_accuracy" / "results.json")),
    ] + (regime_sections(runs, iters, long_iters) if iters else [
        ("The regime the paper studied", [f"no sparse_N or dense_N sweep in {runs}: run scripts/reproduce.sh regime"])]
    ) + errors_sections(runs)
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for source, name in [(runs / "synth_grid" / "heatmap.png", "sweep_synth_gamma_alpha.png"),
                             (runs / "loss_cdf" / "loss_cdf.png", "loss_cdf_default.png"),
                             (runs / "speed_accuracy" / "speed_accuracy.png", "speed_accuracy_default.png"),
                             *[(runs / f"sparse_loss_cdf_{n}" / "loss_cdf.png", f"loss_cdf_sparse_{n}.png")
                               for n in ([iters] if iters else []) + long_iters],
                             (runs / "sparse_prior" / "prior.png", "prior_sparse.png"),
                             (runs / "sparse_prior_sgd" / "prior.png", "prior_sparse_sgd.png")]:
            if source.is_file():
                shutil.copyfile(source, args.figures / name)


if __name__ == "__main__":
    main()
