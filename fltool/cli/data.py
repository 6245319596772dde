"""`fltool data`: generate the synthetic default dataset, check a COCO dataset."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typing_extensions import Annotated

from fltool.cli.common import command, console, err_console, new_app, table
from fltool.cli.dataopts import DataFormat, DataOpt, FormatOpt, ValFractionOpt
from fltool.errors import ConfigError, DataError

if TYPE_CHECKING:
    from fltool.data.check import CheckReport

app = new_app("Datasets: generate the synthetic default dataset, check a COCO dataset before training on it.")


@contextlib.contextmanager
def _progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr, driven by a ``(done, total)`` callback (none when stderr is not a terminal)."""
    if not err_console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# ---------------------------------------------------------------------------------------------- synth

@command(app, "synth")
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write images/, train.json, val.json, meta.json into.",
                                            show_default=False)],
    num_train: Annotated[Optional[int], typer.Option("--num-train", min=1, help="Training images.")] = None,
    num_val: Annotated[Optional[int], typer.Option("--num-val", min=1, help="Validation images.")] = None,
    # 160 px: the smallest image that fits the default large shapes (96 px, at most 0.6 of the side).
    size: Annotated[Optional[int], typer.Option("--size", min=160, help="Image side in pixels.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into OUT_DIR even if it is not empty.")] = False,
    data_format: Annotated[DataFormat, typer.Option(
        "--format", help="Layout: coco (images/, train.json, val.json), voc (Annotations/, JPEGImages/, "
                         "ImageSets/Main/) or yolo (images/, labels/, data.yaml).")] = DataFormat.coco,
    preset: Annotated[str, typer.Option("--preset", help="default: the embedded dataset (256 px, 4-12 objects); "
                                        "sparse: 384 px, 1-3 small objects among 9-18 look-alikes, about 1 positive "
                                        "anchor in 1000 as on COCO.")] = "default",
) -> None:
    """Generate the synthetic shapes dataset (the default training data) into OUT_DIR. Unset options keep the
    preset's values (--preset default: the embedded dataset)."""
    import shutil
    import tempfile

    from fltool.data.formats.writers import export
    from fltool.data.synth import generate, spec_from_args

    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} is a file", "give a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise DataError(f"{out_dir} is not empty", "choose an empty folder, or add --force to write into it")
    overrides = {"num_train": num_train, "num_val": num_val, "image_size": size, "seed": seed}
    spec = spec_from_args({"preset": preset, **{k: v for k, v in overrides.items() if v is not None}})
    with _progress_bar("generating") as progress:
        if data_format == DataFormat.coco:
            dataset = generate(spec, out_dir, progress)
            meta = dataset.meta()
        else:  # written as COCO beside OUT_DIR, then laid out in the other format (images moved, not copied)
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".synth-", dir=out_dir.parent))
            try:
                dataset = generate(spec, staging / "coco", progress)
                meta = dataset.meta()
                export(staging / "coco", out_dir, data_format.value, move=True)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    splits = meta["splits"]
    rows = [["images"] + [splits[s]["images"] for s in splits],
            ["boxes"] + [splits[s]["boxes"] for s in splits],
            ["distractors (unlabelled)"] + [splits[s]["distractors"] for s in splits]]
    rows += [[f"  {name}"] + [splits[s]["class_counts"][name] for s in splits] for name in dataset.classes]
    rows += [[f"  {size_} fraction"] + [splits[s]["size_fractions"][size_] for s in splits]
             for size_ in ("small", "medium", "large")]
    console.print(table(f"synthetic dataset in {out_dir}", ["", *splits], rows,
                        caption=f"{spec.image_size}x{spec.image_size} px, seed {spec.seed}, {data_format.value} "
                                f"layout, content hash {meta['content_hash'][:12]}"))


# ---------------------------------------------------------------------------------------------- check

def _print_report(name: str, report: CheckReport, max_show: int) -> None:
    from fltool.data.check import SIZE_NAMES

    rows = [["images", report.num_images], ["annotations", report.num_annotations],
            ["categories", report.num_categories]]
    rows += [[f"  {cls}", count] for cls, count in report.class_counts.items()]
    total = max(sum(report.size_histogram.values()), 1)
    rows += [[f"  {s} boxes", f"{report.size_histogram[s]} ({report.size_histogram[s] / total:.1%})"]
             for s in SIZE_NAMES]
    rows += [[f"  {size} images", n] for size, n in sorted(report.image_sizes.items(), key=lambda kv: -kv[1])[:3]]
    how = "pixels decoded" if report.decoded else "headers only, --no-decode"
    console.print(f"{name}: {report.ann_file}, images in {report.img_dir} ({how})",
                  markup=False, highlight=False, soft_wrap=True)
    console.print(table(f"{name}: {report.ann_file.name}", ["", "count"], rows))
    if report.issues:
        issue_rows = [[i.kind, i.severity, i.count, "\n".join(i.examples[:max_show])] for i in report.issues]
        issues = table(f"{name}: issues", ["kind", "severity", "count", "first examples"], issue_rows)
        issues.columns[3].justify = "left"
        console.print(issues)
    else:
        console.print(f"{name}: no issues")


