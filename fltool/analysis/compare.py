"""``fltool compare``: two or more finished runs side by side, from the records they keep (nothing is rerun).

Each run folder gives what it has:

- ``metrics.json`` (``fltool train``): COCO AP, AP50, ... of the final checkpoint, the training wall time and machine;
- ``<timestamp>/vis_data/scalars.json`` (MMEngine's scalars, one JSON object per line): the training losses and
  seconds per iteration, and each validation's COCO AP. MMEngine logs a validation at the *epoch* (0 in an
  iteration-based run), so a validation is placed at the training iteration logged just before it; a resumed run
  has one such folder per start, read in order (a later value for an iteration wins);
- ``analysis/pr.json`` and ``analysis/errors.json`` (``fltool analyze pr`` / ``errors`` with their default output
  folder): AP per class, and TIDE's dAP per error type.

Differences are against the first run (``B - A``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from fltool.analysis.detections import ANALYSIS_DIR
from fltool.analysis.errors import ERROR_TYPES, SPECIAL_TYPES
from fltool.analysis.tables import class_colours, pyplot, write_csv
from fltool.engine.metrics import METRIC_KEYS
from fltool.errors import DataError
from fltool.fileio import read_json, save_figure, write_json

LOSS_KEYS = ("loss", "loss_cls", "loss_bbox")


@dataclass
class RunRecord:
    """What one run folder holds, as read."""

    name: str
    folder: Path
    metrics: dict  # AP, AP50, ... (None where unknown)
    per_class_ap: dict  # class -> AP
    errors: Optional[dict]  # errors.json: dAP, counts, AP50 (None: never analysed)
    train: list  # [{"iter", "loss", "loss_cls", "loss_bbox", "time"}] in iteration order
    val: list  # [{"iter", "AP", "AP50"}]
    speed: dict  # train_s_per_iter, train_wall_s, iterations, machine
    sources: list = field(default_factory=list)  # the files read


def read_scalars(folder: Path) -> tuple[list, list]:
    """(training rows, validation rows) from every ``*/vis_data/scalars.json`` directly in the run folder."""
    train: dict = {}
    val: dict = {}
    for path in sorted(Path(folder).glob("*/vis_data/scalars.json")):
        last_iter = 0
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed run
            if not isinstance(row, dict):
                continue
            if "loss" in row:
                last_iter = int(row.get("iter", row.get("step", last_iter)))
                train[last_iter] = {"iter": last_iter, **{k: row.get(k) for k in (*LOSS_KEYS, "time")}}
            elif "coco/bbox_mAP" in row:
                at = last_iter if last_iter else int(row.get("step", 0))
                val[at] = {"iter": at, "AP": row.get("coco/bbox_mAP"), "AP50": row.get("coco/bbox_mAP_50")}
    return [train[k] for k in sorted(train)], [val[k] for k in sorted(val)]


def load_run(folder: Path, name: Optional[str] = None) -> RunRecord:
    """The record of the run in ``folder`` (a checkpoint: its folder); a DataError where it holds none."""
    folder = Path(folder).expanduser()
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        raise DataError(f"no such run folder: {folder}", "give the work dirs that fltool train wrote")
    trained = read_json(folder / "metrics.json") or {}
    pr = read_json(folder / ANALYSIS_DIR / "pr.json") or {}
    errors = read_json(folder / ANALYSIS_DIR / "errors.json")
    train, val = read_scalars(folder)
    if not (trained or pr or errors or train or val):
        raise DataError(f"{folder} holds no run record (no metrics.json, no */vis_data/scalars.json, no "
                        f"{ANALYSIS_DIR}/pr.json or errors.json)", "give the work dir of a finished fltool train")
    bbox = trained.get("bbox") or pr.get("metrics") or {}
    per_class = {k: v.get("AP") for k, v in (pr.get("per_class") or {}).items() if k != "all"} or \
        dict(trained.get("per_class_AP") or {})
    times = [row["time"] for row in train if isinstance(row.get("time"), (int, float))]
    speed = {"train_s_per_iter": float(np.median(times)) if times else None, "train_wall_s": trained.get("wall_s"),
             "iterations": trained.get("iteration") or (train[-1]["iter"] if train else None),
             "machine": (trained.get("machine") or {}).get("cpu")}
    sources = [str(p) for p in (folder / "metrics.json", folder / ANALYSIS_DIR / "pr.json",
                                folder / ANALYSIS_DIR / "errors.json") if p.is_file()]
    return RunRecord(name or folder.name, folder, {k: bbox.get(k) for k in METRIC_KEYS}, per_class, errors, train,
                     val, speed, sources)


def run_names(folders: Sequence[Path]) -> list:
    """Each folder's name, with its parent's where two runs share a name (seed0 of two sweeps)."""
    names = [Path(f).resolve().name for f in folders]
    if len(set(names)) == len(names):
        return names
    return [f"{Path(f).resolve().parent.name}/{Path(f).resolve().name}" for f in folders]


@dataclass
class Comparison:
    runs: list  # RunRecord, the first is the baseline

    def metric_rows(self) -> list:
        """[metric, value per run..., difference to the first per other run...] for the COCO metrics and speed."""
        rows = [[k, *[r.metrics.get(k) for r in self.runs]] for k in METRIC_KEYS]
        rows += [[k, *[r.speed.get(k) for r in self.runs]] for k in ("train_s_per_iter", "train_wall_s",
                                                                       "iterations")]
        return [row + differences(row[1:]) for row in rows]

    def class_rows(self) -> list:
        names = list(dict.fromkeys(c for r in self.runs for c in r.per_class_ap))
        return [[c, *[r.per_class_ap.get(c) for r in self.runs]] + differences([r.per_class_ap.get(c)
                                                                                for r in self.runs]) for c in names]

    def error_rows(self) -> list:
        """[type, dAP per run..., differences...] and the error counts, where a run was analysed."""
        if not any(r.errors for r in self.runs):
            return []
        rows = []
        for kind in ERROR_TYPES + SPECIAL_TYPES:
            values = [(r.errors or {}).get("dAP", {}).get(kind) for r in self.runs]
            counts = [(r.errors or {}).get("counts", {}).get(kind) for r in self.runs]
            rows.append([f"dAP {kind}", *values, *differences(values)])
            if kind in ERROR_TYPES:
                rows.append([f"n {kind}", *counts, *differences(counts)])
        return rows


def differences(values: Sequence[Any]) -> list:
    """Each value after the first minus the first (None where either is unknown)."""
    base = values[0]
    return [None if v is None or base is None else v - base for v in values[1:]]


def compare_runs(folders: Sequence[Path]) -> Comparison:
    if len(folders) < 2:
        raise DataError("fltool compare needs two or more runs", "give RUN_A RUN_B [RUN_C ...]")
    return Comparison([load_run(f, n) for f, n in zip(folders, run_names(folders))])


def save_comparison(comp: Comparison, out_dir: Path) -> dict:
    """compare.json, compare_metrics.csv, compare_per_class.csv, compare_errors.csv, compare_curves.csv and
    compare.png in ``out_dir``."""
    out_dir = Path(out_dir)
    names = [r.name for r in comp.runs]
    files = {"metrics_csv": write_csv(out_dir / "compare_metrics.csv", columns("metric", names), comp.metric_rows()),
             "per_class_csv": write_csv(out_dir / "compare_per_class.csv", columns("class", names),
                                        comp.class_rows()),
             "errors_csv": write_csv(out_dir / "compare_errors.csv", columns("error", names), comp.error_rows()),
             "curves_csv": write_csv(out_dir / "compare_curves.csv", ["run", "split", "iter", "loss", "loss_cls",
                                                                       "loss_bbox", "AP", "AP50"], curve_rows(comp)),
             "png": plot_comparison(comp, out_dir / "compare.png")}
    record = {"runs": [{"name": r.name, "folder": str(r.folder), "metrics": r.metrics, "per_class_AP": r.per_class_ap,
                        "errors": {k: (r.errors or {}).get(k) for k in ("AP50", "dAP", "counts")} if r.errors
                        else None, "speed": r.speed, "sources": r.sources} for r in comp.runs],
              "baseline": names[0], "metrics": comp.metric_rows(), "per_class": comp.class_rows(),
              "errors": comp.error_rows()}
    files["json"] = write_json(out_dir / "compare.json", dict(record, files={k: str(v) for k, v in files.items()}))
    return files


def columns(first: str, names: Sequence[str]) -> list:
    """The header of a comparison table: the runs, then each one's difference to the first."""
    return [first, *names, *[f"{n} - {names[0]}" for n in names[1:]]]


