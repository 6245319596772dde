"""scripts/reproduction_tables.py: REPRODUCTION.md's tables are the sweeps' results.json numbers, and a sweep not run
yet shows as 'not run' rather than as a number."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduction_tables.py"


def _point(settings: dict, aps: list[float]) -> dict:
    import statistics

    runs = [{"seed": i, "metrics": {"AP": ap, "AP50": ap + 0.1, "AP75": ap - 0.1}} for i, ap in enumerate(aps)]
    mean = {k: statistics.fmean(r["metrics"][k] for r in runs) for k in ("AP", "AP50", "AP75")}
    std = {k: statistics.stdev(r["metrics"][k] for r in runs) for k in ("AP", "AP50", "AP75")}
    return {"settings": settings, "n": len(runs), "mean": mean, "std": std, "runs": runs}


def _write(runs: Path, name: str, points: list[dict], max_iters=300) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "results.json").write_text(json.dumps({"seeds": [0, 1], "max_iters": max_iters,
                                                           "points": points}))


def test_tables_show_the_results_files_numbers_and_mark_missing_sweeps(tmp_path):
    runs = tmp_path / "runs"
    _write(runs, "synth_grid", [_point({"loss.gamma": 2, "loss.alpha": 0.25}, [0.30, 0.40]),
                                _point({"loss.gamma": 2, "loss.alpha": 0.5}, [0.50, 0.52]),
                                _point({"loss.gamma": 0, "loss.alpha": 0.75}, [0.2, 0.2])])
    _write(runs, "bccd_losses", [_point({"loss": "FL*"}, [0.41, 0.45])], max_iters=500)
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs)], capture_output=True, text=True,
                         check=True).stdout

    gamma2 = next(line for line in out.splitlines() if line.startswith("| 2 |"))
    assert gamma2.split(" | ")[1:4] == ["35.0 ± 7.1", "51.0 ± 1.4", "not run"]
    assert "alpha 0.5" in gamma2  # the best alpha here is read from the numbers, not assumed
    flstar = next(line for line in out.splitlines() if line.startswith("| FL*, gamma 2, beta 1 |") and "43.0" in line)
    assert "43.0 ± 2.8" in flstar and "41.0, 45.0" in flstar  # mean ± std (ddof 1) and each seed
    assert "BCCD: 500 iterations, seeds 0, 1" in out
    ce_01 = next(line for line in out.splitlines() if line.startswith("| 0.1 |"))
    assert ce_01.count("not run") == 3  # synth_ce_alpha was never run
    assert "(loss-cdf not run)" in out and "Full schedule: embedded dataset, - iterations" in out


# ---------------------------------------------------------------------------------------------- the regime part

def _regime_point(index: int, loss: str, aps: list[float], runs_dir: Path, history=None) -> dict:
    point = _point({"loss": loss}, aps) if len(aps) > 1 else {
        "settings": {"loss": loss}, "n": 1, "mean": {"AP": aps[0], "AP50": aps[0], "AP75": aps[0]},
        "std": {"AP": None}, "runs": [{"seed": 0, "metrics": {"AP": aps[0], "AP50": aps[0], "AP75": aps[0]}}]}
    point["index"] = index
    for run in point["runs"]:
        work_dir = runs_dir / f"p{index}" / f"seed{run['seed']}"
        run["work_dir"] = str(work_dir)
        if history:  # MMEngine's scalars.json: training lines, then an evaluation line after its iteration
            lines = []
            for iteration, ap in history:
                lines += [json.dumps({"loss": 1.0, "iter": iteration, "step": iteration}),
                          json.dumps({"coco/bbox_mAP": ap + 0.01 * run["seed"], "step": 0})]
            (work_dir / "20260101_000000" / "vis_data").mkdir(parents=True)
            (work_dir / "20260101_000000" / "vis_data" / "scalars.json").write_text("\n".join(lines) + "\n")
    return point


def _write_regime(runs: Path, name: str, points: list[dict], max_iters: int = 1600) -> Path:
    folder = runs / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"seeds": [0, 1, 2], "max_iters": max_iters, "points": points,
                                                     "sweep_command": f"fltool sweep X --work-dir {folder}"}))
    return folder


def test_pick_best_prints_the_best_seed_zero_point_of_each_group_and_refuses_what_it_cannot_decide(tmp_path):
    folder = _write_regime(tmp_path, "sparse_1600", [
        _regime_point(0, "CE-a0.5", [0.20], tmp_path), _regime_point(1, "CE-a0.75", [0.25, 0.10, 0.10], tmp_path),
        _regime_point(2, "FL", [0.30], tmp_path), _regime_point(3, "OHEM-b128", [0.10], tmp_path)])

    def pick(*groups):
        return subprocess.run([sys.executable, str(SCRIPT), "--pick-best", str(folder), *groups],
                              capture_output=True, text=True)

    # by seed 0 alone (CE-a0.75's later seeds do not count); a preset's spelling is canonicalised; no repeats
    assert pick("CE-a0.5,CE-a0.75", "fl", "FL").stdout.split() == ["1", "2"]
    missing = pick("CE-a0.5,CE-a0.9")
    assert missing.returncode != 0 and "no point CE-a0.9" in missing.stderr


def test_regime_tables_give_mean_std_seeds_commands_differences_and_the_convergence_check(tmp_path):
    history = [(400, 0.10), (800, 0.20), (1200, 0.28), (1600, 0.30)]
    _write_regime(tmp_path, "sparse_1600", [
        _regime_point(0, "CE-a0.5", [0.20, 0.22, 0.24], tmp_path, history),
        _regime_point(1, "CE-a0.75", [0.10], tmp_path),
        _regime_point(2, "FL", [0.30, 0.32, 0.34], tmp_path, history)])
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(tmp_path), "--iters", "1600"],
                         capture_output=True, text=True, check=True).stdout
    ce = next(line for line in out.splitlines() if line.startswith("| CE, best alpha (CE-a0.5) |"))
    assert "22.0 ± 2.0" in ce and "20.0, 22.0, 24.0 (0, 1, 2)" in ce and "[1]" in ce
    assert f"[1] `fltool sweep X --work-dir {tmp_path / 'sparse_1600'} --point 0`" in out
    # FL - best CE: +10.0 AP, standard error sqrt(2 * 0.02^2 / 3) = 1.6, ratio 6.1
    assert "| sparse: FL (gamma 2) - best CE | +10.0 | 1.6 | 6.1 |" in out
    assert "| sparse: FL (gamma 2) - best OHEM | needs 2+ seeds of both |" in out
    # convergence: mean over seeds 0.30, 0.31, 0.32 at the end; +2 AP over the last interval, seed std 1.0
    fl = next(line for line in out.splitlines() if line.startswith("| FL, gamma 2, alpha 0.25 |") and "400:" in line)
    assert "400: 11.0, 800: 21.0, 1200: 29.0, 1600: 31.0" in fl and "| +2.0 | 2.0 | no |" in fl
    assert "| CE, best alpha | CE-a0.75 | 10.0 |  |" in out  # the selection table: seed 0 of every candidate


def test_table_1e_has_a_row_per_scale_and_backend_with_its_speed_relative_to_fltool(tmp_path):
    """bench speed-accuracy with --backend pytorch,mmdet,onnxruntime: each backend's row, named, with ms and the
    ratio to fltool's eager path at the same scale (not three unnamed rows per scale)."""
    runs = tmp_path / "runs"
    (runs / "speed_accuracy").mkdir(parents=True)
    points = [{"scale": 256, "backend": b, "AP": 0.8, "AP50": 0.9, "median_ms": ms, "p90_ms": ms + 1,
               "flops": 6.9e8} for b, ms in (("onnxruntime", 10.0), ("pytorch", 16.0), ("mmdet", 20.0))]
    (runs / "speed_accuracy" / "results.json").write_text(json.dumps({
        "environment": {"device": "cpu", "device_name": "AMD EPYC", "threads": 1},
        "settings": {"num_images": 50}, "points": points}))
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs)], capture_output=True, text=True,
                         check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| 256 |")]
    assert [r.split(" | ")[1] for r in rows] == ["fltool (PyTorch, channels-last)", "stock MMDetection", "ONNX Runtime"]
    assert [r.split(" | ")[6] for r in rows] == ["1.00x", "0.80x", "1.60x"]


