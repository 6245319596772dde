"""REPRODUCTION.md's "Where focal loss's gain comes from": TIDE's error breakdown (``fltool analyze errors``, at
foreground IoU 0.5 and 0.75) of the runs in ``errors_<set>_<N>/loss=<preset>/seed<S>`` (``reproduce.sh errors``),
one row per loss (mean over its seeds), then each loss's differences to the first row (FL).

Reads each run's ``metrics.json`` and ``analysis/errors.json`` / ``errors_iou75.json``; a run not analysed yet shows
as such.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss", "FalsePos", "FalseNeg")
COCO = ("AP", "AP50", "AP75", "APs", "APm")
ORDER = ("FL", "CE", "OHEM")  # FL first: the differences are to it
#: The breakdowns read: ``fltool analyze errors`` at foreground IoU 0.5 and 0.75, and at the strict 0.9 and 0.95
#: where a lead in localisation shows as TIDE's Loc type (``--iou 0.9``, ``--iou 0.95``).
STEMS = (("errors", "AP50"), ("errors_iou75", "AP75"), ("errors_iou90", "AP90"), ("errors_iou95", "AP95"))
STRICT = STEMS[2:]
IOUS = tuple(f"{0.5 + 0.05 * i:.2f}" for i in range(10))  # COCO's IoU thresholds (errors.json's AP_per_IoU)


def folders(runs: Path) -> list[Path]:
    """``errors_<set>_<N>`` folders, sparse before dense, shorter before longer."""
    found = [p for p in runs.glob("errors_*_*") if re.fullmatch(r"errors_[a-z]+_\d+", p.name) and p.is_dir()]
    return sorted(found, key=lambda p: (p.name.split("_")[1] != "sparse", int(p.name.split("_")[2])))


def loss_rows(folder: Path) -> list[tuple[str, list[Path]]]:
    """(preset, its seed folders) for each ``loss=<preset>`` folder, FL first, then CE, then OHEM."""
    rows = []
    for loss in folder.glob("loss=*"):
        seeds = sorted(p for p in loss.glob("seed*") if (p / "metrics.json").is_file())
        rows.append((loss.name.split("=", 1)[1], seeds))

    def rank(preset: str) -> tuple:
        family = next((i for i, f in enumerate(ORDER) if preset.startswith(f)), len(ORDER))
        return family, preset != "FL", preset

    return sorted(rows, key=lambda r: rank(r[0]))


def mean(values: list) -> Optional[float]:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def summary(seeds: list[Path]) -> dict:
    """Mean over the seeds of the COCO metrics and, at each foreground IoU, the analysed AP and each type's dAP."""
    out: dict = {"n": len(seeds), "seeds": [p.name.removeprefix("seed") for p in seeds]}
    metrics = [json.loads((p / "metrics.json").read_text())["bbox"] for p in seeds]
    out.update({k: mean([m.get(k) for m in metrics]) for k in COCO})
    for stem, name in STEMS:
        records = [json.loads((p / "analysis" / f"{stem}.json").read_text()) for p in seeds
                   if (p / "analysis" / f"{stem}.json").is_file()]
        if records and len(records) == len(seeds):
            out[stem] = {"AP": mean([r[name] for r in records]),
                         "per_iou": {k: mean([(r.get("AP_per_IoU") or {}).get(k) for r in records]) for k in IOUS},
                         "dAP": {t: mean([r["dAP"].get(t) for r in records]) for t in TYPES},
                         "counts": {t: mean([r["counts"].get(t) for r in records]) for t in TYPES[:6]}}
    return out


def pts(value: Optional[float], sign: bool = False) -> str:
    return "-" if value is None else f"{100 * value:{'+' if sign else ''}.1f}"


def breakdown_table(rows: list[tuple[str, dict]], stem: str, name: str) -> list[str]:
    out = [f"| loss (seeds) | {name} | " + " | ".join(f"d{name} {t}" for t in TYPES) + " |",
           "|---|---|" + "---|" * len(TYPES)]
    for preset, s in rows:
        e = s.get(stem)
        if e is None:
            out.append(f"| {preset} ({', '.join(s['seeds'])}) | not analysed |" + " |" * len(TYPES))
            continue
        cells = " | ".join(f"{pts(e['dAP'][t])} ({e['counts'][t]:.0f})" if t in e["counts"] else pts(e["dAP"][t])
                           for t in TYPES)
        out.append(f"| {preset} ({', '.join(s['seeds'])}) | {pts(e['AP'])} | {cells} |")
    return out


