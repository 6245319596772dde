"""Print the tables of REPRODUCTION.md from the runs of ``scripts/reproduce.sh`` (their results.json files).

    .venv/bin/python scripts/reproduction_tables.py [--runs work_dirs/repro] [--figures docs/figures]
    .venv/bin/python scripts/reproduction_tables.py --pick-best SWEEP_DIR GROUP...   (used by reproduce.sh)

Reads only what the sweeps, ``fltool analyze`` (loss-cdf, anchors, prior) and ``fltool bench speed-accuracy`` wrote;
a sweep not run yet shows as such. ``--figures`` also copies the heat map, loss-CDF, prior and speed/accuracy plots
there. ``--pick-best`` prints, for each GROUP (comma-separated loss presets of the sweep), the point index of the
group's highest seed-0 AP: the points ``reproduce.sh`` then trains with more seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Optional

# The paper's numbers (../shared/PAPER.md): AP / AP50 / AP75 on COCO minival, R-50-FPN, 600 px
PAPER_1A = {0.1: (0.0, 0.0, 0.0), 0.25: (10.8, 16.0, 11.7), 0.5: (30.2, 46.7, 32.8), 0.75: (31.1, 49.4, 33.0),
            0.9: (30.8, 49.7, 32.3), 0.99: (28.7, 47.4, 29.9), 0.999: (25.1, 41.7, 26.1)}
PAPER_1B = {0: (0.75, 31.1), 0.5: (0.5, 32.9), 1: (0.25, 33.7), 2: (0.25, 34.0), 5: (0.25, 32.2)}  # best alpha, AP
PAPER_3 = {"CE": (31.1, 49.4, 33.0), "FL g2": (34.0, 52.5, 36.5), "FL* g2 b1": (33.8, 52.7, 36.3),
           "FL* g4 b0": (33.9, 51.8, 36.4)}
ALPHAS = [0.25, 0.5, 0.75]
GAMMAS = [0, 0.5, 1, 2, 5]


class Sweep:
    """One sweep folder's results.json, looked up by a point's settings."""

    def __init__(self, folder: Path) -> None:
        path = folder / "results.json"
        self.data = json.loads(path.read_text()) if path.is_file() else None
        self.name = folder.name

    def point(self, **settings) -> Optional[dict]:
        for point in (self.data or {}).get("points", []):
            if point["settings"] == settings and point["n"]:
                return point
        return None

    def seeds(self) -> str:
        return ", ".join(str(s) for s in self.data["seeds"]) if self.data else "-"

    def iters(self) -> str:
        if not self.data:
            return "-"
        if self.data.get("max_iters"):
            return str(self.data["max_iters"])
        for point in self.data["points"]:  # the config's own length: what the runs' metrics.json say they reached
            for run in point["runs"]:
                metrics = Path(run.get("metrics_file") or "")
                if metrics.is_file():
                    return f"{json.loads(metrics.read_text()).get('iteration')} (the config's)"
        return "the config's"


def cell(point: Optional[dict], key: str = "AP") -> str:
    if point is None or point["mean"].get(key) is None:
        return "not run"
    mean, std = 100 * point["mean"][key], point["std"].get(key)
    return f"{mean:.1f} ± {100 * std:.1f}" if point["n"] > 1 and std is not None else f"{mean:.1f} (n=1)"


def per_seed(point: Optional[dict]) -> str:
    if point is None:
        return ""
    return ", ".join(f"{100 * r['metrics']['AP']:.1f}" for r in point["runs"] if r.get("metrics"))


def three(point: Optional[dict]) -> str:
    return " | ".join(cell(point, k) for k in ("AP", "AP50", "AP75"))


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


def loss_cdf(path: Path) -> list[str]:
    if not path.is_file():
        return ["(loss-cdf not run)"]
    data = json.loads(path.read_text())
    out = [f"{data['num_images']} {data['split']} images of `{data['config']}`: "
           f"{data['samples']['positive']:,} positive and {data['samples']['negative']:,} negative samples "
           f"(anchor x class); peak RSS {data['memory']['peak_rss_mb']:.0f} MB.", "",
           "| gamma | hardest negatives carrying 50% / 90% of their loss | hardest positives carrying 50% / 90% |",
           "|---|---|---|"]
    for neg, pos in zip(data["negative"], data["positive"]):
        out.append(f"| {neg['gamma']:g} | {100 * neg['hardest_fraction_50']:.3g}% / "
                   f"{100 * neg['hardest_fraction_90']:.3g}% | {100 * pos['hardest_fraction_50']:.3g}% / "
                   f"{100 * pos['hardest_fraction_90']:.3g}% |")
    return out


def speed(path: Path) -> list[str]:
    """One row per (scale, backend): fltool's eager PyTorch, stock MMDetection's inference of the same weights, and
    the ONNX Runtime export, with each one's speed relative to fltool's eager path at that scale."""
    if not path.is_file():
        return ["(bench speed-accuracy not run)"]
    data = json.loads(path.read_text())
    env, settings = data["environment"], data["settings"]
    names = {"pytorch": "fltool (PyTorch, channels-last)", "mmdet": "stock MMDetection", "onnxruntime": "ONNX Runtime"}
    eager = {p["scale"]: p["median_ms"] for p in data["points"] if p.get("backend", "pytorch") == "pytorch"}
    out = ["| scale (short side, px) | backend | AP | AP50 | ms per image (median) | p90 ms | speed vs fltool | GFLOPs |",
           "|---|---|---|---|---|---|---|---|"]
    for p in sorted(data["points"], key=lambda q: (q["scale"], list(names).index(q.get("backend", "pytorch")))):
        ap = "n/a" if p.get("AP") is None else f"{100 * p['AP']:.1f}"
        ap50 = "n/a" if p.get("AP50") is None else f"{100 * p['AP50']:.1f}"
        ref = eager.get(p["scale"])
        ratio = f"{ref / p['median_ms']:.2f}x" if ref else "-"
        out.append(f"| {p['scale']} | {names.get(p.get('backend', 'pytorch'), p.get('backend'))} | {ap} | {ap50} | "
                   f"{p['median_ms']:.1f} | {p['p90_ms']:.1f} | {ratio} | {p['flops'] / 1e9:.2f} |")
    out += ["", f"{env['device']} ({env['device_name']}), {env['threads']} thread(s), batch 1, "
                f"first {settings.get('num_images')} val images."]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The regime the paper studied: the sparse set, OHEM, the prior
# ---------------------------------------------------------------------------------------------------------------------
SEED_ZERO = 0


def canonical(name: str) -> str:
    from fltool.engine.sweep import loss_preset

    return loss_preset(name)[0]


def seed_ap(point: dict, seed: int = SEED_ZERO) -> Optional[float]:
    run = next((r for r in point["runs"] if r["seed"] == seed and r.get("metrics")), None)
    return None if run is None else run["metrics"].get("AP")


def group_best(sweep: Sweep, group: str) -> tuple[Optional[dict], list[tuple[str, Optional[float]]]]:
    """(the point of the group with the highest seed-0 AP, [(preset, seed-0 AP)] in the group's order)."""
    by_loss = {p["settings"].get("loss"): p for p in (sweep.data or {}).get("points", [])}
    names = [canonical(n) for n in group.split(",") if n.strip()]
    scores = [(name, seed_ap(by_loss[name]) if name in by_loss else None) for name in names]
    done = [(ap, -i, name) for i, (name, ap) in enumerate(scores) if ap is not None]
    return (by_loss[max(done)[2]] if done else None), scores


def pick_best(folder: Path, groups: list[str]) -> list[int]:
    """The point index of each group's best (first on ties), for `fltool sweep --point`; an error if the sweep has
    not finished seed 0 of any point of a group, or names a preset the sweep does not have."""
    sweep = Sweep(folder)
    if sweep.data is None:
        sys.exit(f"reproduction_tables: no results.json in {folder}: run its sweep first")
    have = {p["settings"].get("loss") for p in sweep.data["points"]}
    indices = []
    for group in groups:
        unknown = [n for n in group.split(",") if n.strip() and canonical(n) not in have]
        if unknown:
            sys.exit(f"reproduction_tables: {folder} has no point {unknown[0]}")
        best, _ = group_best(sweep, group)
        if best is None:
            sys.exit(f"reproduction_tables: no seed-{SEED_ZERO} result in {folder} for {group}")
        if best["index"] not in indices:
            indices.append(best["index"])
    return indices


def eval_history(work_dir: Path) -> list[tuple[int, float]]:
    """(iteration, AP) of every evaluation of a run, from MMEngine's scalars.json files (one per start of the run;
    an evaluation's iteration is that of the training line logged just before it)."""
    history, last_iter = [], 0
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if "coco/bbox_mAP" in row:
                history.append((last_iter, float(row["coco/bbox_mAP"])))
            elif "iter" in row:
                last_iter = int(row["iter"])
    return history


def regime_rows(sweep: Sweep, groups: list[tuple[str, str]]) -> list[tuple[str, Optional[dict]]]:
    """(label, point) per group: the group's best, named with its preset."""
    rows = []
    for label, group in groups:
        best, _ = group_best(sweep, group)
        name = best["settings"]["loss"] if best else "-"
        rows.append((f"{label} ({name})" if "," in group else label, best))
    return rows


def regime_table(sweep: Sweep, rows: list[tuple[str, Optional[dict]]]) -> list[str]:
    out = ["| loss | AP | AP50 | AP75 | APs | AP per seed (seeds) | command |", "|---|---|---|---|---|---|---|"]
    commands = []
    for label, point in rows:
        seeds = ", ".join(str(r["seed"]) for r in (point or {}).get("runs", []) if r.get("metrics"))
        ref = ""
        if point is not None:
            commands.append(f"{sweep.data['sweep_command']} --point {point['index']}")
            ref = f"[{len(commands)}]"
        out.append(f"| {label} | {three(point)} | {cell(point, 'APs')} | {per_seed(point)} ({seeds}) | {ref} |")
    out += [""] + [f"[{i}] `{c}`" for i, c in enumerate(commands, 1)]
    return out


def selection_table(sweep: Sweep, groups: list[tuple[str, str]]) -> list[str]:
    out = [f"| family | preset | AP, seed {SEED_ZERO} | chosen |", "|---|---|---|---|"]
    for label, group in groups:
        if "," not in group:
            continue
        best, scores = group_best(sweep, group)
        for name, ap in scores:
            chosen = "yes" if best is not None and best["settings"]["loss"] == name else ""
            out.append(f"| {label} | {name} | {'not run' if ap is None else f'{100 * ap:.1f}'} | {chosen} |")
    return out


def convergence_table(rows: list[tuple[str, Optional[dict]]]) -> list[str]:
    """Mean AP over seeds at each evaluation, and the rise over the last interval against the final seed spread."""
    out = ["| loss | AP at each evaluation (iteration: mean over seeds) | rise over the last interval | "
           "seed std of the final AP | still rising (rise > std)? |", "|---|---|---|---|---|"]
    for label, point in rows:
        runs = [r for r in (point or {}).get("runs", []) if r.get("metrics")]
        histories = [eval_history(Path(r["work_dir"])) for r in runs]
        histories = [h for h in histories if len(h) >= 2]
        if not histories:
            out.append(f"| {label} | not run | | | |")
            continue
        iters = sorted({i for h in histories for i, _ in h})
        means = {i: sum(dict(h).get(i, math.nan) for h in histories) / len(histories) for i in iters}
        rises = [h[-1][1] - h[-2][1] for h in histories]
        rise = sum(rises) / len(rises)
        std = (point or {}).get("std", {}).get("AP")
        spread = "n/a" if std is None else f"{100 * std:.1f}"
        verdict = "n/a" if std is None else ("yes" if rise > std else "no")
        curve = ", ".join(f"{i}: {100 * m:.1f}" for i, m in means.items())
        out.append(f"| {label} | {curve} | {100 * rise:+.1f} | {spread} | {verdict} |")
    return out


def diff_se(a: Optional[dict], b: Optional[dict]) -> Optional[tuple[float, float]]:
    """(mean(a) - mean(b), its standard error sqrt(s_a^2/n_a + s_b^2/n_b)) in AP points; None without 2+ seeds."""
    if a is None or b is None or a["n"] < 2 or b["n"] < 2 or a["std"].get("AP") is None or b["std"].get("AP") is None:
        return None
    return (100 * (a["mean"]["AP"] - b["mean"]["AP"]),
            100 * math.sqrt(a["std"]["AP"] ** 2 / a["n"] + b["std"]["AP"] ** 2 / b["n"]))


def difference(a: Optional[dict], b: Optional[dict]) -> str:
    """mean(a) - mean(b) in AP points, with its standard error and the ratio, as three table cells."""
    values = diff_se(a, b)
    if values is None:
        return "needs 2+ seeds of both | | "
    diff, se = values
    return f"{diff:+.1f} | {se:.1f} | {abs(diff) / se:.1f}" if se > 0 else f"{diff:+.1f} | 0.0 | -"


def differences_table(pairs: list[tuple[str, Optional[dict], Optional[dict]]]) -> list[str]:
    out = ["| comparison | difference in AP (points) | standard error | difference / SE |", "|---|---|---|---|"]
    for label, a, b in pairs:
        out.append(f"| {label} | {difference(a, b)} |")
    return out


def anchors_table(paths: list[tuple[str, Path]]) -> list[str]:
    out = ["| dataset | images | anchors per image | positive per image | boxes per image | positive : all |",
           "|---|---|---|---|---|---|"]
    for name, path in paths:
        if not path.is_file():
            out.append(f"| {name} | not run | | | | |")
            continue
        data = json.loads(path.read_text())
        per = data["per_image"]
        out.append(f"| {name} | {data['num_images']} {data['split']} | {per['anchors']:,.0f} | "
                   f"{per['positive']:.1f} | {per['gt_boxes']:.2f} | 1 in {data['one_positive_in']:,.0f} |")
    return out


def prior_table(path: Path) -> list[str]:
    if not path.is_file():
        return ["(prior not run)"]
    data = json.loads(path.read_text())
    out = [f"`{data['config']}`, {data['max_iters']} iterations, seed {data['seed']}:", "",
           "| loss | pi | bias | outcome | pos_prob, last tenth | AP |", "|---|---|---|---|---|---|"]
    for run in data["runs"]:
        prob = run["final_pos_prob"]
        ap = (run["metrics"] or {}).get("AP")
        out.append(f"| {run['loss']} | {run['prior_prob']:g} | {run['bias']:.3f} | {run['verdict']} | "
                   f"{'n/a' if prob is None else f'{prob:.3f}'} | {'n/a' if ap is None else f'{100 * ap:.1f}'} |")
    return out


# The families of reproduce.sh's regime part (CE_GRID, FL_GRID, OHEM_GRID there): keep the two in step.
SPARSE_GROUPS = [("CE, best alpha", "CE-a0.5,CE-a0.75,CE-a0.9"), ("FL, gamma 2, alpha 0.25", "FL"),
                 ("FL, best gamma", "FL-g0.5-a0.25,FL-g1-a0.25,FL"), ("FL*, gamma 2, beta 1", "FL*"),
                 ("OHEM, best", "OHEM-b128,OHEM-b512,OHEM-b128-nms0.7"), ("OHEM 1:3, B = 128", "OHEM-1:3-b128")]
DENSE_GROUPS = [SPARSE_GROUPS[0], SPARSE_GROUPS[2]]


def longer_rows(short_rows: list[tuple[str, Optional[dict]]], long: Sweep) -> list[tuple[str, Optional[dict]]]:
    """The shorter sweep's rows (regime_rows) with each chosen preset's point in the longer sweep: not chosen anew."""
    return [(label, long.point(**chosen["settings"]) if chosen else None) for label, chosen in short_rows]


def schedule_table(short: list[tuple[str, Optional[dict]]], long: list[tuple[str, Optional[dict]]],
                   short_iters: str, long_iters: str) -> list[str]:
    """Final AP of the same points at both lengths: has AP stopped rising when the schedule doubles? ("yes, still
    rising" when the longer schedule's mean is more than two standard errors above the shorter one's.)"""
    out = [f"| loss | AP at {short_iters} | AP at {long_iters} | change (points) | standard error | change / SE | "
           "still rising (change > 2 SE)? |", "|---|---|---|---|---|---|---|"]
    for (label, a), (_, b) in zip(short, long):
        values = diff_se(b, a)
        verdict = "" if values is None else ("yes" if values[0] > 2 * values[1] else "no")
        out.append(f"| {label} | {cell(a)} | {cell(b)} | {difference(b, a)} | {verdict} |")
    return out


def regime_pairs(sparse_rows: list[tuple[str, Optional[dict]]], dense_rows: list[tuple[str, Optional[dict]]]
                 ) -> list[tuple[str, Optional[dict], Optional[dict]]]:
    """The comparisons of the answer, from the rows of SPARSE_GROUPS and DENSE_GROUPS (in their order)."""
    s = {label: point for (label, _), (_, point) in zip(SPARSE_GROUPS, sparse_rows)}
    d = {label: point for (label, _), (_, point) in zip(DENSE_GROUPS, dense_rows)}
    return [("sparse: FL (gamma 2) - best CE", s["FL, gamma 2, alpha 0.25"], s["CE, best alpha"]),
            ("sparse: FL (best gamma) - best CE", s["FL, best gamma"], s["CE, best alpha"]),
            ("sparse: FL (gamma 2) - best OHEM", s["FL, gamma 2, alpha 0.25"], s["OHEM, best"]),
            ("sparse: FL (gamma 2) - OHEM 1:3", s["FL, gamma 2, alpha 0.25"], s["OHEM 1:3, B = 128"]),
            ("dense: FL (best gamma) - best CE", d["FL, best gamma"], d["CE, best alpha"])]


def regime_sections(runs: Path, iters: str, long_iters: str) -> list[tuple[str, list[str]]]:
    sparse, dense = Sweep(runs / f"sparse_{iters}"), Sweep(runs / f"dense_{iters}")
    s_rows, d_rows = regime_rows(sparse, SPARSE_GROUPS), regime_rows(dense, DENSE_GROUPS)
    sparse_l, dense_l = Sweep(runs / f"sparse_{long_iters}"), Sweep(runs / f"dense_{long_iters}")
    sl_rows, dl_rows = longer_rows(s_rows, sparse_l), longer_rows(d_rows, dense_l)
    return [
        ("Imbalance: positive anchors per image, the model's own assigner",
         anchors_table([("sparse (retinanet_r18-gn_synth-sparse_384)", runs / "anchors_sparse" / "anchors.json"),
                        ("dense (retinanet_r18-gn_synth_256)", runs / "anchors_dense" / "anchors.json")])),
        (f"Sparse set: choosing the best of each family (seed {SEED_ZERO}, {sparse.iters()} iterations)",
         selection_table(sparse, SPARSE_GROUPS)),
        (f"Sparse set: {sparse.iters()} iterations, seeds {sparse.seeds()}", regime_table(sparse, s_rows)),
        (f"Dense set: choosing the best (seed {SEED_ZERO}, {dense.iters()} iterations)",
         selection_table(dense, DENSE_GROUPS)),
        (f"Dense set: {dense.iters()} iterations, seeds {dense.seeds()}", regime_table(dense, d_rows)),
        ("Differences (mean over seeds; standard error of the difference of two means)",
         differences_table(regime_pairs(s_rows, d_rows))),
        ("Convergence: sparse set", convergence_table(s_rows)),
        ("Convergence: dense set", convergence_table(d_rows)),
        (f"Sparse set: {sparse_l.iters()} iterations, seeds {sparse_l.seeds()} (the points chosen at {iters})",
         regime_table(sparse_l, sl_rows)),
        (f"Dense set: {dense_l.iters()} iterations, seeds {dense_l.seeds()} (the points chosen at {iters})",
         regime_table(dense_l, dl_rows)),
        (f"Differences at {long_iters} iterations", differences_table(regime_pairs(sl_rows, dl_rows))),
        (f"Schedule length: sparse set, {iters} against {long_iters} iterations",
         schedule_table(s_rows, sl_rows, iters, long_iters)),
        (f"Schedule length: dense set, {iters} against {long_iters} iterations",
         schedule_table(d_rows, dl_rows, iters, long_iters)),
        (f"Convergence: sparse set, {long_iters} iterations", convergence_table(sl_rows)),
        (f"Convergence: dense set, {long_iters} iterations", convergence_table(dl_rows)),
        ("The prior, as configured (AdamW, gradient clipping)", prior_table(runs / "sparse_prior" / "prior.json")),
        ("The prior, with the paper's optimiser (SGD, no clipping)",
         prior_table(runs / "sparse_prior_sgd" / "prior.json")),
        (f"Figure 4: loss CDF of the sparse-set model (FL, seed 0, {iters} iterations)",
         loss_cdf(runs / "sparse_loss_cdf" / "loss_cdf.json")),
        (f"Figure 4: loss CDF of the sparse-set model (FL, seed 0, {long_iters} iterations)",
         loss_cdf(runs / f"sparse_loss_cdf_{long_iters}" / "loss_cdf.json")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("work_dirs/repro"))
    parser.add_argument("--figures", type=Path, default=None, help="copy the plots into this folder")
    parser.add_argument("--iters", default="1200", help="the regime runs' length (reproduce.sh's ITERS)")
    parser.add_argument("--long-iters", default=None,
                        help="the chosen points' longer runs (reproduce.sh's LONG_ITERS; default 2 x --iters)")
    parser.add_argument("--pick-best", nargs="+", metavar=("SWEEP_DIR", "GROUP"), default=None,
                        help="print the point index of each group's best seed-0 AP, and exit")
    args = parser.parse_args()
    if args.pick_best:
        if len(args.pick_best) < 2:
            parser.error("--pick-best takes a sweep folder and one or more groups")
        print(" ".join(str(i) for i in pick_best(Path(args.pick_best[0]), args.pick_best[1:])))
        return
    runs = args.runs
    long_iters = args.long_iters or str(2 * int(args.iters))
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
    ] + regime_sections(runs, args.iters, long_iters)
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for source, name in [(runs / "synth_grid" / "heatmap.png", "sweep_synth_gamma_alpha.png"),
                             (runs / "loss_cdf" / "loss_cdf.png", "loss_cdf_default.png"),
                             (runs / "speed_accuracy" / "speed_accuracy.png", "speed_accuracy_default.png"),
                             (runs / "sparse_loss_cdf" / "loss_cdf.png", "loss_cdf_sparse.png"),
                             (runs / f"sparse_loss_cdf_{long_iters}" / "loss_cdf.png",
                              f"loss_cdf_sparse_{long_iters}.png"),
                             (runs / "sparse_prior" / "prior.png", "prior_sparse.png"),
                             (runs / "sparse_prior_sgd" / "prior.png", "prior_sparse_sgd.png")]:
            if source.is_file():
                shutil.copyfile(source, args.figures / name)


if __name__ == "__main__":
    main()
