"""Print the tables of REPRODUCTION.md from the runs of ``scripts/reproduce.sh`` (their results.json files).

    .venv/bin/python scripts/reproduction_tables.py [--runs work_dirs/repro] [--figures docs/figures]

Reads only what the sweeps, ``fltool analyze loss-cdf`` and ``fltool bench speed-accuracy`` wrote; a sweep not run
yet shows as such. ``--figures`` also copies the heat map, loss-CDF and speed/accuracy plots there.
"""
from __future__ import annotations

import argparse
import json
import shutil
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


def table_600(sweep: Sweep) -> list[str]:
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
    if not path.is_file():
        return ["(bench speed-accuracy not run)"]
    data = json.loads(path.read_text())
    env, settings = data["environment"], data["settings"]
    out = ["| scale (short side, px) | AP | AP50 | ms per image (median) | p90 ms | GFLOPs |", "|---|---|---|---|---|---|"]
    for p in data["points"]:
        ap = "n/a" if p.get("AP") is None else f"{100 * p['AP']:.1f}"
        ap50 = "n/a" if p.get("AP50") is None else f"{100 * p['AP50']:.1f}"
        out.append(f"| {p['scale']} | {ap} | {ap50} | {p['median_ms']:.1f} | {p['p90_ms']:.1f} | "
                   f"{p['flops'] / 1e9:.2f} |")
    out += ["", f"{env['device']} ({env['device_name']}), {env['threads']} thread(s), batch 1, "
                f"first {settings.get('num_images')} val images."]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("work_dirs/repro"))
    parser.add_argument("--figures", type=Path, default=None, help="copy the plots into this folder")
    args = parser.parse_args()
    runs = args.runs
    grid, ce, flstar = Sweep(runs / "synth_grid"), Sweep(runs / "synth_ce_alpha"), Sweep(runs / "synth_flstar")
    long, bccd = Sweep(runs / "synth_600"), Sweep(runs / "bccd_losses")
    sections = [
        (f"Table 1a: embedded dataset, {grid.iters()} iterations, seeds {grid.seeds()}", table_1a(grid, ce)),
        (f"Table 1b: embedded dataset, AP, {grid.iters()} iterations, seeds {grid.seeds()}", table_1b(grid)),
        (f"Table 3: embedded dataset, {grid.iters()} iterations, seeds {flstar.seeds()}", table_3_synth(grid, flstar)),
        (f"Full schedule: embedded dataset, {long.iters()} iterations, seeds {long.seeds()}", table_600(long)),
        (f"BCCD: {bccd.iters()} iterations, seeds {bccd.seeds()}", table_bccd(bccd)),
        ("Figure 4: loss CDF of the default model", loss_cdf(runs / "loss_cdf" / "loss_cdf.json")),
        ("Table 1e: speed vs accuracy of the default model", speed(runs / "speed_accuracy" / "results.json")),
    ]
    for title, lines in sections:
        print(f"### {title}\n")
        print("\n".join(lines) + "\n")
    if args.figures:
        args.figures.mkdir(parents=True, exist_ok=True)
        for source, name in [(runs / "synth_grid" / "heatmap.png", "sweep_synth_gamma_alpha.png"),
                             (runs / "loss_cdf" / "loss_cdf.png", "loss_cdf_default.png"),
                             (runs / "speed_accuracy" / "speed_accuracy.png", "speed_accuracy_default.png")]:
            if source.is_file():
                shutil.copyfile(source, args.figures / name)


if __name__ == "__main__":
    main()
