"""REPRODUCTION.md's "The regime the paper studied": the sparse set against the dense one, each family's best point
chosen on seed 0, its three seeds, the differences, and where AP stops rising as the schedule grows (ITERS, then each
of LONG_ITERS). ``pick_best`` is what ``reproduce.sh`` asks (through ``reproduction_tables.py --pick-best``) for the
points to train with more seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Optional

from tables_common import Sweep, cell, loss_cdf, per_seed, three

SEED_ZERO = 0


def canonical(name: str) -> str:
    from fltool.engine.sweep import loss_preset

    return loss_preset(name)[0]


def presets(group: str) -> list[str]:
    """A group's presets ('CE-a0.5,CE-a0.75'), canonically spelled."""
    return [canonical(n) for n in group.split(",") if n.strip()]


def row_label(label: str, group: str, name: str) -> str:
    """A row's label: a family of several presets names the one chosen."""
    return f"{label} ({name})" if "," in group else label


def seed_ap(point: dict, seed: int = SEED_ZERO) -> Optional[float]:
    run = next((r for r in point["runs"] if r["seed"] == seed and r.get("metrics")), None)
    return None if run is None else run["metrics"].get("AP")


def group_best(sweep: Sweep, group: str) -> tuple[Optional[dict], list[tuple[str, Optional[float]]]]:
    """(the point of the group with the highest seed-0 AP, [(preset, seed-0 AP)] in the group's order)."""
    by_loss = {p["settings"].get("loss"): p for p in (sweep.data or {}).get("points", [])}
    names = presets(group)
    scores = [(name, seed_ap(by_loss[name]) if name in by_loss else None) for name in names]
    done = [(ap, -i, name) for i, (name, ap) in enumerate(scores) if ap is not None]
    return (by_loss[max(done)[2]] if done else None), scores


CHOICE_FILE = "chosen.json"  # beside the longer runs: which point of each group was chosen, and on what


def pick_best(folder: Path, groups: list[str], record: Optional[Path] = None) -> list[int]:
    """The point index of each group's best (first on ties), for `fltool sweep --point`; an error if the sweep has
    not finished seed 0 of any point of a group, or names a preset the sweep does not have. ``record``: also write the
    choice there (CHOICE_FILE in the folder of the runs it picks for), so that the longer runs' tables still name their
    points when the sweep they were chosen on is gone."""
    sweep = Sweep(folder)
    if sweep.data is None:
        sys.exit(f"reproduction_tables: no results.json in {folder}: run its sweep first")
    have = {p["settings"].get("loss") for p in sweep.data["points"]}
    indices, chosen = [], []
    for group in groups:
        unknown = [n for n in group.split(",") if n.strip() and canonical(n) not in have]
        if unknown:
            sys.exit(f"reproduction_tables: {folder} has no point {unknown[0]}")
        best, scores = group_best(sweep, group)
        if best is None:
            sys.exit(f"reproduction_tables: no seed-{SEED_ZERO} result in {folder} for {group}")
        if best["index"] not in indices:
            indices.append(best["index"])
        chosen.append({"group": [name for name, _ in scores], "chosen": best["settings"]["loss"],
                       f"seed{SEED_ZERO}_AP": dict(scores)})
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"chosen_on": str(folder), "iters": sweep.iters(), "groups": chosen},
                                     indent=2) + "\n")
    return indices


def recorded_choices(folder: Path) -> dict[tuple[str, ...], str]:
    """CHOICE_FILE of a folder (what pick_best recorded): {the group's presets: the chosen one}; {} if none."""
    path = folder / CHOICE_FILE
    if not path.is_file():
        return {}
    return {tuple(g["group"]): g["chosen"] for g in json.loads(path.read_text())["groups"]}


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
        rows.append((row_label(label, group, name), best))
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


def convergence_table(sweep: Sweep, rows: list[tuple[str, Optional[dict]]]) -> list[str]:
    """Mean AP over seeds at each evaluation, and the rise over the last interval against the final seed spread."""
    out = ["| loss | AP at each evaluation (iteration: mean over seeds) | rise over the last interval | "
           "seed std of the final AP | still rising (rise > std)? |", "|---|---|---|---|---|"]
    for label, point in rows:
        runs = [r for r in (point or {}).get("runs", []) if r.get("metrics")]
        histories = [eval_history(sweep.resolve(r.get("work_dir"))) for r in runs]
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


