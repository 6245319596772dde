"""What every command shares: the error convention, console helpers and the option aliases.

Error convention: an :class:`fltool.errors.FltoolError` (a domain error) prints one line on stderr,
``fltool: error: <what>; <what to do>``, and exits 1 (a signal-stopped run exits 128+signal); usage errors stay
Click's exit 2; ``FLTOOL_DEBUG=1`` prints the traceback as well. Tracebacks never show locals (no tensor dumps).
"""
from __future__ import annotations

import functools
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand
from typing_extensions import Annotated

from fltool.engine.metrics import METRIC_KEYS
from fltool.errors import FltoolError, from_os_error

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}

console = Console()  # results: tables and summaries (stdout)
err_console = Console(stderr=True)  # progress and notes (stderr), so stdout stays clean for pipes


def new_app(help_text: str) -> typer.Typer:
    """A command group with fltool's settings: -h/--help, help on no args, no pretty tracebacks with locals."""
    return typer.Typer(help=help_text, no_args_is_help=True, context_settings=CONTEXT_SETTINGS,
                       pretty_exceptions_enable=False, add_completion=False, rich_markup_mode="rich")


def debug_enabled() -> bool:
    return os.environ.get("FLTOOL_DEBUG", "").lower() not in ("", "0", "false", "no")


def _fail(message: str, exit_code: int) -> None:
    if debug_enabled():
        traceback.print_exc()
    print(f"fltool: error: {message}", file=sys.stderr, flush=True)
    from fltool.engine.compat import exit_distributed

    exit_distributed(exit_code)  # a distributed run: exit now, before a teardown that can abort (compat item 6)
    raise typer.Exit(exit_code)


def handle_errors(func: Callable) -> Callable:
    """Wrap a command so domain errors become one line on stderr and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            result = func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, typer.BadParameter):  # a usage error: Click's message, exit 2
            raise
        except FltoolError as exc:
            _fail(exc.one_line(), exc.exit_code)
        except OSError as exc:  # a full disk, a read-only folder: the file and what to do, not "a bug"
            _fail(from_os_error(exc).one_line(), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except MemoryError:
            _fail("out of memory; use a smaller batch size, image scale or --num-images", 1)
        except Exception as exc:  # a bug: say so in one line; FLTOOL_DEBUG=1 shows where
            text = " ".join(str(exc).split())[:300]
            _fail(f"internal error: {type(exc).__name__}: {text} "
                  "(this is a bug in fltool or its stack; rerun with FLTOOL_DEBUG=1 for the traceback)", 1)
        from fltool.engine.compat import end_distributed

        end_distributed()  # a distributed run that succeeded: destroy its group and exit 0 now (compat item 6)
        return result

    return wrapper


def expand_cfg_options(args: List[str]) -> List[str]:
    """MMDetection's ``--cfg-options a=1 b=2`` to Click's repeated ``--cfg-options a=1 --cfg-options b=2``;
    a bare ``--resume`` to ``--resume auto``."""
    out: List[str] = []
    collecting = empty = False
    for arg in args:
        if arg == "--cfg-options":
            collecting = empty = True
            continue
        if collecting and "=" in arg and not arg.startswith("-"):
            out += ["--cfg-options", arg]
            empty = False
            continue
        if collecting and empty:
            out.append("--cfg-options")  # given without a value: Click reports it
        collecting = False
        out.append(arg)
    if collecting and empty:
        out.append("--cfg-options")
    return _bare_resume_means_auto(out)


def _bare_resume_means_auto(args: List[str]) -> List[str]:
    """MMDetection's ``--resume`` without a value means 'auto' (the work dir's last checkpoint)."""
    out: List[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--resume":
            nxt = args[i + 1] if i + 1 < len(args) else None
            is_value = nxt is not None and not nxt.startswith("-") and (
                nxt == "auto" or nxt.endswith((".pth", ".pt", ".ckpt")) or os.path.isfile(nxt))
            if not is_value:
                out.append("auto")
    return out


class FltoolCommand(TyperCommand):
    """A Typer command that also accepts MMDetection's space-separated ``--cfg-options k=v k=v``."""

    def parse_args(self, ctx: Any, args: List[str]) -> List[str]:
        return super().parse_args(ctx, expand_cfg_options(list(args)))


