"""Building MMEngine's Runner from an fltool config, with errors that say what to fix.

Every command that runs a model (train, eval, bench, analyze, sweep) loads its config with
:func:`fltool.engine.config.load_config` and builds the Runner with :func:`build_runner`. This is the one place where
a config is translated for the run:
- the embedded dataset placeholder (``fltool-synth://``) becomes the cached dataset folder, generated on first use;
- :func:`harden`: MMCV's ``LoadImageFromFile`` becomes fltool's ``LoadImageChecked``, MMDetection's ``PackDetInputs``
  ``PackDetInputsFast`` and MMEngine's ``CheckpointHook`` fltool's ``AtomicCheckpointHook`` (same arguments, safer or
  faster behaviour), and ``NonFiniteLossHook`` is always on. The config the Runner writes into the work dir shows
  them, and :func:`harden` returns what it changed, which the commands print as one note;
- every registry ``type`` is checked up front, so a misspelt one is one line naming it and the nearest valid name.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional

from fltool.errors import CheckpointError, ConfigError, DataError, FltoolError, TrainingError
from fltool.progress import ProgressEvent, ProgressFn, no_progress

SYNTH_PREFIX = "fltool-synth://"
NON_REGISTRY_TYPES = {"nms", "soft_nms"}  # test_cfg.nms.type names an MMCV op, not a registry entry


# --------------------------------------------------------------------------------------------------------------
# Config translation
# --------------------------------------------------------------------------------------------------------------
def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}.{i}" if path else str(i))


def registry_names() -> set[str]:
    """Every type name registered in MMDetection's and MMEngine's registries (fltool's plugins included)."""
    import mmdet.registry as det_registry
    import mmengine.registry as engine_registry
    from mmdet.utils import register_all_modules
    from mmengine.registry import Registry

    import fltool_plugins  # noqa: F401  (registers fltool's types)

    register_all_modules(init_default_scope=False)
    names: set[str] = set()
    for module in (det_registry, engine_registry):
        for value in vars(module).values():
            if isinstance(value, Registry):
                names.update(value.module_dict)
    return names


def unknown_types(cfg: Any) -> list[tuple[str, str, Optional[str]]]:
    """Every ``type`` string in ``cfg`` that no registry knows: (key path, type, nearest valid name or None)."""
    names = registry_names()
    found = []
    for path, node in _walk(cfg._cfg_dict.to_dict() if hasattr(cfg, "_cfg_dict") else cfg):
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            continue
        name = node["type"]
        if "." in name and "::" not in name:
            continue  # a dotted import path: MMEngine imports it itself
        bare = name.split("::")[-1]
        if bare in names or bare in NON_REGISTRY_TYPES:
            continue
        close = difflib.get_close_matches(bare, sorted(names), n=1, cutoff=0.6)
        found.append((f"{path}.type" if path else "type", name, close[0] if close else None))
    return found


def check_types(cfg: Any) -> None:
    bad = unknown_types(cfg)
    if bad:
        path, name, close = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        hint = f"did you mean '{close}'?" if close else "check the spelling, or add the module that registers it " \
                                                        "to custom_imports"
        raise ConfigError(f"unknown type '{name}' at {path}{more}", hint)


def _replace_strings(node: Any, old: str, new: str) -> Any:
    if isinstance(node, str):
        return node.replace(old, new)
    if isinstance(node, dict):
        for key in list(node.keys()):
            node[key] = _replace_strings(node[key], old, new)
        return node
    if isinstance(node, list):
        return [_replace_strings(v, old, new) for v in node]
    if isinstance(node, tuple):
        return tuple(_replace_strings(v, old, new) for v in node)
    return node


def resolve_embedded_dataset(cfg: Any, progress: ProgressFn = no_progress) -> Optional[Path]:
    """Replace ``fltool-synth://`` in the config by the cached embedded dataset, generating it if needed."""
    if SYNTH_PREFIX not in str(cfg._cfg_dict.to_dict()):
        return None
    from fltool.data.synth import default_dataset, spec_from_args

    try:
        spec = spec_from_args(dict(cfg.get("fltool_synth_spec") or {}))
    except ConfigError as exc:
        raise ConfigError(f"fltool_synth_spec in config: {exc.message}", exc.hint) from None

    def report(done: int, total: int) -> None:
        progress(ProgressEvent("stage", "generating the embedded dataset", done, total))

    dataset = default_dataset(spec, progress=report)
    root = str(dataset.root).rstrip("/") + "/"
    for key in list(cfg.keys()):
        cfg[key] = _replace_strings(cfg[key], SYNTH_PREFIX, root)
    return dataset.root


#: fltool's equivalents of MMEngine/MMDetection types, and why (:func:`harden`).
SWAPS = {"LoadImageFromFile": ("LoadImageChecked", "names a missing, truncated or oversized image"),
         "PackDetInputs": ("PackDetInputsFast", "a faster image copy"),
         "mmdet.PackDetInputs": ("PackDetInputsFast", "a faster image copy"),
         "CheckpointHook": ("AtomicCheckpointHook", "atomic, weights_only-loadable checkpoints")}


def _upgrade_types(node: Any, changed: dict) -> None:
    for _, item in _walk(node):
        if isinstance(item, dict) and item.get("type") in SWAPS:
            old = item["type"]
            item["type"] = SWAPS[old][0]
            if old == "LoadImageFromFile":
                item.pop("ignore_empty", None)
            changed[f"{old} -> {SWAPS[old][0]}"] = SWAPS[old][1]


def harden(cfg: Any) -> list[str]:
    """Swap in fltool's safer equivalents and guards (see the module docstring); returns what changed, as
    ``'old -> new (why)'`` items (empty where the config already had them)."""
    imports = list((cfg.get("custom_imports") or {}).get("imports", []))
    if "fltool_plugins" not in imports:
        cfg.custom_imports = dict(imports=imports + ["fltool_plugins"], allow_failed_imports=False)
    changed: dict = {}
    for key in ("train_dataloader", "val_dataloader", "test_dataloader", "default_hooks", "train_pipeline",
                "test_pipeline"):
        if cfg.get(key) is not None:
            _upgrade_types(cfg[key], changed)
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") == "NonFiniteLossHook" for h in hooks):
        hooks.append(dict(type="NonFiniteLossHook"))
        changed["+ NonFiniteLossHook"] = "stops on a NaN or infinite loss"
    cfg.custom_hooks = hooks
    return [f"{change} ({why})" for change, why in changed.items()]


def hardening_note(changes: list[str]) -> Optional[str]:
    """The one line a command prints about :func:`harden`'s changes, or None where there were none."""
    if not changes:
        return None
    return ("fltool's equivalents in this run's config (the config written to the work dir shows them): "
            + "; ".join(changes))


def unwrap_dataset(dataset: Any) -> Any:
    """The dataset dict inside its RepeatDataset/ClassBalancedDataset/ConcatDataset-of-one wrappers."""
    while "dataset" in dataset and "ann_file" not in dataset:
        dataset = dataset["dataset"]
    return dataset


def innermost_dataset(cfg: Any, split: str) -> Any:
    """The dataset dict of ``{split}_dataloader``, unwrapped (:func:`unwrap_dataset`; empty where there is none)."""
    loader = cfg.get(f"{split}_dataloader")
    return unwrap_dataset((loader or {}).get("dataset") or {})


def dataset_paths(cfg: Any, split: str) -> tuple[Optional[Path], Optional[Path]]:
    """(annotation file, image folder) of ``{split}_dataloader`` for COCO-style datasets, else (None, None)."""
    dataset = innermost_dataset(cfg, split)
    ann = dataset.get("ann_file")
    if not ann:
        return None, None
    root = dataset.get("data_root") or ""
    prefix = (dataset.get("data_prefix") or {}).get("img", "")
    return Path(os.path.join(root, ann)), Path(os.path.join(root, prefix))


def check_data_paths(cfg: Any, splits: tuple[str, ...]) -> None:
    """A missing annotation file or image folder is one error naming it (before MMEngine builds anything)."""
    if cfg.get("fltool_data_recipe"):
        raise ConfigError("this config is a recipe for your own data: a model and schedule without a dataset",
                          "give the data with it: fltool train --data PATH CONFIG")
    for split in splits:
        ann, img_dir = dataset_paths(cfg, split)
        if ann is not None and not ann.is_file():
            raise DataError(f"{split} annotation file not found: {ann}",
                            f"fix {split}_dataloader.dataset.ann_file/data_root (or --cfg-options)")
        if img_dir is not None and not img_dir.is_dir():
            raise DataError(f"{split} image folder not found: {img_dir}",
                            f"fix {split}_dataloader.dataset.data_prefix.img/data_root")


# --------------------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------------------
def quiet_console_logging(runner: Any) -> None:
    """MMEngine logs to the work dir; on the console only its warnings and errors (fltool shows progress)."""
    for handler in runner.logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.WARNING)