def change_parts(diff: float, se: float) -> tuple[str, str, str]:
    """A difference in AP points, its standard error and |difference| / SE, formatted ("-" when SE is 0)."""
    return f"{diff:+.1f}", f"{se:.1f}", f"{abs(diff) / se:.1f}" if se > 0 else "-"


def difference(a: Optional[dict], b: Optional[dict]) -> str:
    """mean(a) - mean(b) in AP points, with its standard error and the ratio, as three table cells."""
    values = diff_se(a, b)
    return "needs 2+ seeds of both | | " if values is None else " | ".join(change_parts(*values))


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


def longer_rows(short_rows: list[tuple[str, Optional[dict]]], long: Sweep, groups: list[tuple[str, str]]
                ) -> list[tuple[str, Optional[dict]]]:
    """The shorter sweep's rows (regime_rows) with each chosen preset's point in the longer sweep: not chosen anew.
    The choice recorded beside the longer runs (pick_best's record) comes first: it is what they were run for, and
    the one left when the shorter sweep's files are gone."""
    recorded = recorded_choices(long.folder)
    rows = []
    for (label, group), (short_label, chosen) in zip(groups, short_rows):
        name = recorded.get(tuple(presets(group)))
        if name is None:
            rows.append((short_label, long.point(**chosen["settings"]) if chosen else None))
        else:
            rows.append((row_label(label, group, name), long.point(loss=name)))
    return rows


def schedule_table(rows_by_length: list[tuple[str, list[tuple[str, Optional[dict]]]]]) -> list[str]:
    """Final AP of the same points at each length (ITERS, then each LONG_ITERS): has AP stopped rising as the
    schedule grows? A step counts as a rise when the longer mean is more than two standard errors above the shorter
    one; AP "stopped rising at" the first length after which no step rises, and "not by" the last one otherwise."""
    lengths = [n for n, _ in rows_by_length]
    steps = list(zip(lengths, lengths[1:]))
    out = ["| loss | " + " | ".join(f"AP at {n}" for n in lengths) + " | "
           + " | ".join(f"{a} to {b}: change (SE, change / SE)" for a, b in steps) + " | AP stopped rising at |",
           "|---" * (2 + len(lengths) + len(steps)) + "|"]
    for i, (label, _) in enumerate(rows_by_length[0][1]):
        points = [rows[i][1] for _, rows in rows_by_length]
        # named by the first length that knows the chosen preset (a length whose sweep is gone names none)
        label = next((rows[i][0] for _, rows in rows_by_length if not rows[i][0].endswith("(-)")), label)
        changes, rising = [], []
        for a, b in zip(points, points[1:]):
            values = diff_se(b, a)
            if values is None:
                changes.append("needs 2+ seeds of both")
                rising.append(None)
                continue
            diff, se = values
            changes.append("{} ({}, {})".format(*change_parts(diff, se)))
            rising.append(diff > 2 * se)
        known = rising[:rising.index(None)] if None in rising else rising  # the steps before a length not run
        verdict = "n/a"
        if known:
            last_rise = max((k for k, r in enumerate(known) if r), default=-1)
            verdict = (f"not by {lengths[len(known)]} (still rising)" if last_rise == len(known) - 1
                       else str(lengths[last_rise + 1]))
            if len(known) < len(rising):
                verdict += f"; {lengths[len(known) + 1]} needs 2+ seeds"
        out.append(f"| {label} | " + " | ".join(cell(p) for p in points) + " | " + " | ".join(changes)
                   + f" | {verdict} |")
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


