"""Where a training iteration's time goes: PyTorch's profiler over a window of a short ``fltool train`` run.

    .venv/bin/python benchmarks/iter_profile.py [--config retinanet_r18-gn_synth_256] [--start 10] [--stop 30]
                                                [--top 15] [--json OUT]

Trains the config as ``fltool train`` prepares it (its hooks, channels-last convolutions, fused kernels), profiles
iterations ``[start, stop)`` on the CPU (data loading included: MMEngine fetches the batch inside the iteration) and
prints the ops by self CPU time, with the convolutions' share (forward and backward: every op whose name holds
``conv``) and the machine (CPU, whether it has AVX-512, ATen's ISA, overrides). The profiler adds its own overhead
per op, so the seconds per iteration here are above an unprofiled run's; the shares are what it is for. Run it on an
otherwise idle machine; ``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2`` in front shows the AVX2 kernels.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="retinanet_r18-gn_synth_256")
    parser.add_argument("--start", type=int, default=10, help="first profiled iteration (0-based; warm-up before)")
    parser.add_argument("--stop", type=int, default=30, help="the iteration the window ends before")
    parser.add_argument("--top", type=int, default=15, help="how many ops to list")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not 0 <= args.start < args.stop:
        parser.error("--start must be >= 0 and below --stop")

    import torch
    from mmdet.registry import HOOKS
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from fltool.engine.doctor import isa_text, machine_facts
    from fltool.engine.train import TrainOptions, prepare_train_config

    found: dict[str, Any] = {}

    @HOOKS.register_module(force=True)
    class _WindowProfilerHook(Hook):
        priority = "VERY_LOW"

        def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
            if runner.iter == args.start:
                found["prof"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                found["prof"].__enter__()
                found["t0"] = time.perf_counter()

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
            if runner.iter + 1 == args.stop:
                found["wall_s"] = time.perf_counter() - found["t0"]
                found["prof"].__exit__(None, None, None)

    with tempfile.TemporaryDirectory(prefix="fltool-profile-") as tmp:
        cfg = prepare_train_config(TrainOptions(config=args.config, work_dir=Path(tmp), max_iters=args.stop,
                                                val_interval=10 ** 9))
        cfg.custom_hooks = list(cfg.get("custom_hooks") or []) + [dict(type="_WindowProfilerHook")]
        cfg.default_hooks.checkpoint = dict(type="CheckpointHook", interval=10 ** 9)
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # no evaluation: the window is training
        Runner.from_cfg(cfg).train()

    events = found["prof"].key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if "conv" in e.key.lower()) / 1e6
    iters = args.stop - args.start
    ops = [{"op": e.key, "self_s": round(e.self_cpu_time_total / 1e6, 3), "share": round(e.self_cpu_time_total / 1e6
                                                                                        / total, 4),
            "calls": e.count} for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]]
    machine = machine_facts()
    result = {"config": args.config, "iterations": [args.start, args.stop], "wall_s": round(found["wall_s"], 2),
              "s_per_iter_profiled": round(found["wall_s"] / iters, 4), "self_cpu_s": round(total, 2),
              "convolution_share": round(conv / total, 4), "ops": ops, "machine": machine,
              "torch": torch.__version__}
    print(f"{args.config}: iterations {args.start}-{args.stop - 1} profiled, {found['wall_s']:.2f} s wall "
          f"({found['wall_s'] / iters:.3f} s/it with the profiler's overhead), {total:.2f} s self CPU time")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads; "
          f"{isa_text(machine)}")
    print(f"convolutions (forward and backward): {conv:.2f} s, {conv / total:.1%} of self CPU time")
    print(f"{'op':58} {'self s':>8} {'share':>7} {'calls':>7}")
    for row in ops:
        print(f"{row['op'][:58]:58} {row['self_s']:8.2f} {row['share']:7.1%} {row['calls']:7d}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