def command(app: typer.Typer, name: Optional[str] = None, **kwargs: Any) -> Callable:
    """``@command(app, "name")``: register a command with the error convention applied."""

    def decorator(func: Callable) -> Callable:
        kwargs.setdefault("cls", FltoolCommand)
        app.command(name, **kwargs)(handle_errors(func))
        return func

    return decorator


def table(title: str, columns: List[str], rows: List[List[Any]], caption: Optional[str] = None) -> Table:
    width = max(len(title), len(caption or "")) + 4
    t = Table(title=title, caption=caption, header_style="bold", min_width=min(width, console.width))
    for i, col in enumerate(columns):
        t.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*[fmt(v) for v in row])
    return t


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if value != value:  # NaN
            return "n/a"
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


class Precision(str, Enum):
    """``--precision`` (fltool.engine.precision)."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class BackendName(str, Enum):
    """The runtimes of fltool.engine.backends (eval and predict take one)."""

    pytorch = "pytorch"
    onnxruntime = "onnxruntime"
    openvino = "openvino"


# Shared option aliases: declared once, used by every command that takes them.
ConfigArg = Annotated[str, typer.Argument(help="Config file, or the name of one under configs/ "
                                               "(see `fltool train --list`).",
                                          show_default=False)]
CheckpointArg = Annotated[Path, typer.Argument(help="Checkpoint (.pth) to load.", show_default=False)]
WorkDirOpt = Annotated[Optional[Path], typer.Option("--work-dir", help="Output folder (default: the config's work_dir, "
                                                     "else work_dirs/<config name>).")]
CfgOptionsOpt = Annotated[Optional[List[str]], typer.Option(
    "--cfg-options", help="Override config keys, MMEngine syntax: key=value (repeatable; a.b=1, a=[1,2], a=(1,2)). "
                          "Prefix a key with + to add one the config does not have.")]


class Launcher(str, Enum):
    none = "none"
    pytorch = "pytorch"
    slurm = "slurm"


class DataCheck(str, Enum):
    check = "check"
    skip = "skip"
    drop = "drop"



TrustOpt = Annotated[bool, typer.Option("--trust-checkpoint", help="Allow full unpickling of the checkpoint (only "
                                        "for files from a source you trust; default: tensors only).")]
LauncherOpt = Annotated[Launcher, typer.Option("--launcher", help="Job launcher: none, pytorch (torchrun) or slurm.")]
TrackOpt = Annotated[Optional[List[str]], typer.Option(
    "--track", help="Log the run to experiment trackers, comma-separated: tensorboard, mlflow, wandb, dvclive "
                    "(mlflow/wandb/dvclive need the extra: pip install 'fltool[track]'; where: docs/tracking.md). A "
                    "tracker that fails is one warning; the run goes on.", show_default=False)]
LocalRankOpt = Annotated[Optional[int], typer.Option(
    "--local-rank", "--local_rank", hidden=True, help="Set by torch.distributed.launch; torchrun uses $LOCAL_RANK.")]


def metrics_table(metrics: dict, title: str, caption: str) -> Any:
    return table(title, ["metric", "value"], [[k, metrics.get(k)] for k in METRIC_KEYS], caption=caption)


def per_class_table(per_class: dict, caption: str) -> Any:
    return table("per-class AP", ["class", "AP"], [[k, v] for k, v in per_class.items()], caption=caption)


_PRECISION_HELP = ("auto: bf16 where the CPU computes it natively (AMX, AVX512_BF16), else fp32; bf16 on a CPU (the "
                   "network under autocast; losses, anchors and NMS in fp32); fp16/bf16 on a GPU (AMP).")
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help=_PRECISION_HELP)]
#: ``fltool train``'s --precision: its default is $FLTOOL_PRECISION where set, else auto (None here).
TrainPrecisionOpt = Annotated[Optional[Precision], typer.Option(
    "--precision", help=_PRECISION_HELP + " Default: $FLTOOL_PRECISION where set, else auto.", show_default=False)]