def regime_sections(runs: Path, iters: str, long_iters: list[str]) -> list[tuple[str, list[str]]]:
    sparse, dense = Sweep(runs / f"sparse_{iters}"), Sweep(runs / f"dense_{iters}")
    s_rows, d_rows = regime_rows(sparse, SPARSE_GROUPS), regime_rows(dense, DENSE_GROUPS)
    sections = [
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
        ("Convergence: sparse set", convergence_table(sparse, s_rows)),
        ("Convergence: dense set", convergence_table(dense, d_rows)),
    ]
    sparse_by_length, dense_by_length = [(iters, s_rows)], [(iters, d_rows)]
    for n in long_iters:  # the points chosen at ITERS, trained again at each longer length: not chosen anew
        sparse_l, dense_l = Sweep(runs / f"sparse_{n}"), Sweep(runs / f"dense_{n}")
        sl_rows, dl_rows = longer_rows(s_rows, sparse_l, SPARSE_GROUPS), longer_rows(d_rows, dense_l, DENSE_GROUPS)
        sparse_by_length.append((n, sl_rows))
        dense_by_length.append((n, dl_rows))
        sections += [
            (f"Sparse set: {sparse_l.iters()} iterations, seeds {sparse_l.seeds()} (the points chosen at {iters})",
             regime_table(sparse_l, sl_rows)),
            (f"Dense set: {dense_l.iters()} iterations, seeds {dense_l.seeds()} (the points chosen at {iters})",
             regime_table(dense_l, dl_rows)),
            (f"Differences at {n} iterations", differences_table(regime_pairs(sl_rows, dl_rows))),
            (f"Convergence: sparse set, {n} iterations", convergence_table(sparse_l, sl_rows)),
            (f"Convergence: dense set, {n} iterations", convergence_table(dense_l, dl_rows)),
        ]
    lengths = ", ".join([iters] + long_iters)
    sections += [
        (f"Schedule length: sparse set, {lengths} iterations", schedule_table(sparse_by_length)),
        (f"Schedule length: dense set, {lengths} iterations", schedule_table(dense_by_length)),
        ("The prior, as configured (AdamW, gradient clipping)", prior_table(runs / "sparse_prior" / "prior.json")),
        ("The prior, with the paper's optimiser (SGD, no clipping)",
         prior_table(runs / "sparse_prior_sgd" / "prior.json")),
    ]
    for n in [iters] + long_iters:
        sections.append((f"Figure 4: loss CDF of the sparse-set model (FL, seed 0, {n} iterations)",
                         loss_cdf(runs / f"sparse_loss_cdf_{n}" / "loss_cdf.json")))
    return sections


def sweep_lengths(runs: Path) -> dict[int, list[Path]]:
    """{n: its folders} for each length ``runs`` holds a sparse or dense sweep of (``sparse_<n>``, ``dense_<n>``;
    not the analyses' ``sparse_loss_cdf_<n>``), shortest first."""
    found: dict[int, list[Path]] = {}
    for folder in runs.glob("*_*"):
        match = re.fullmatch(r"(?:sparse|dense)_(\d+)", folder.name)
        if match and folder.is_dir():
            found.setdefault(int(match[1]), []).append(folder)
    return dict(sorted(found.items()))


def chosen_length(runs: Path) -> Optional[str]:
    """The length the regime's points were chosen at (reproduce.sh's ITERS), when the tables are not told it: the
    ``iters`` that the longer runs' CHOICE_FILEs record (pick_best writes it), else the shortest sparse_N or dense_N
    sweep ``runs`` holds; None if it holds neither. An error if the records disagree."""
    lengths = sweep_lengths(runs)
    recorded = {json.loads((folder / CHOICE_FILE).read_text())["iters"]
                for folders in lengths.values() for folder in folders if (folder / CHOICE_FILE).is_file()}
    if len(recorded) > 1:
        sys.exit(f"reproduction_tables: the {CHOICE_FILE} files in {runs} record points chosen at different lengths "
                 f"({', '.join(sorted(recorded, key=int))}): pass --iters")
    if recorded:
        return recorded.pop()
    return str(next(iter(lengths))) if lengths else None


def longer_lengths(runs: Path, iters: str) -> list[str]:
    """The lengths above ``iters`` that ``runs`` holds a sparse or dense sweep of, shortest first: the tables' default
    when reproduce.sh's LONG_ITERS is not given, so that its rule lives there alone."""
    return [str(n) for n in sweep_lengths(runs) if n > int(iters)]


def lengths_arg(text: str) -> list[str]:
    """'2400,4800' or '2400 4800' (reproduce.sh's LONG_ITERS) to ['2400', '4800']."""
    values = text.replace(",", " ").split()
    if not values or not all(v.isdigit() for v in values):
        raise argparse.ArgumentTypeError(f"not a list of iteration counts: {text!r}")
    return values