def test_longer_runs_keep_the_points_chosen_at_the_shorter_length_and_say_where_ap_stops_rising(tmp_path):
    _write_regime(tmp_path, "sparse_1600", [
        _regime_point(0, "CE-a0.5", [0.20, 0.22, 0.24], tmp_path), _regime_point(1, "CE-a0.75", [0.10], tmp_path),
        _regime_point(2, "FL", [0.30, 0.32, 0.34], tmp_path)])
    # at 3200 CE-a0.75 happens to do better than the chosen CE-a0.5: the row must still be CE-a0.5's
    _write_regime(tmp_path, "sparse_3200", [
        _regime_point(0, "CE-a0.5", [0.21, 0.23, 0.25], tmp_path / "l"),
        _regime_point(1, "CE-a0.75", [0.50, 0.50, 0.52], tmp_path / "l"),
        _regime_point(2, "FL", [0.40, 0.42, 0.44], tmp_path / "l")], max_iters=3200)
    _write_regime(tmp_path, "sparse_6400", [
        _regime_point(0, "CE-a0.5", [0.30, 0.32, 0.34], tmp_path / "m"),
        _regime_point(2, "FL", [0.41, 0.43, 0.45], tmp_path / "m")], max_iters=6400)

    def tables(*args):
        return subprocess.run([sys.executable, str(SCRIPT), "--runs", str(tmp_path), "--iters", "1600", *args],
                              capture_output=True, text=True, check=True).stdout

    # default lengths: those the folder holds above --iters (3200, 6400); reproduce.sh passes its LONG_ITERS
    (tmp_path / "sparse_loss_cdf_12800").mkdir()  # an analysis folder, not a sweep length
    out = tables()
    assert "### Sparse set: 6400 iterations" in out and "12800" not in out and "Differences at 1600" not in out
    out = tables("--long-iters", "3200 6400 12800")  # as reproduce.sh passes its default: 12800 not run yet
    assert "### Sparse set: 3200 iterations, seeds 0, 1, 2 (the points chosen at 1600)" in out
    longer = out.split("### Sparse set: 3200 iterations")[1].split("###")[0]
    assert "| CE, best alpha (CE-a0.5) | 23.0 ± 2.0 |" in longer and "50.7" not in longer
    assert "| sparse: FL (gamma 2) - best CE | +19.0 | 1.6 | 11.6 |" in out.split("### Differences at 3200")[1]
    assert "| sparse: FL (gamma 2) - best CE | +11.0 | 1.6 | 6.7 |" in out.split("### Differences at 6400")[1]
    assert "### Differences at 12800 iterations" in out
    schedule = out.split("### Schedule length: sparse set, 1600, 3200, 6400, 12800 iterations")[1].split("###")[0]
    # each step's change with its standard error; AP stops rising after the last step that rose by > 2 SE:
    # CE rose only at the second doubling (+1.0, then +9.0), so it has not stopped by 6400; FL stopped at 3200
    assert ("| CE, best alpha (CE-a0.5) | 22.0 ± 2.0 | 23.0 ± 2.0 | 32.0 ± 2.0 | not run | +1.0 (1.6, 0.6) "
            "| +9.0 (1.6, 5.5) | needs 2+ seeds of both "
            "| not by 6400 (still rising); 12800 needs 2+ seeds |") in schedule
    assert ("| FL, gamma 2, alpha 0.25 | 32.0 ± 2.0 | 42.0 ± 2.0 | 43.0 ± 2.0 | not run | +10.0 (1.6, 6.1) "
            "| +1.0 (1.6, 0.6) | needs 2+ seeds of both | 3200; 12800 needs 2+ seeds |") in schedule
    assert ("| OHEM 1:3, B = 128 | not run | not run | not run | not run | needs 2+ seeds of both "
            "| needs 2+ seeds of both | needs 2+ seeds of both | n/a |") in schedule
    # --long-iters as reproduce.sh passes it: one length (here 3200 alone), or one absent from the runs folder
    one = tables("--long-iters", "3200").split("### Schedule length: sparse set, 1600, 3200 iterations")[1]
    assert "| FL, gamma 2, alpha 0.25 | 32.0 ± 2.0 | 42.0 ± 2.0 | +10.0 (1.6, 6.1) | not by 3200 (still rising) |" \
        in one
    other = tables("--long-iters", "2400", "3200")
    assert "| FL, gamma 2, alpha 0.25 | 32.0 ± 2.0 | not run | 42.0 ± 2.0 | needs 2+ seeds of both |" in other
    # a length still running: the verdict covers the lengths before it, and says which one is missing
    partial = tables("--long-iters", "3200", "9600")
    assert "| +10.0 (1.6, 6.1) | needs 2+ seeds of both | not by 3200 (still rising); 9600 needs 2+ seeds |" in partial


