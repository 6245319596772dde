"""The README's main job, measured: wall time from start to metrics, AP, and the share of small val boxes.

    .venv/bin/python benchmarks/default_run.py [--fresh-cache] [--json OUT] [-- extra fltool train args]

Runs ``fltool train`` (the default config on the embedded dataset) as a newcomer would, in a subprocess, and reports:
- wall seconds from the command's start to its exit (with ``--fresh-cache`` the embedded dataset is generated first,
  as on a machine that never ran fltool; without it, a cached dataset is reused), and the dataset generation share;
- the final COCO bbox metrics from the run's metrics.json;
- the fraction of val boxes that are small by COCO's definition (area < 32^2), read from the val annotations;
- the machine as the run saw it: CPU model, cores, torch threads, its instruction set (ATen's, whether the CPU has
  AVX-512, the ISA overrides set).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fltool.engine.doctor import isa_text

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh-cache", action="store_true", help="generate the embedded dataset from scratch")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("extra", nargs="*", help="extra arguments for fltool train (after --)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fltool-bench-") as tmp:
        env = dict(os.environ)
        if args.fresh_cache:
            env["FLTOOL_CACHE"] = str(Path(tmp) / "cache")
        work_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "fltool", "train", "--work-dir", str(work_dir), *args.extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        metrics = json.loads((work_dir / "metrics.json").read_text())
        val = json.loads(Path(metrics["val_ann_file"]).read_text())
        areas = [a["bbox"][2] * a["bbox"][3] for a in val["annotations"]]
        small = sum(a < 32 ** 2 for a in areas) / max(len(areas), 1)
        gen_line = next((ln for ln in proc.stderr.splitlines() if "generating the embedded dataset:" in ln), "")
        gen_s = float(gen_line.split("s]")[0].strip("[ ")) if gen_line else 0.0

    import torch

    result = {
        "command": " ".join(["fltool", "train", *args.extra]),
        "fresh_cache": args.fresh_cache,
        "wall_s": round(wall, 1),
        "dataset_generation_s": round(gen_s, 1),
        "bbox": metrics["bbox"],
        "iterations": metrics["iteration"],
        "val_boxes": len(areas),
        "val_small_fraction": round(small, 3),
        # as the training process saw it (its ISA and overrides), from its metrics.json
        "machine": {**metrics["machine"], "torch": torch.__version__},
    }
    machine = result["machine"]
    print(f"fltool train (default), {'fresh dataset cache' if args.fresh_cache else 'cached dataset'}")
    print(f"  wall time, start to metrics: {result['wall_s']:.1f} s "
          f"(of which dataset generation {result['dataset_generation_s']:.1f} s)")
    print("  val bbox: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics["bbox"].items() if v is not None))
    print(f"  val boxes: {len(areas)}, small (area < 32^2): {small:.1%}")
    print(f"  machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads, "
          f"torch {machine['torch']}; {isa_text(machine)}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