def difference_table(rows: list[tuple[str, dict]]) -> list[str]:
    """Each other loss minus the first row (FL): COCO metrics, and the dAP of each type at IoU 0.5 and 0.75 (a
    positive dAP difference: the other loss loses more AP to that type than FL does)."""
    if len(rows) < 2:
        return ["(needs FL and another loss)"]
    base_name, base = rows[0]
    out = ["| comparison | " + " | ".join(COCO) + " | dAP50 Loc | dAP50 Bkg | dAP50 Miss | dAP75 Loc | dAP75 Bkg "
           "| dAP75 Miss |", "|---|" + "---|" * (len(COCO) + 6)]
    for preset, s in rows[1:]:
        coco = " | ".join(pts(None if s[k] is None or base[k] is None else base[k] - s[k], True) for k in COCO)
        daps = []
        for stem in ("errors", "errors_iou75"):
            for t in ("Loc", "Bkg", "Miss"):
                a, b = (s.get(stem) or {}).get("dAP", {}).get(t), (base.get(stem) or {}).get("dAP", {}).get(t)
                daps.append(pts(None if a is None or b is None else a - b, True))
        out.append(f"| {base_name} - {preset} | {coco} | {' | '.join(daps)} |")
    return out


def per_iou_table(rows: list[tuple[str, dict]]) -> list[str]:
    """COCO's AP at each IoU threshold (errors.json's AP_per_IoU, mean over seeds), each loss, then FL minus each
    other loss: at which IoU a lead in AP lies (their mean over the ten thresholds is AP)."""
    per = [(preset, (s.get("errors") or {}).get("per_iou") or {}) for preset, s in rows]
    out = ["| loss | " + " | ".join(IOUS) + " |", "|---|" + "---|" * len(IOUS)]
    out += [f"| {preset} | " + " | ".join(pts(p.get(k)) for k in IOUS) + " |" for preset, p in per]
    if per and per[0][1]:
        base_name, base = per[0]
        for preset, p in per[1:]:
            diffs = [None if base.get(k) is None or p.get(k) is None else base[k] - p[k] for k in IOUS]
            out.append(f"| {base_name} - {preset} | " + " | ".join(pts(d, True) for d in diffs) + " |")
    return out


def strict_table(rows: list[tuple[str, dict]]) -> list[str]:
    """At the strict foreground IoUs (0.9, 0.95): each loss's AP there and what it loses to localisation (Loc) and to
    all false positives / negatives, then FL minus each other loss (a dAP: the other's minus FL's), so a lead in AP
    there can be set beside the Loc type's difference."""
    present = [(stem, name) for stem, name in STRICT if any(s.get(stem) for _, s in rows)]
    if not present:
        return []
    heads = [h for _, name in present for h in (name, f"d{name} Loc", f"d{name} FalsePos", f"d{name} FalseNeg")]
    out = ["| loss (seeds) | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]

    def cells(s: dict) -> list:
        got = []
        for stem, _ in present:
            e = s.get(stem) or {}
            got += [e.get("AP")] + [(e.get("dAP") or {}).get(t) for t in ("Loc", "FalsePos", "FalseNeg")]
        return got

    values = [(preset, s, cells(s)) for preset, s in rows]
    out += [f"| {preset} ({', '.join(s['seeds'])}) | " + " | ".join(pts(v) for v in c) + " |"
            for preset, s, c in values]
    base_name, _, base = values[0]
    for preset, _, c in values[1:]:
        diffs = [None if a is None or b is None else (a - b if i % 4 == 0 else b - a)
                 for i, (a, b) in enumerate(zip(base, c))]
        out.append(f"| {base_name} - {preset} | " + " | ".join(pts(d, True) for d in diffs) + " |")
    return out


def errors_sections(runs: Path) -> list[tuple[str, list[str]]]:
    sections = []
    for folder in folders(runs):
        _, which, n = folder.name.split("_")
        rows = [(preset, summary(seeds)) for preset, seeds in loss_rows(folder) if seeds]
        title = f"Error breakdown: {which} set, {n} iterations"
        if not rows:
            sections.append((title, ["(no finished run)"]))
            continue
        sections += [(f"{title}, foreground IoU 0.5 (dAP50, AP points; errors per run in brackets)",
                      breakdown_table(rows, "errors", "AP50")),
                     (f"{title}, foreground IoU 0.75 (dAP75)", breakdown_table(rows, "errors_iou75", "AP75")),
                     (f"{title}: FL minus each other loss (AP points; a dAP row: the other's dAP minus FL's)",
                      difference_table(rows)),
                     (f"{title}: AP at each IoU threshold (AP points)", per_iou_table(rows))]
        strict = strict_table(rows)
        if strict:
            sections.append((f"{title}, strict foreground IoU (dAP90, dAP95: localisation and all errors; FL minus "
                             "each other loss, a dAP: the other's minus FL's)", strict))
    return sections
