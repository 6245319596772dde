"""What every table of REPRODUCTION.md shares: a sweep's results.json, a point's cells, the loss-CDF table.

Used by ``reproduction_tables.py`` (the scale sections and ``main``) and ``regime_tables.py`` (the regime section).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


class Sweep:
    """One sweep folder's results.json, looked up by a point's settings."""

    def __init__(self, folder: Path) -> None:
        path = folder / "results.json"
        self.data = json.loads(path.read_text()) if path.is_file() else None
        self.name = folder.name
        self.folder = folder

    def point(self, **settings) -> Optional[dict]:
        for point in (self.data or {}).get("points", []):
            if point["settings"] == settings and point["n"]:
                return point
        return None

    def resolve(self, recorded: Optional[str]) -> Path:
        """A path that results.json recorded (a run's work_dir, its metrics file): as recorded if it exists, else the
        same place inside this folder -- the folder may have been moved, e.g. into the runs archive (docs/runs)."""
        path = Path(recorded or "")
        if path.exists() or self.name not in path.parts:
            return path
        last = len(path.parts) - 1 - path.parts[::-1].index(self.name)  # the folder's last occurrence in the path
        return self.folder.joinpath(*path.parts[last + 1:])

    def seeds(self) -> str:
        return ", ".join(str(s) for s in self.data["seeds"]) if self.data else "-"

    def iters(self) -> str:
        if not self.data:
            return "-"
        if self.data.get("max_iters"):
            return str(self.data["max_iters"])
        for point in self.data["points"]:  # the config's own length: what the runs' metrics.json say they reached
            for run in point["runs"]:
                metrics = self.resolve(run.get("metrics_file"))
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