def test_the_choice_recorded_beside_the_longer_runs_names_their_rows_when_the_sweep_it_was_made_on_is_gone(tmp_path):
    short = _write_regime(tmp_path, "sparse_1600", [
        _regime_point(0, "CE-a0.5", [0.20], tmp_path), _regime_point(1, "CE-a0.75", [0.25], tmp_path),
        _regime_point(2, "FL-g1-a0.25", [0.35], tmp_path), _regime_point(3, "FL", [0.30], tmp_path),
        _regime_point(4, "FL-g0.5-a0.25", [0.10], tmp_path), _regime_point(5, "CE-a0.9", [0.05], tmp_path)])
    _write_regime(tmp_path, "sparse_3200", [
        _regime_point(1, "CE-a0.75", [0.40, 0.42, 0.44], tmp_path / "l"),
        _regime_point(2, "FL-g1-a0.25", [0.50, 0.52, 0.54], tmp_path / "l"),
        _regime_point(3, "FL", [0.45, 0.47, 0.49], tmp_path / "l")], max_iters=3200)
    record = tmp_path / "sparse_3200" / "chosen.json"
    picked = subprocess.run([sys.executable, str(SCRIPT), "--pick-best", str(short), "CE-a0.5,CE-a0.75,CE-a0.9", "FL",
                             "FL-g0.5-a0.25,FL-g1-a0.25,FL", "--record", str(record)],
                            capture_output=True, text=True, check=True)
    assert picked.stdout.split() == ["1", "3", "2"]
    saved = json.loads(record.read_text())
    assert saved["iters"] == "1600" and [g["chosen"] for g in saved["groups"]] == ["CE-a0.75", "FL", "FL-g1-a0.25"]
    assert saved["groups"][2]["seed0_AP"] == {"FL-g0.5-a0.25": 0.10, "FL-g1-a0.25": 0.35, "FL": 0.30}

    def tables() -> str:
        return subprocess.run([sys.executable, str(SCRIPT), "--runs", str(tmp_path), "--iters", "1600",
                               "--long-iters", "3200"], capture_output=True, text=True, check=True).stdout

    def longer() -> str:
        return tables().split("### Sparse set: 3200 iterations")[1].split("###")[0]

    with_short = longer()
    (short / "results.json").unlink()  # the machine that held the choice sweep is gone
    without = longer()
    # the schedule table names the row by the longer length's record (1600 is gone)
    assert "| CE, best alpha (CE-a0.75) | not run | 42.0 ± 2.0 |" in tables().split("### Schedule length: sparse")[1]
    for out in (with_short, without):
        assert "| CE, best alpha (CE-a0.75) | 42.0 ± 2.0 |" in out
        assert "| FL, best gamma (FL-g1-a0.25) | 52.0 ± 2.0 |" in out
        assert "| FL, gamma 2, alpha 0.25 | 47.0 ± 2.0 |" in out
    # without a record the rows need the choice sweep
    record.unlink()
    assert "| CE, best alpha (-) | not run |" in longer()