def drop_hint(target: str, data: bool = False) -> str:
    """What to do about errors: fix them, or the exact command that trains without the flagged records."""
    import shlex

    if data or target.endswith(".json"):
        how = f"fltool train --data {shlex.quote(target)} --data-check drop"
    else:
        how = f"fltool train {shlex.quote(target)} --data-check drop"
    return f"fix the records listed, or train without them: {how}"


def _check_data(data: Path, data_format: Optional[DataFormat], val_fraction: Optional[float], decode: bool,
                progress: Callable[[int, int], None]) -> tuple:
    """--data: (the dataset as read, {split: report}) with the converted files in fltool's cache."""
    from fltool.data.check import check_coco
    from fltool.data.formats import resolve
    from fltool.data.synth import cache_root

    dataset = resolve(data, cache_root() / "data", data_format.value if data_format else None, val_fraction)
    reports = {split: check_coco(files.ann_file, files.img_dir, decode=decode, progress=progress)
               for split, files in (("train", dataset.train), ("val", dataset.val))}
    return dataset, reports


def _print_conversion(dataset: Any, max_show: int) -> None:
    from fltool.data.formats.common import issue_label

    console.print(f"data: {dataset.describe()}", markup=False, highlight=False, soft_wrap=True)
    if dataset.issues:
        rows = [[i.kind, i.severity, i.count, "\n".join(i.examples[:max_show])] for i in dataset.issues]
        t = table("reading the annotation files: issues (records left out of the COCO files)",
                  ["kind", "severity", "count", "first examples"], rows,
                  caption="; ".join(issue_label(i) for i in dataset.issues))
        t.columns[3].justify = "left"
        t.columns[0].overflow = t.columns[3].overflow = "fold"
        console.print(t)


@command(app, "check")
def check(
    target: Annotated[Optional[str], typer.Argument(help="A COCO annotation .json file, or a config (path or name) "
                                                         "whose train/val datasets to check.",
                                                    show_default=False)] = None,
    data: DataOpt = None,
    data_format: FormatOpt = None,
    val_fraction: ValFractionOpt = None,
    img_dir: Annotated[Optional[Path], typer.Option(
        "--img-dir", help="Image folder of an annotation file (default: images/ beside it if present, "
                          "else its folder).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON instead of tables.")] = False,
    max_show: Annotated[int, typer.Option("--max-show", min=0, help="Examples shown per issue.")] = 3,
    no_decode: Annotated[bool, typer.Option("--no-decode", help="Read image headers only (size, existence), "
                                            "do not decode pixels: faster, but misses truncated files.")] = False,
) -> None:
    """Check a COCO dataset: missing/corrupt images, size mismatches, bad boxes and ids, class counts, box sizes.
    With --data, any dataset fltool train --data reads (COCO, Pascal VOC, YOLO), as it will read it.
    Exits 1 when it finds errors (warnings are fine)."""
    from fltool.data.check import check_coco, check_config_datasets

    if (target is None) == (data is None):
        raise typer.BadParameter("give a TARGET (annotation .json or config) or --data PATH")
    if data is not None:
        if img_dir is not None:
            raise ConfigError("--img-dir applies to an annotation .json TARGET", "--data finds the images itself")
        with _progress_bar("checking images") as progress:
            dataset, reports = _check_data(data, data_format, val_fraction, not no_decode, progress)
        if as_json:
            typer.echo(json.dumps({"dataset": dataset.to_dict(),
                                   **{name: r.to_dict() for name, r in reports.items()}}, indent=2))
        else:
            _print_conversion(dataset, max_show)
            for name, report in reports.items():
                _print_report(name, report, max_show)
        failed = [r.summary() for r in reports.values() if not r.ok]
        if dataset.errors:
            failed.insert(0, f"{data}: {dataset.errors_summary()} while reading the annotation files")
        if failed:
            raise DataError("; ".join(failed), drop_hint(str(data), data=True))
        return
    with _progress_bar("checking images") as progress:
        if target.endswith(".json"):
            reports = {"dataset": check_coco(Path(target), img_dir, decode=not no_decode, progress=progress)}
        else:
            if img_dir is not None:
                raise ConfigError("--img-dir applies to an annotation .json file",
                                  "a config names its image folders itself (data_root, data_prefix)")
            from fltool.engine.config import load_config
            from fltool.engine.runner import resolve_embedded_dataset

            cfg = load_config(target)
            # The embedded dataset's placeholder root becomes its cached folder (generated on first use).
            resolve_embedded_dataset(cfg, progress=lambda event: progress(event.iteration, event.max_iters))
            reports = check_config_datasets(cfg, decode=not no_decode,
                                            progress=lambda name, done, total: progress(done, total))
    if as_json:
        payload = next(iter(reports.values())).to_dict() if target.endswith(".json") else \
            {name: r.to_dict() for name, r in reports.items()}
        typer.echo(json.dumps(payload, indent=2))
    else:
        for name, report in reports.items():
            _print_report(name, report, max_show)
    failed = [r for r in reports.values() if not r.ok]
    if failed:
        raise DataError("; ".join(r.summary() for r in failed), drop_hint(target))
