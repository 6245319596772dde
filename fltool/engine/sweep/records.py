"""What a sweep folder records and how a run in it is recognised: the sweep's options, ``sweep.json``, each run's
``run.json`` settings and state (finished, partial, new, foreign), and the commands that make a sweep or one run
again."""
from __future__ import annotations

import os
import shlex
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

from fltool.engine.metrics import METRIC_KEYS
from fltool.engine.sweep.grid import Grid, Point, jsonable
from fltool.errors import ConfigError
from fltool.fileio import json_digest, read_json, write_json

METRICS = METRIC_KEYS  # what a sweep records of each run
SWEEP_FILE = "sweep.json"


@dataclass
class SweepOptions:
    config: str
    axes: list = field(default_factory=list)  # the --set items
    seeds: Optional[list] = None  # None: the seeds recorded in the sweep folder, else [0]
    work_dir: Optional[Path] = None  # default work_dirs/sweep_<config name>
    cfg_options: Optional[list] = None  # --cfg-options strings, passed to every run
    max_iters: Optional[int] = None
    deterministic: bool = False
    launcher: str = "none"
    point: Optional[int] = None  # run only this point (all seeds)
    report_only: bool = False
    track: tuple = ()  # experiment trackers (fltool.engine.tracking); the sweep's runs form one group


def default_work_dir(config_path: Path) -> Path:
    return Path("work_dirs") / f"sweep_{config_path.stem}"


def _config_arg(config: str, config_path: Path) -> str:
    """A shipped config's bare name stays a name; a path becomes absolute (the commands work from anywhere)."""
    looks_like_path = os.sep in config or config.endswith(".py")
    return str(config_path) if looks_like_path else config


def sweep_command(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: Sequence[int], *, report_only: bool = False,
                  point: Optional[int] = None) -> str:
    args = ["fltool", "sweep", _config_arg(opts.config, grid.config_path), "--work-dir", str(sweep_dir)]
    for axis in grid.axes:
        args += ["--set", axis.spec()]
    args += ["--seeds", ",".join(str(s) for s in seeds)]
    if opts.max_iters is not None:
        args += ["--max-iters", str(opts.max_iters)]
    if opts.deterministic:
        args.append("--deterministic")
    for item in opts.cfg_options or []:
        args += ["--cfg-options", item]
    if point is not None:
        args += ["--point", str(point)]
    if report_only:
        args.append("--report-only")
    return shlex.join(args)


def train_command_line(config: str, work_dir: Path, seed: int, max_iters: Optional[int], cfg_options: Sequence[str],
                       deterministic: bool = False, world_size: int = 1) -> str:
    """The ``fltool train`` command line that trains one run of an experiment on its own."""
    args = ["fltool", "train", config, "--work-dir", str(work_dir), "--seed", str(seed)]
    if max_iters is not None:
        args += ["--max-iters", str(max_iters)]
    if deterministic:
        args.append("--deterministic")
    if cfg_options:
        args += ["--cfg-options", *cfg_options]
    if world_size > 1:  # the experiment ran under torchrun: so does the run on its own
        return f"torchrun --nproc_per_node={world_size} -m {shlex.join(args)} --launcher pytorch"
    return shlex.join(args)


def train_command(opts: SweepOptions, grid: Grid, point: Point, seed: int, run_dir: Path, world_size: int) -> str:
    """The ``fltool train`` command line that trains this sweep run on its own (same config, seed and overrides)."""
    return train_command_line(_config_arg(opts.config, grid.config_path), run_dir, seed, opts.max_iters,
                              list(opts.cfg_options or []) + grid.flat_options[point.id], opts.deterministic,
                              world_size)


def run_settings(opts: SweepOptions, grid: Grid, point: Point, seed: int) -> dict:
    """What a run was started with (run.json); a finished run is reused only when these match."""
    return jsonable({"config": grid.config_path.name, "config_digest": grid.config_digest,
                      "point": point.id, "settings": point.settings,
                      "cfg_options": {**grid.base_cfg_options, **point.cfg_options}, "seed": seed,
                      "max_iters": opts.max_iters, "deterministic": opts.deterministic})


def _sweep_identity(opts: SweepOptions, grid: Grid) -> dict:
    """What every point of a sweep shares: a folder holds one of these."""
    return jsonable({"config": grid.config_path.name, "config_digest": grid.config_digest,
                      "cfg_options": list(opts.cfg_options or []),
                      "max_iters": opts.max_iters, "deterministic": opts.deterministic})


def _legacy_view(recorded: dict, new: dict) -> dict:
    """Records written before ``config_digest`` existed hold the config's absolute path and no digest: compare those
    by the config's file name, so that their finished runs still count."""
    if "config_digest" in recorded or not isinstance(recorded.get("config"), str):
        return new
    legacy = {k: v for k, v in new.items() if k != "config_digest"}
    if Path(recorded["config"]).name == new.get("config"):
        legacy["config"] = recorded["config"]
    return legacy