def test_without_iters_the_tables_take_the_length_the_longer_runs_record_their_choice_at(tmp_path):
    """The choice length is reproduce.sh's ITERS alone: called without --iters the tables read it from the longer
    runs' chosen.json (the archive keeps no choice sweep), else from the shortest sweep folder present."""
    def tables(runs: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs), *args], capture_output=True, text=True)

    empty = tables(tmp_path / "none")
    assert empty.returncode == 0 and "no sparse_N or dense_N sweep in" in empty.stdout

    points = [_regime_point(0, "CE-a0.5", [0.40, 0.42, 0.44], tmp_path / "l"),
              _regime_point(2, "FL", [0.50, 0.52, 0.54], tmp_path / "l")]
    _write_regime(tmp_path, "sparse_6400", points, max_iters=6400)
    _write_regime(tmp_path, "sparse_3200", points, max_iters=3200)
    # no record: the shortest folder is the choice length, the others its longer runs
    out = tables(tmp_path).stdout
    assert "### Sparse set: 3200 iterations, seeds 0, 1, 2\n" in out
    assert "(the points chosen at 3200)" in out and "### Differences at 6400 iterations" in out
    # the record says the points were chosen at 1600 (that sweep is gone): both folders are longer runs
    choice = {"chosen_on": "gone/sparse_1600", "iters": "1600",
              "groups": [{"group": ["CE-a0.5", "CE-a0.75", "CE-a0.9"], "chosen": "CE-a0.5", "seed0_AP": {}},
                         {"group": ["FL"], "chosen": "FL", "seed0_AP": {}}]}
    for name in ("sparse_3200", "sparse_6400"):
        (tmp_path / name / "chosen.json").write_text(json.dumps(choice))
    out = tables(tmp_path).stdout
    assert "### Sparse set: 3200 iterations, seeds 0, 1, 2 (the points chosen at 1600)" in out
    assert "### Schedule length: sparse set, 1600, 3200, 6400 iterations" in out
    assert "| CE, best alpha (CE-a0.5) | not run | 42.0 ± 2.0 | 42.0 ± 2.0 |" in out.split("### Schedule length")[1]
    # records that disagree: no guess
    (tmp_path / "sparse_6400" / "chosen.json").write_text(json.dumps({**choice, "iters": "800"}))
    clash = tables(tmp_path)
    assert clash.returncode != 0 and "different lengths (800, 1600): pass --iters" in clash.stderr
    assert "chosen at 1600" in tables(tmp_path, "--iters", "1600").stdout