@contextlib.contextmanager
def captured_stdout(log_file: Optional[Path]) -> Iterator[None]:
    """Send stray ``print`` output (pycocotools) to ``log_file`` instead of the user's terminal."""
    if log_file is None:
        yield
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as sink, contextlib.redirect_stdout(sink):
        yield


def isolate_run(cfg: Any) -> None:
    """Give this run its own MMEngine instance names.

    MMEngine keeps one Visualizer, MessageHub and logger per name per process, and names them after the config's
    ``visualizer.name`` and a timestamp to the second: a second run in the same process (sweeps, tests, bench)
    would write its scalars into the first run's vis_data folder. A per-run suffix keeps them apart.
    """
    run_id = uuid.uuid4().hex[:8]
    cfg.experiment_name = f"{time.strftime('%Y%m%d_%H%M%S')}_{run_id}"
    if isinstance(cfg.get("visualizer"), dict):
        cfg.visualizer["name"] = f"{cfg.visualizer.get('name', 'visualizer')}_{run_id}"


@functools.lru_cache(maxsize=None)
def runner_class() -> Any:
    """MMEngine's Runner, with one change: the config it dumps into the work dir is written by
    :func:`fltool.engine.config_data.config_text`, so that MMEngine reads it back to the same values (its own dump
    keeps ``{{ ... }}`` inside strings, which ``Config.fromfile`` then rewrites: a class named ``{{ fileDirname }}``
    came back as a folder name)."""
    from mmengine.dist import master_only
    from mmengine.runner import Runner

    from fltool.engine.config_data import config_text
    from fltool.fileio import write_text

    class FltoolRunner(Runner):
        @master_only
        def dump_config(self) -> None:
            name = os.path.basename(self.cfg.filename) if self.cfg.filename else f"{self.timestamp}.py"
            if not name.endswith(".py"):  # a JSON/YAML config is dumped in its own format
                return super().dump_config()
            write_text(os.path.join(self.work_dir, name), config_text(self.cfg))

    return FltoolRunner


