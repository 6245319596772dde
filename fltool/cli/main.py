"""The ``fltool`` command: one Typer app joined from one module per command group."""
from __future__ import annotations

import json

import typer
from typing_extensions import Annotated

from fltool.about import VERSION as __version__
from fltool.cli import analyze, analyze_detections, bench, compare, data, evaluate, export, predict, sweep, train
from fltool.cli import tune as tune_cli
from fltool.cli.common import command, console, new_app, table

# One module per command (train, eval, predict, sweep, export: plain functions, importable and testable) or command
# group (bench, analyze, data: a Typer sub-app each); this module joins them into the ``fltool`` command.
app = new_app("fltool: Focal Loss and RetinaNet on MMDetection. Train, evaluate, benchmark and analyse detectors.")
command(app, "train")(train.train)
command(app, "eval")(evaluate.evaluate)
command(app, "predict")(predict.predict)
command(app, "sweep", help=sweep.SWEEP_HELP)(sweep.sweep)
command(app, "tune", help=tune_cli.TUNE_HELP)(tune_cli.tune)
command(app, "export")(export.export)
app.add_typer(bench.app, name="bench")
command(app, "compare")(compare.compare)
app.add_typer(analyze.app, name="analyze")
command(analyze.app, "errors")(analyze_detections.errors)
command(analyze.app, "pr")(analyze_detections.pr)
app.add_typer(data.app, name="data")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fltool {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Show fltool's version and exit.")] = False) -> None:
    """fltool: Focal Loss and RetinaNet on MMDetection."""


@command(app, "doctor")
def doctor(as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False) -> None:
    """Report the installed stack (python, torch/CUDA, mmcv ops, mmdet, mmengine, pycocotools) and check it works."""
    from fltool.engine.doctor import stack_report
    from fltool.errors import StackError

    report = stack_report()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        rows = [[c.name, c.version, "ok" if c.ok else ("FAIL" if c.required else "warn"), c.detail]
                for c in report.checks]
        t = table("fltool doctor", ["component", "version", "status", "detail"], rows)
        t.columns[3].justify = "left"
        console.print(t)
    for check in report.checks:
        if not check.ok and not check.required:
            typer.echo(f"fltool: warning: {check.name}: {check.detail}; {check.fix}", err=True)
    if not report.ok:
        first = report.problems[0]
        more = f" (and {len(report.problems) - 1} more problem(s) above)" if len(report.problems) > 1 else ""
        raise StackError(f"{first.name} is broken: {first.detail}{more}", first.fix)


def main() -> None:
    app(prog_name="fltool")


if __name__ == "__main__":
    main()
