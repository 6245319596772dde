"""Config handling shared by every command: find, load, override and place a config.

- A config is given as a path, or as the bare name of a file under ``configs/`` (``retinanet_r18_gn_synth_256``),
  which works from any working directory.
- ``--cfg-options key=value ...`` uses MMEngine's value syntax (``a.b=1``, ``a=[1,2]``, ``a=(1,2)``, ``a=x,y``);
  a key the config does not have is an error naming the nearest valid key, unless written ``+key=value`` (add).
- The work dir is chosen CLI > config ``work_dir`` > ``work_dirs/<config name>``.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from fltool.errors import ConfigError

#: Repository root: where configs/ sits beside the package in a checkout (and so in an editable install).
PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Where a built wheel (``pip install .``, non-editable) carries configs/: setup.py copies them into the package,
#: as MMDetection ships its configs inside mmdet/.mim.
PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_dir() -> Path:
    """The folder of shipped configs: ``FLTOOL_CONFIG_DIR`` if set, else the copy inside an installed package, else
    the checkout's configs/."""
    if os.environ.get("FLTOOL_CONFIG_DIR"):
        return Path(os.environ["FLTOOL_CONFIG_DIR"])
    return PACKAGED_CONFIGS if PACKAGED_CONFIGS.is_dir() else PROJECT_ROOT / "configs"


@dataclass(frozen=True)
class ConfigInfo:
    name: str
    path: Path
    group: str
    summary: str


def _summary(path: Path) -> str:
    """First line of a config file's module docstring."""
    try:
        doc = ast.get_docstring(ast.parse(path.read_text()))
    except (OSError, SyntaxError, ValueError):
        return ""
    return doc.strip().splitlines()[0] if doc else ""


def list_configs(pattern: str | None = None) -> list[ConfigInfo]:
    """Shipped configs (files under ``configs/`` whose name does not start with ``_``), sorted by group and name."""
    root = config_dir()
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith("_") for part in rel.parts):
            continue
        if pattern and pattern not in path.stem:
            continue
        group = rel.parts[0] if len(rel.parts) > 1 else ""
        found.append(ConfigInfo(path.stem, path, group, _summary(path)))
    return found


def resolve_config(spec: str | os.PathLike) -> Path:
    """A config path, or the bare name of a shipped config, to an existing file."""
    spec_str = str(spec)
    path = Path(spec_str).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        raise ConfigError(f"config '{spec_str}' is a directory", "give a .py config file or the name of one")
    name = path.name[:-3] if path.name.endswith(".py") else path.name
    looks_like_path = os.sep in spec_str or spec_str.endswith(".py")
    matches = [p for p in config_dir().rglob(f"{name}.py") if not p.name.startswith("_")]
    if len(matches) == 1 and not (looks_like_path and os.sep in spec_str):
        return matches[0].resolve()
    if len(matches) > 1:
        options = ", ".join(str(m.relative_to(config_dir())) for m in matches)
        raise ConfigError(f"config name '{name}' is ambiguous ({options})", "give the path instead")
    names = [c.name for c in list_configs()]
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else "run `fltool train --list` to see the shipped configs"
    raise ConfigError(f"config not found: '{spec_str}'", hint)


def parse_cfg_options(items: Optional[Sequence[str]]) -> dict[str, Any]:
    """``key=value`` strings to a dict, with MMEngine's ``DictAction`` value syntax (lists, tuples, nesting)."""
    if not items:
        return {}
    from mmengine.config import DictAction

    for item in items:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip().lstrip("+"):
            raise ConfigError(f"--cfg-options item '{item}' is not key=value",
                              "write it as e.g. model.bbox_head.loss_cls.gamma=1.0")
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    try:
        ns = parser.parse_args(["--cfg-options", *items])
    except (argparse.ArgumentError, ValueError, SyntaxError) as exc:
        raise ConfigError(f"cannot parse --cfg-options {' '.join(items)}: {exc}") from None
    return dict(ns.cfg_options)


def _runner_argument_names() -> set[str]:
    from mmengine.runner import Runner

    return set(inspect.signature(Runner.__init__).parameters) - {"self"}


def _key_exists(cfg_dict: Any, parts: list[str]) -> tuple[bool, list[str], Any]:
    """Walk ``parts`` into cfg; returns (exists, the longest existing prefix, the container at that prefix)."""
    node = cfg_dict
    for i, part in enumerate(parts):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, parts[:i], node
    return True, parts, node


def _all_keys(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            full = f"{prefix}{key}"
            yield full
            yield from _all_keys(value, full + ".")
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _all_keys(value, f"{prefix}{i}.")


def validate_cfg_options(cfg: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Check every key exists in ``cfg`` (a ``+`` prefix means: add it); returns the options with ``+`` stripped."""
    runner_args = _runner_argument_names()
    clean = {}
    for key, value in options.items():
        if key.startswith("+"):
            clean[key[1:]] = value
            continue
        parts = key.split(".")
        exists, prefix, _ = _key_exists(cfg._cfg_dict, parts)
        if not exists and not (len(parts) == 1 and key in runner_args):
            all_keys = list(_all_keys(cfg._cfg_dict))
            close = difflib.get_close_matches(key, all_keys, n=1, cutoff=0.75)
            where = f" ('{'.'.join(prefix)}' has no '{parts[len(prefix)]}')" if prefix else ""
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"write '+{key}=...' to add a key the config does not have")
            raise ConfigError(f"unknown config key '{key}' in --cfg-options{where}", hint)
        clean[key] = value
    return clean


def load_config(spec: Any, cfg_options: Optional[Sequence[str] | dict] = None,
                work_dir: Optional[str | os.PathLike] = None):
    """Resolve, load (``lazy_import=False``), override and place a config. Returns an ``mmengine.Config``.

    ``spec`` is a path or a shipped config's name (the file is run, as MMEngine runs configs: the user named it),
    or an ``mmengine.Config`` already read (a copy is overridden and placed; see :mod:`fltool.engine.config_data`
    for configs fltool finds on its own and reads as data).
    """
    from fltool.engine import compat

    compat.apply()
    import copy

    from mmengine.config import Config

    if isinstance(spec, Config):
        cfg = copy.deepcopy(spec)
        return _override_and_place(cfg, Path(cfg.filename or "config.py"), cfg_options, work_dir)
    path = resolve_config(spec)
    try:
        cfg = Config.fromfile(str(path), lazy_import=False)
    except SyntaxError as exc:
        raise ConfigError(f"config {path} has a syntax error at line {exc.lineno}: {exc.msg}") from None
    except FileNotFoundError as exc:
        raise ConfigError(f"config {path} refers to a file that does not exist: {exc.filename or exc}",
                          "check its _base_ entries") from None
    except (KeyError, ImportError, ModuleNotFoundError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"cannot load config {path}: {type(exc).__name__}: {exc}") from None
    return _override_and_place(cfg, path, cfg_options, work_dir)


def _override_and_place(cfg: Any, path: Path, cfg_options: Optional[Sequence[str] | dict],
                        work_dir: Optional[str | os.PathLike]) -> Any:
    options = cfg_options if isinstance(cfg_options, dict) else parse_cfg_options(cfg_options)
    if options:
        cfg.merge_from_dict(validate_cfg_options(cfg, options))

    if work_dir is not None:
        cfg.work_dir = str(work_dir)
    elif cfg.get("work_dir") is None:
        cfg.work_dir = str(Path("work_dirs") / path.stem)
    return cfg