def build_runner(cfg: Any) -> Any:
    """``Runner.from_cfg`` (:func:`runner_class`) with MMEngine/MMDetection's exceptions turned into fltool errors."""
    check_types(cfg)
    isolate_run(cfg)
    with translate_errors():
        return runner_class().from_cfg(cfg)


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn the exceptions of a run into fltool errors that name the cause."""
    from fltool_plugins.datasets import ImageLoadError
    from fltool_plugins.hooks import NonFiniteLossError

    try:
        yield
    except FltoolError:
        raise
    except ImageLoadError as exc:
        raise DataError(str(exc), "run `fltool data check` on the dataset, then fix or drop the file") from None
    except NonFiniteLossError as exc:
        raise TrainingError(f"{exc}; training stopped and no checkpoint was written after it",
                            "lower the learning rate or add gradient clipping (optim_wrapper.clip_grad), then "
                            "resume from the last checkpoint") from None
    except FileNotFoundError as exc:
        raise DataError(f"file not found: {exc.filename or exc}", "check the paths in the config") from None
    except OSError as exc:  # e.g. ENOSPC while writing a checkpoint: the previous one is intact
        where = f" {exc.filename}" if exc.filename else ""
        raise TrainingError(f"cannot write{where}: {exc.strerror or exc}",
                            "free disk space (or fix permissions), then continue with --resume auto") from None
    except KeyError as exc:
        text = str(exc.args[0]) if exc.args else str(exc)
        if "registry" in text:
            raise ConfigError(text.split(". Please")[0]) from None
        raise
    except TypeError as exc:
        text = str(exc)
        if "__init__() got an unexpected keyword argument" in text or "missing" in text and "argument" in text:
            raise ConfigError(f"bad config arguments: {text}") from None
        raise


def by_module(keys: list, depth: int = 1, limit: Optional[int] = None) -> str:
    """``bbox_head (38), neck (2)``: how many of ``keys`` fall under each module (its first ``depth`` name parts),
    largest first (the first ``limit`` of them)."""
    from collections import Counter

    counts = Counter(".".join(k.split(".")[:depth]) for k in keys)
    return ", ".join(f"{name} ({n})" for name, n in counts.most_common(limit))


def _examples(keys: list, limit: int = 3) -> str:
    return ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")


def built_runner_with_weights(cfg: Any, state: Optional[dict], source: str) -> tuple[Any, Any]:
    """(runner, detector): :func:`build_runner` (its console logging quietened), and the bare model inside its
    DDP/DataParallel wrapper with every weight of ``state`` loaded strictly (:func:`load_weights_strict`); with
    ``state`` None the model keeps what the config's init gave it."""
    runner = build_runner(cfg)
    quiet_console_logging(runner)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    if state is not None:
        load_weights_strict(model, state, source)
    return runner, model