# ---------------------------------------------------------------------------------------------- the runs archive

ARCHIVE = SCRIPT.parent / "archive_runs.py"


def test_the_archive_keeps_what_the_tables_read_without_checkpoints_and_gives_the_same_tables(tmp_path):
    """archive_runs.py copies a runs folder's JSON/CSV record (not checkpoints or logs), trims scalars.json to the
    evaluations and a sparse loss curve, cuts the project root from paths, and the tables read the archive as they
    read the runs folder, the convergence check included (its runs found inside the moved sweep folder)."""
    runs = tmp_path / "work_dirs" / "repro"
    sweep = runs / "sparse_1600"
    history = [(400, 0.10), (800, 0.20), (1200, 0.28), (1600, 0.30)]
    _write_regime(runs, "sparse_1600", [_regime_point(0, "CE-a0.5", [0.20, 0.22, 0.24], sweep, history),
                                        _regime_point(2, "FL", [0.30, 0.32, 0.34], sweep, history)])
    run = sweep / "extra" / "seed0"  # a run with a checkpoint and a full scalars.json
    (run / "20260101_000000" / "vis_data").mkdir(parents=True)
    (run / "iter_1600.pth").write_bytes(b"\0" * 2048)
    (run / "metrics.json").write_text(json.dumps({"bbox": {"AP": 0.30}, "iteration": 1600}))
    scalars = run / "20260101_000000" / "vis_data" / "scalars.json"
    train_lines = [json.dumps({"loss": 1.0 / i, "iter": i, "step": i}) for i in range(20, 1620, 20)]
    evals = {400: json.dumps({"coco/bbox_mAP": 0.1, "step": 400}), 1600: json.dumps({"coco/bbox_mAP": 0.3, "step": 0})}
    scalars.write_text("".join(line + "\n" + (evals[20 * (k + 1)] + "\n" if 20 * (k + 1) in evals else "")
                               for k, line in enumerate(train_lines)) + "not json\n")

    going = sweep / "p2" / "seed3"  # a run still training: not archived until its metrics.json exists
    (going / "20260101_000000" / "vis_data").mkdir(parents=True)
    (going / "run.json").write_text("{}")
    (going / "20260101_000000" / "vis_data" / "scalars.json").write_text(train_lines[0] + "\n")

    def tables(folder: Path) -> str:
        return subprocess.run([sys.executable, str(SCRIPT), "--runs", str(folder), "--iters", "1600"],
                              capture_output=True, text=True, check=True).stdout

    before = tables(runs)
    out = subprocess.run([sys.executable, str(ARCHIVE), "--runs", "work_dirs/repro", "--to", "docs/runs",
                          "--loss-every", "400"], cwd=tmp_path, capture_output=True, text=True, check=True)
    archived = tmp_path / "docs" / "runs"
    assert "file(s) written" in out.stdout
    assert not list(archived.rglob("*.pth")) and not (archived / "sparse_1600" / "p2" / "seed3").exists()
    assert (archived / "sparse_1600" / "extra" / "seed0" / "metrics.json").is_file()
    kept = [json.loads(line) for line in (archived / scalars.relative_to(runs)).read_text().splitlines()]
    # iterations 400, 800, 1200, 1600 (every 400th), each evaluation after the training line of its iteration
    assert [row.get("iter", "eval") for row in kept] == [400, "eval", 800, 1200, 1600, "eval"]
    results = (archived / "sparse_1600" / "results.json").read_text()
    assert str(tmp_path) not in results and "work_dirs/repro/sparse_1600/p0/seed0" in results

    import shutil
    shutil.rmtree(tmp_path / "work_dirs")  # the machine is gone: only the archive is left
    after = tables(archived)
    convergence = "| FL, gamma 2, alpha 0.25 | 400: 11.0, 800: 21.0, 1200: 29.0, 1600: 31.0 | +2.0 | 2.0 | no |"
    assert convergence in before and convergence in after
    assert "22.0 ± 2.0" in after
    # run again: nothing changed, nothing written
    again = subprocess.run([sys.executable, str(ARCHIVE), "--runs", "docs/runs", "--to", "docs/runs"], cwd=tmp_path,
                           capture_output=True, text=True, check=True)
    assert "0 file(s) written" in again.stdout


