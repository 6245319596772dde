"""Keep the record of the runs behind REPRODUCTION.md in the repository, where it outlives the machine.

    .venv/bin/python scripts/archive_runs.py [--runs work_dirs/repro] [--to docs/runs]

Copies from the runs folder what ``reproduction_tables.py`` reads, for every finished run (a sweep's run folder
with its metrics.json; one still training is left for later), and nothing heavy: every JSON and CSV file (each
sweep's sweep.json, results.json and results.csv, each run's run.json and metrics.json, the analyses' outputs) and, of
MMEngine's per-start ``vis_data/scalars.json``, the evaluation lines with the training line logged before each (the
iteration an evaluation belongs to) and every ``--loss-every``-th iteration's training line. No checkpoints, logs or
images. The project root's absolute path is cut from what is copied (``work_dirs/repro/...`` stays runnable from the
root), and ``reproduction_tables.py --runs docs/runs`` finds a moved run by its sweep folder. Files larger than
``--max-kb`` are left out and listed. Run again at any time: it updates what changed and never deletes.

Why: a 50-minute run whose result lives only in work_dirs/ is gone when the machine is replaced (it happened to the
first 9,600-iteration runs of the regime section); its record in docs/runs is not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEEP = (".json", ".csv")


def trimmed_scalars(text: str, loss_every: int) -> str:
    """MMEngine's scalars.json, one JSON object per line: keep every evaluation line, the training line just before
    each (its iteration is the evaluation's), and the training lines at multiples of ``loss_every``."""
    lines, kept, previous = text.splitlines(), [], None
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if any(key.startswith("coco/") for key in row):
            if previous is not None and (not kept or kept[-1] is not previous):
                kept.append(previous)
            kept.append(line)
        elif "iter" in row:
            previous = line
            if int(row["iter"]) % loss_every == 0:
                kept.append(line)
    return "".join(line + "\n" for line in kept)


def _unfinished(path: Path, runs: Path) -> bool:
    """``path`` (a file under ``runs``) lies in a sweep's run folder (one with run.json) that has no metrics.json yet:
    a run still going or stopped."""
    for folder in path.parents:
        if folder == runs:
            return False
        if (folder / "run.json").is_file():
            return not (folder / "metrics.json").is_file()
    return False


def archive(runs: Path, to: Path, *, loss_every: int = 200, max_kb: int = 512) -> tuple[list[Path], list[Path]]:
    """Copy the record of ``runs``' finished runs into ``to``; returns (files written, files left out as too large)."""
    root = f"{Path.cwd().resolve()}/"
    written, too_large = [], []
    for path in sorted(runs.rglob("*")):
        if not path.is_file() or path.suffix not in KEEP or _unfinished(path, runs):
            continue
        rel = path.relative_to(runs)
        if path.parent.name == "vis_data":
            if path.name != "scalars.json":
                continue
            text = trimmed_scalars(path.read_text(), loss_every)
        elif path.stat().st_size > max_kb * 1024:
            too_large.append(rel)
            continue
        else:
            text = path.read_text()
        text = text.replace(root, "")
        target = to / rel
        if target.is_file() and target.read_text() == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        written.append(rel)
    return written, too_large


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("work_dirs/repro"))
    parser.add_argument("--to", type=Path, default=Path("docs/runs"))
    parser.add_argument("--loss-every", type=int, default=200, help="keep the training line every N iterations")
    parser.add_argument("--max-kb", type=int, default=512, help="leave out (and list) larger JSON/CSV files")
    args = parser.parse_args()
    if not args.runs.is_dir():
        print(f"archive_runs: no runs folder {args.runs}; run scripts/reproduce.sh first", file=sys.stderr)
        return 1
    written, too_large = archive(args.runs, args.to, loss_every=args.loss_every, max_kb=args.max_kb)
    print(f"archive_runs: {len(written)} file(s) written or updated in {args.to}")
    for rel in too_large:
        print(f"archive_runs: left out (over {args.max_kb} KB): {args.runs / rel}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