def strip_module_prefix(state: dict) -> dict:
    """DDP-wrapped checkpoints name every weight ``module.<name>``; the bare model does not."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_weights_strict(model: Any, state: dict, source: str) -> None:
    """Load a checkpoint into ``model`` for inference: every weight must come from the file.

    For eval, bench, analyze, predict and export a model whose weights partly come from its random initialisation
    would be scored as if trained. So a weight the file lacks, a key the model does not have, or a shape that
    differs is an error that names the first keys and the modules they belong to. (Fine-tuning with
    ``--load-from``, where a changed classifier is expected, goes through MMEngine's non-strict load instead.)
    """
    import torch

    own = model.state_dict()
    state = strip_module_prefix(state)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape_bad = [k for k in own if k in state and isinstance(state[k], torch.Tensor)
                 and tuple(state[k].shape) != tuple(own[k].shape)]
    hint = "use the config the checkpoint was trained with (a work dir's <config>.py); to start training from " \
           "partial weights, use fltool train --load-from"
    if shape_bad:
        k = shape_bad[0]
        raise CheckpointError(f"checkpoint {source} does not fit this config: {len(shape_bad)} weights have other "
                              f"shapes, in {by_module(shape_bad)} (e.g. {k}: {tuple(state[k].shape)} in the file, "
                              f"{tuple(own[k].shape)} in the model)", hint)
    if missing:
        whole = sorted({k.split('.', 1)[0] for k in missing} - {k.split('.', 1)[0] for k in own if k in state})
        what = f"all of {', '.join(whole)}; " if whole else ""
        raise CheckpointError(f"checkpoint {source} does not fit this config: it lacks {len(missing)} of {len(own)} "
                              f"model weights ({what}by module: {by_module(missing)}; e.g. {_examples(missing)})",
                              hint)
    if unexpected:
        raise CheckpointError(f"checkpoint {source} does not fit this config: it has {len(unexpected)} weights the "
                              f"model does not (by module: {by_module(unexpected)}; e.g. {_examples(unexpected)})",
                              hint)
    model.load_state_dict(state, strict=True)


def stdout_log(cfg: Any) -> Optional[Path]:
    return Path(cfg.work_dir) / "stdout.log" if cfg.get("work_dir") else None