def _error_run(folder: Path, ap: float, loc50: float, loc75: float, analysed: bool = True) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"bbox": {"AP": ap, "AP50": 0.99, "AP75": ap + 0.05,
                                                              "APs": ap - 0.02, "APm": ap + 0.02}}))
    if not analysed:
        return
    (folder / "analysis").mkdir()
    for stem, name, loc in (("errors", "AP50", loc50), ("errors_iou75", "AP75", loc75)):
        dap = {"Cls": 0.0, "Loc": loc, "Both": 0.0, "Dupe": 0.001, "Bkg": 0.002, "Miss": 0.003, "FalsePos": 0.004,
               "FalseNeg": 0.005}
        per_iou = {f"{0.5 + 0.05 * i:.2f}": round(0.99 - i * loc, 6) for i in range(10)}  # falls with IoU
        (folder / "analysis" / f"{stem}.json").write_text(json.dumps(
            {name: 0.9, "dAP": dap, "counts": {"Cls": 0, "Loc": 7, "Both": 0, "Dupe": 1, "Bkg": 2, "Miss": 3},
             "AP_per_IoU": per_iou}))


def test_the_error_breakdown_tables_put_fl_first_average_seeds_and_give_the_other_losses_minus_fl(tmp_path):
    runs = tmp_path / "runs"
    _error_run(runs / "errors_sparse_9600" / "loss=CE-a0.75" / "seed0", 0.88, 0.004, 0.030)
    _error_run(runs / "errors_sparse_9600" / "loss=FL" / "seed0", 0.90, 0.002, 0.010)
    _error_run(runs / "errors_sparse_9600" / "loss=FL" / "seed1", 0.92, 0.004, 0.012)
    _error_run(runs / "errors_sparse_9600" / "loss=OHEM-b128-nms0.7" / "seed0", 0.91, 0.0, 0.0, analysed=False)
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs)], capture_output=True, text=True,
                         check=True).stdout
    section = out[out.index("### Error breakdown: sparse set, 9600 iterations, foreground IoU 0.5"):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1].startswith("| FL (0, 1) | 90.0 | 0.0 (0) | 0.3 (7) |")  # mean of the two seeds' dAP50 Loc
    assert rows[2].startswith("| CE-a0.75 (0) | 90.0 |") and "0.4 (7)" in rows[2]
    assert rows[3].startswith("| OHEM-b128-nms0.7 (0) | not analysed |")
    diff = next(line for line in section.splitlines() if line.startswith("| FL - CE-a0.75 |"))
    # AP: FL 91.0 against CE 88.0; dAP75 Loc: CE 3.0 against FL's 1.1 -> +1.9
    assert diff.split(" | ")[1] == "+3.0" and diff.split(" | ")[9] == "+1.9"
    # AP at each IoU: FL's two seeds (Loc 0.002, 0.004 per step: mean 0.003) against CE's 0.004; at 0.95 (step 9):
    # FL 0.99 - 9 * 0.003 = 96.3, CE 0.99 - 9 * 0.004 = 95.4 -> +0.9
    iou = out[out.index("AP at each IoU threshold"):].splitlines()
    assert next(line for line in iou if line.startswith("| FL |")).split(" | ")[-1] == "96.3 |"
    assert next(line for line in iou if line.startswith("| FL - CE-a0.75 |")).split(" | ")[-1] == "+0.9 |"
    assert "strict foreground IoU" not in out  # no run was analysed at --iou 0.9 / 0.95: no such table