def read_sweep_record(sweep_dir: Path) -> Optional[dict]:
    return read_json(Path(sweep_dir) / SWEEP_FILE)


def check_same_sweep(record: dict, opts: SweepOptions, grid: Grid, sweep_dir: Path) -> None:
    """Refuse a folder made by another sweep, unless this grid only adds points to it."""
    old = record.get("identity", {})
    new = _legacy_view(old, _sweep_identity(opts, grid))
    for key in ("config", "config_digest", "cfg_options", "max_iters", "deterministic"):
        if old.get(key) != new.get(key) and key == "config_digest":
            raise ConfigError(f"sweep folder {sweep_dir} holds a sweep of {new['config']} as it was before: the "
                              "config or one of its _base_ files has changed since",
                              "use another --work-dir for the edited config, or restore the config to continue")
        if old.get(key) != new.get(key):
            raise ConfigError(f"sweep folder {sweep_dir} holds a sweep with {key} {old.get(key)!r}, this command "
                              f"has {new.get(key)!r}", "use another --work-dir, or the same settings")
    now = {p.id: p.settings for p in grid.points}
    gone = [p["id"] for p in record.get("points", []) if now.get(p["id"], object()) != p.get("settings")]
    if gone:
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        raise ConfigError(f"sweep folder {sweep_dir} was made by another grid: its point '{gone[0]}'{more} is not in "
                          f"this one (its axes: {' '.join('--set ' + a for a in record.get('axes', []))})",
                          "use another --work-dir, or a grid that keeps every recorded point and only adds new ones")


def run_dir_of(sweep_dir: Path, point: Point, seed: int) -> Path:
    return Path(sweep_dir) / point.id / f"seed{seed}"


def metrics_of(metrics_file: Path) -> dict:
    data = read_json(metrics_file) or {}
    bbox = data.get("bbox") or {}
    return {k: bbox.get(k) for k in METRICS}


def run_state(run_dir: Path, settings: dict) -> str:
    """'finished', 'partial' (a checkpoint to resume from), 'new', or 'foreign' (made with other settings)."""
    recorded = read_json(run_dir / "run.json")
    finished = (run_dir / "metrics.json").is_file()
    if recorded is not None and recorded.get("settings_hash") != json_digest(_legacy_view(recorded, settings)):
        return "foreign"
    if finished:
        return "finished" if recorded is not None else "foreign"
    return "partial" if (run_dir / "last_checkpoint").is_file() else "new"


def sweep_dir_of(opts: SweepOptions) -> Path:
    from fltool.engine.config import resolve_config

    return Path(opts.work_dir or default_work_dir(resolve_config(opts.config))).resolve()


def with_recorded(opts: SweepOptions, read_only: bool) -> tuple[SweepOptions, Optional[list]]:
    """Fill in from the sweep folder's record what the command leaves out: the seeds always; for a read-only command
    (--report-only, --list-points) also the axes (when no --set is given), --max-iters, --cfg-options and
    --deterministic, since a folder holds one sweep. Returns (options, recorded seeds)."""
    record = read_sweep_record(sweep_dir_of(opts)) or {}
    if not read_only or not record:
        return opts, record.get("seeds")
    identity = record.get("identity") or {}
    return replace(opts, axes=list(opts.axes or record.get("axes") or []),
                   max_iters=opts.max_iters if opts.max_iters is not None else identity.get("max_iters"),
                   cfg_options=opts.cfg_options or identity.get("cfg_options") or None,
                   deterministic=opts.deterministic or bool(identity.get("deterministic"))), record.get("seeds")


def seeds_to_run(opts: SweepOptions, recorded: Optional[list]) -> list:
    seeds = list(opts.seeds) if opts.seeds is not None else list(recorded or [0])
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}", "give each seed once")
    return seeds


def write_sweep_record(opts: SweepOptions, grid: Grid, sweep_dir: Path, seeds: list, world_size: int) -> None:
    path = sweep_dir / SWEEP_FILE
    previous = read_json(path) or {}
    write_json(path, {
        "command": sweep_command(opts, grid, sweep_dir, seeds),
        "config": str(grid.config_path), "identity": _sweep_identity(opts, grid),
        # every seed asked for so far: the default of a later command that gives no --seeds
        "axes": [a.spec() for a in grid.axes], "seeds": list(dict.fromkeys([*previous.get("seeds", []), *seeds])),
        "world_size": world_size,
        "points": [{"index": p.index, "id": p.id, "settings": p.settings} for p in grid.points],
        "created": previous.get("created", time.strftime("%Y-%m-%d %H:%M:%S")),
        "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