def curve_rows(comp: Comparison) -> list:
    rows = []
    for r in comp.runs:
        rows += [[r.name, "train", t["iter"], t.get("loss"), t.get("loss_cls"), t.get("loss_bbox"), None, None]
                 for t in r.train]
        rows += [[r.name, "val", v["iter"], None, None, None, v.get("AP"), v.get("AP50")] for v in r.val]
    return rows


def _bars(ax: Any, groups: Sequence[str], series: Sequence[tuple], ylabel: str) -> None:
    """Grouped bars: one group per label, one bar per (name, values, colour)."""
    width = 0.8 / max(len(series), 1)
    for i, (name, values, colour) in enumerate(series):
        ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width,
               [v if v is not None else 0.0 for v in values], width, color=colour, label=name)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)


def plot_comparison(comp: Comparison, path: Path) -> Path:
    """One figure for a report: training loss, validation AP, the COCO metrics, and the error breakdown (or AP per
    class where no run was analysed for errors)."""
    plt = pyplot()
    colours = class_colours(len(comp.runs))
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.4))
    for r, colour in zip(comp.runs, colours):
        rows = [t for t in r.train if t.get("loss") is not None]
        axes[0, 0].plot([t["iter"] for t in rows], [t["loss"] for t in rows], color=colour, label=r.name)
        axes[0, 1].plot([v["iter"] for v in r.val], [v.get("AP") for v in r.val], "o-", color=colour,
                        label=f"{r.name} AP")
        axes[0, 1].plot([v["iter"] for v in r.val], [v.get("AP50") for v in r.val], "s--", color=colour,
                        alpha=0.6, label=f"{r.name} AP50")
    axes[0, 0].set(xlabel="iteration", ylabel="training loss (FL + box)", title="training loss")
    axes[0, 0].set_yscale("log")
    axes[0, 1].set(xlabel="iteration", ylabel="COCO AP (val)", title="validation AP")
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    _bars(axes[1, 0], METRIC_KEYS, [(r.name, [r.metrics.get(k) for k in METRIC_KEYS], c)
                                    for r, c in zip(comp.runs, colours)], "COCO metric")
    axes[1, 0].set_title("final metrics")
    if any(r.errors for r in comp.runs):
        kinds = ERROR_TYPES + SPECIAL_TYPES
        _bars(axes[1, 1], kinds, [(r.name, [(r.errors or {}).get("dAP", {}).get(k) for k in kinds], c)
                                  for r, c in zip(comp.runs, colours)], "dAP50 (AP gained by fixing)")
        axes[1, 1].set_title("TIDE errors (fltool analyze errors)")
    else:
        classes = list(dict.fromkeys(c for r in comp.runs for c in r.per_class_ap))
        _bars(axes[1, 1], classes, [(r.name, [r.per_class_ap.get(c) for c in classes], col)
                                    for r, col in zip(comp.runs, colours)], "AP")
        axes[1, 1].set_title("AP per class" if classes else "AP per class (none recorded: fltool analyze pr)")
    for ax in axes.flat:
        ax.title.set_fontsize(10)
    fig.suptitle(" vs ".join(r.name for r in comp.runs), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
