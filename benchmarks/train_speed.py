"""fltool's training recipe against stock MMDetection: the same model, data and iterations, side by side in one run.

    .venv/bin/python benchmarks/train_speed.py [--isa native,avx2] [--iters 600] [--val-interval 100]
                                               [--target-ap 0.6] [--config retinanet_r18-gn_synth_256] [--out DIR]

For each instruction-set setting (``native``: whatever the CPU has; ``avx2``: ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2``, what a CPU without AVX-512 runs), it trains twice, each in a fresh process:

- ``stock``: the config's model as MMDetection ships its parts -- ``RetinaHead`` with the same widths, norms and
  prior, ``FocalLoss`` (MMDetection's own; on a CPU its unfused PyTorch formula), ``LoadImageFromFile``, the epoch
  ``DefaultSampler``, MMEngine's ``CheckpointHook``, no extra hooks -- run by MMEngine's ``Runner`` as
  ``tools/train.py`` would;
- ``fltool``: the config as ``fltool train`` runs it (fltool's head, fused focal-loss kernel, channels-last
  convolutions, fused AdamW, numpy image packing (PackDetInputsFast), InfiniteSampler, its checks and hooks);
- ``fltool-bf16``: the same with ``--precision bf16`` (the network under CPU autocast; losses in fp32): fast only
  where the CPU computes bf16 natively (AMX, AVX512_BF16; ``fltool doctor``'s bf16 row), emulated on the avx2 setting.

Both get the same optimiser settings, schedule, seed and evaluation interval, and the same benchmark-only hook
(benchmarks/_iter_clock.py) that times every training iteration (data loading included, evaluation excluded).
It prints, per setting: iterations per second (steady state: iterations 21 onwards), training seconds, the
training seconds until the val AP first reached ``--target-ap``, the final AP, and fltool's speed-up over stock.
Results land in ``OUT/train_speed.json`` and ``OUT/train_speed.csv``. Run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ISA_ENV = {"native": {}, "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
WARMUP_ITERS = 20


# ---------------------------------------------------------------------------------------------------- the children
def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)


def stock_config(cfg, clock_file: str):
    """The same model, data and schedule, built from MMDetection's and MMEngine's own parts."""
    head = cfg.model.bbox_head
    loss = head.loss_cls
    cfg.model.bbox_head = dict(
        type="RetinaHead", num_classes=head.num_classes, in_channels=head.in_channels,
        stacked_convs=head.stacked_convs, feat_channels=head.feat_channels, norm_cfg=head.get("norm_cfg"),
        anchor_generator=head.anchor_generator, bbox_coder=head.bbox_coder,
        # RetinaHead's default init_cfg: N(0, 0.01) and the classifier bias from bias_prob=0.01, the same prior.
        loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=loss.gamma, alpha=loss.alpha,
                      loss_weight=loss.get("loss_weight", 1.0)),
        loss_bbox=head.loss_bbox)
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        for node in _walk(cfg[key]):
            if node.get("type") in ("LoadImageChecked", "LoadImageCached"):
                node.clear()
                node["type"] = "LoadImageFromFile"
    cfg.train_dataloader.sampler = dict(type="DefaultSampler", shuffle=True)
    cfg.optim_wrapper.optimizer.pop("fused", None)
    cfg.default_hooks.checkpoint.type = "CheckpointHook"
    cfg.custom_hooks = [dict(type="IterClockHook", out=clock_file)]
    cfg.custom_imports = dict(imports=["_iter_clock"], allow_failed_imports=False)
    return cfg


def child(recipe: str, config: str, work_dir: Path, iters: int, val_interval: int, seed: int) -> None:
    sys.path.insert(0, str(HERE))
    from fltool.engine import compat
    from fltool.engine import runner as rn
    from fltool.engine.config import load_config

    compat.apply()  # resolves mmdet:: bases with today's setuptools; changes nothing in how a run trains
    work_dir.mkdir(parents=True, exist_ok=True)
    clock = str(work_dir / "clock.jsonl")
    cfg = load_config(config, None, work_dir)
    rn.resolve_embedded_dataset(cfg)  # the cached embedded dataset's folder for its placeholder
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = val_interval
    cfg.randomness = dict(seed=seed, deterministic=False)
    if recipe == "stock":
        import _iter_clock  # noqa: F401  (registers IterClockHook; custom_imports act only when a file is loaded)
        from mmengine.runner import Runner

        cfg = stock_config(cfg, clock)
        Runner.from_cfg(cfg).train()
        return
    from fltool.engine.train import TrainOptions, train

    cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [dict(type="IterClockHook", out=clock)]
    imports = list((cfg.get("custom_imports") or {}).get("imports", []))
    cfg.custom_imports = dict(imports=imports + ["_iter_clock"], allow_failed_imports=False)
    recipe_file = work_dir / "fltool_recipe.py"
    cfg.dump(str(recipe_file))
    train(TrainOptions(config=str(recipe_file), work_dir=work_dir,
                       precision="bf16" if recipe == "fltool-bf16" else "fp32"))


# ---------------------------------------------------------------------------------------------------- the parent
def summarise(clock_file: Path, target_ap: float, wall_s: float) -> dict:
    rows = [json.loads(line) for line in clock_file.read_text().splitlines()]
    end = next(r for r in rows if r["event"] == "end_training")
    vals = [r for r in rows if r["event"] == "val"]
    iter_s = end["iter_s"]
    steady = iter_s[WARMUP_ITERS:] or iter_s
    # The first evaluation at or above the target; the crossing is interpolated linearly (in training seconds and
    # iterations) from the evaluation before it, so a coarse evaluation grid does not round the time up.
    time_to, iters_to, previous = None, None, {"train_s": 0.0, "iteration": 0, "AP": 0.0}
    for v in vals:
        if v["AP"] is not None and v["AP"] >= target_ap:
            share = (target_ap - previous["AP"]) / max(v["AP"] - previous["AP"], 1e-9)
            time_to = previous["train_s"] + share * (v["train_s"] - previous["train_s"])
            iters_to = previous["iteration"] + share * (v["iteration"] - previous["iteration"])
            break
        if v["AP"] is not None:
            previous = v
    return {"iterations": end["iterations"], "train_s": round(end["train_s"], 1),
            "it_per_s": round(len(steady) / sum(steady), 3), "first_iter_s": round(iter_s[0], 2),
            "time_to_target_s": round(time_to, 1) if time_to is not None else None,
            "iters_to_target": round(iters_to) if iters_to is not None else None,
            "final_AP": vals[-1]["AP"] if vals else None, "AP_curve": [(v["iteration"], v["AP"]) for v in vals],
            "wall_s": round(wall_s, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isa", default="native,avx2")
    parser.add_argument("--recipes", default="stock,fltool")
    parser.add_argument("--config", default="retinanet_r18-gn_synth_256")
    parser.add_argument("--iters", type=int, default=600)
    parser.add_argument("--val-interval", type=int, default=100)
    parser.add_argument("--target-ap", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("work_dirs/bench_train_speed"))
    parser.add_argument("--child", choices=("stock", "fltool", "fltool-bf16"), help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.config, args.work_dir, args.iters, args.val_interval, args.seed)
        return 0

    from fltool.engine.doctor import cpu_flags
    from fltool.fileio import cpu_name

    avx512 = "avx512f" in cpu_flags()  # "native" means AVX-512 only where the CPU has it
    results = []
    for isa in args.isa.split(","):
        for recipe in args.recipes.split(","):
            work_dir = args.out / f"{isa}_{recipe}"
            if work_dir.exists():
                import shutil

                shutil.rmtree(work_dir)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
                       **ISA_ENV[isa])
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", recipe, "--config", args.config,
                   "--work-dir", str(work_dir), "--iters", str(args.iters), "--val-interval", str(args.val_interval),
                   "--seed", str(args.seed)]
            print(f"[{isa}] {recipe}: training {args.iters} iterations ...", file=sys.stderr, flush=True)
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            (args.out / f"{isa}_{recipe}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                print(proc.stderr[-3000:], file=sys.stderr)
                return proc.returncode
            row = {"isa": isa, "recipe": recipe, **summarise(work_dir / "clock.jsonl", args.target_ap, wall)}
            results.append(row)
            print(f"[{isa}] {recipe}: {row['it_per_s']:.2f} it/s, {row['train_s']:.0f} s training, "
                  f"AP {row['final_AP']}", file=sys.stderr, flush=True)

    print(f"\n{args.config}, {args.iters} iterations, batch as configured; {cpu_name()}, {os.cpu_count()} cores, "
          f"{'with' if avx512 else 'without'} AVX-512; "
          f"time to AP >= {args.target_ap} counts training seconds only (evaluations every {args.val_interval} "
          "iterations excluded)")
    header = f"{'ISA':6} {'recipe':11} {'it/s':>6} {'train s':>8} {'to AP s':>8} {'final AP':>9} {'wall s':>7}"
    print(header)
    for r in results:
        to_ap = f"{r['time_to_target_s']:.0f}" if r["time_to_target_s"] is not None else "never"
        print(f"{r['isa']:6} {r['recipe']:11} {r['it_per_s']:6.2f} {r['train_s']:8.0f} {to_ap:>8} "
              f"{r['final_AP'] if r['final_AP'] is not None else 'n/a':>9} {r['wall_s']:7.0f}")
    speedups = {}
    for isa in args.isa.split(","):
        by = {r["recipe"]: r for r in results if r["isa"] == isa}
        for fast, slow in (("fltool", "stock"), ("fltool-bf16", "stock"), ("fltool-bf16", "fltool")):
            if {fast, slow} <= set(by):
                f, s = by[fast], by[slow]
                ratio = {"it_per_s": round(f["it_per_s"] / s["it_per_s"], 2),
                         "time_to_target": (round(s["time_to_target_s"] / f["time_to_target_s"], 2)
                                            if s["time_to_target_s"] and f["time_to_target_s"] else None)}
                speedups.setdefault(isa, {})[f"{fast}/{slow}"] = ratio
                print(f"{fast} / {slow} [{isa}]: {ratio['it_per_s']:.2f}x iterations per second, "
                      f"{ratio['time_to_target'] or 'n/a'}x time to AP {args.target_ap}")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"config": args.config, "iterations": args.iters, "target_ap": args.target_ap,
               "cpu": cpu_name(), "cores": os.cpu_count(), "cpu_avx512": avx512, "results": results,
               "speedup": speedups}
    (args.out / "train_speed.json").write_text(json.dumps(payload, indent=2) + "\n")
    with open(args.out / "train_speed.csv", "w", newline="") as f:
        fields = ["isa", "recipe", "it_per_s", "train_s", "time_to_target_s", "iters_to_target", "final_AP",
                  "first_iter_s", "wall_s"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    print(f"results: {args.out / 'train_speed.json'}\n         {args.out / 'train_speed.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