def test_the_strict_iou_table_sets_each_loss_s_ap_there_beside_its_localisation_loss(tmp_path):
    """`analyze errors --iou 0.9` beside the others: AP90 and dAP90 Loc per loss, and FL minus CE: AP as FL's minus
    the other's, a dAP as the other's minus FL's (positive: FL loses less to it)."""
    runs = tmp_path / "runs"
    for loss, ap90, loc90 in (("FL", 0.80, 0.15), ("CE-a0.75", 0.74, 0.21)):
        folder = runs / "errors_sparse_9600" / f"loss={loss}" / "seed0"
        _error_run(folder, 0.9, 0.002, 0.01)
        (folder / "analysis" / "errors_iou90.json").write_text(json.dumps(
            {"AP90": ap90, "dAP": {"Cls": 0.0, "Loc": loc90, "Both": 0.0, "Dupe": 0.0, "Bkg": 0.0, "Miss": 0.0,
                                   "FalsePos": 0.01, "FalseNeg": 0.05},
             "counts": {"Cls": 0, "Loc": 30, "Both": 0, "Dupe": 0, "Bkg": 0, "Miss": 0}}))
    out = subprocess.run([sys.executable, str(SCRIPT), "--runs", str(runs)], capture_output=True, text=True,
                         check=True).stdout
    section = out[out.index("strict foreground IoU"):].splitlines()
    assert section[2] == "| loss (seeds) | AP90 | dAP90 Loc | dAP90 FalsePos | dAP90 FalseNeg |"  # no 0.95: no column
    assert next(line for line in section if line.startswith("| FL (0) |")) == "| FL (0) | 80.0 | 15.0 | 1.0 | 5.0 |"
    assert next(line for line in section if line.startswith("| FL - CE-a0.75 |")) == \
        "| FL - CE-a0.75 | +6.0 | +6.0 | +0.0 | +0.0 |"
