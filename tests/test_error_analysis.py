"""fltool analyze errors / analyze pr, predict --score-thr auto, export's thresholds and fltool compare.

A hand-built case (six ground-truth boxes, eight detections, one error of each TIDE type) pins the definitions:
each error's type and count, each dAP against AP computed by a reference written here from COCO's definition, the
PR points and the F1-optimal threshold against a direct count, and the confusion matrix against a hand count. A
trained model (``learned_run``, copied so that the shared run is left as it was) checks the whole path: the
breakdown accounts for all of the AP lost, the PR area is COCO's AP50, the thresholds reach predict and export.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fltool.analysis.confusion import confusion
from fltool.analysis.errors import ERROR_TYPES, classify_false_positive, error_breakdown, find_errors
from fltool.analysis.matching import class_records, overall_metrics, run_cocoeval
from fltool.analysis.pr import curve_area, f1_optimal, pr_analysis, pr_points, threshold_curve
from fltool.cli.main import app
from fltool.errors import ConfigError

runner = CliRunner()
A, B = 1, 2  # category ids of the hand-built case


def _gt() -> dict:
    """Class A: a1, a2 (image 1), a3 (image 2), a4 (image 3); class B: b1 (image 2), b2 (image 3). 10 x 10 px."""
    boxes = [(1, 1, A, [0, 0, 10, 10]), (2, 1, A, [50, 50, 10, 10]), (3, 2, A, [0, 0, 10, 10]),
             (4, 2, B, [50, 50, 10, 10]), (5, 3, B, [0, 0, 10, 10]), (6, 3, A, [50, 50, 10, 10])]
    return {"images": [{"id": i, "file_name": f"img{i}.png", "width": 200, "height": 200} for i in (1, 2, 3)],
            "categories": [{"id": A, "name": "A"}, {"id": B, "name": "B"}],
            "annotations": [{"id": i, "image_id": img, "category_id": c, "bbox": b, "area": 100.0, "iscrowd": 0}
                            for i, img, c, b in boxes]}


#: (name, class, score, image, box) and the error each one is by TIDE's definitions.
DETECTIONS = [
    ("d6", A, 0.95, 2, [50, 55, 10, 10]),  # Both: IoU 1/3 with b1 (other class), nothing of its own class
    ("d1", A, 0.90, 1, [0, 0, 10, 10]),    # true positive: a1
    ("d2", A, 0.80, 1, [0, 0, 10, 10]),    # Dupe: a1 again
    ("d3", A, 0.70, 1, [55, 50, 10, 10]),  # Loc: IoU 1/3 with a2 (its class, not matched)
    ("d4", B, 0.60, 2, [0, 0, 10, 10]),    # Cls: IoU 1 with a3 (other class)
    ("d5", B, 0.50, 3, [100, 100, 10, 10]),  # Bkg: overlaps nothing
    ("d7", B, 0.30, 3, [0, 0, 10, 10]),    # true positive: b2
    ("d8", A, 0.20, 3, [50, 50, 10, 10]),  # true positive: a4
]  # and b1 is missed: nothing matches it, no Cls/Loc error points at it


def _dets() -> list:
    return [{"image_id": img, "category_id": c, "bbox": b, "score": s} for _, c, s, img, b in DETECTIONS]


def reference_ap(hits: list, n_gt: int) -> float:
    """COCO's AP of a score-ordered list, written out from its definition: precision made non-increasing from the
    right, then read at the 101 recall thresholds (the first point reaching each), averaged."""
    tp = fp = 0
    precision, recall = [], []
    for hit in hits:
        tp, fp = tp + hit, fp + (not hit)
        precision.append(tp / (tp + fp))
        recall.append(tp / n_gt)
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    total = 0.0
    for r in np.linspace(0.0, 1.0, 101):
        reached = [i for i, x in enumerate(recall) if x >= r]
        total += precision[reached[0]] if reached else 0.0
    return total / 101


def _mean_ap(a: tuple, b: tuple) -> float:
    return (reference_ap(*a) + reference_ap(*b)) / 2


T, F = True, False
BASE_A, BASE_B = ([F, T, F, F, T], 4), ([F, F, T], 2)
#: Each oracle applied by hand to the two classes' score-ordered lists (TIDE's fixes).
FIXED = {"Cls": (([F, T, F, F, T, T], 4), ([F, T], 2)),  # d4 becomes A's true positive at 0.6
         "Loc": (([F, T, F, T, T], 4), BASE_B),           # d3 becomes a true positive
         "Both": (([T, F, F, T], 4), BASE_B),             # d6 suppressed
         "Dupe": (([F, T, F, T], 4), BASE_B),             # d2 suppressed
         "Bkg": (BASE_A, ([F, T], 2)),                    # d5 suppressed
         "Miss": (BASE_A, ([F, F, T], 1)),                # b1 out of B's count
         "FalsePos": (([T, T], 4), ([T], 2)),             # every false positive removed
         "FalseNeg": (([F, T, F, F, T], 2), ([F, F, T], 1))}  # every unmatched box out of the count


# ----------------------------------------------------------------------------------------------------------------
# The definitions, on the hand-built case
# ----------------------------------------------------------------------------------------------------------------
def test_each_tide_error_type_is_found_where_the_definitions_put_it():
    gt, dets = _gt(), _dets()
    records = class_records(run_cocoeval(gt, dets, [A, B]), 0.5)
    errors = find_errors(records, dets, gt, [A, B])
    found = {(DETECTIONS[e.det][0] if e.det >= 0 else f"box{e.gt}"): e.kind for e in errors}
    assert found == {"d6": "Both", "d2": "Dupe", "d3": "Loc", "d4": "Cls", "d5": "Bkg", "box4": "Miss"}
    fixers = {DETECTIONS[e.det][0]: e.gt for e in errors if e.fixes}
    assert fixers == {"d3": 2, "d4": 3}  # Loc -> a2, Cls -> a3: the boxes their oracles turn them into
    # the order of TIDE's tests decides: IoU exactly 0.5 with its own class is still Loc, 0.1 to anything is Bkg
    cats, used = np.array([A, B]), np.array([False, False])
    assert classify_false_positive(A, np.array([0.5, 0.9]), cats, used) == ("Loc", 0)
    assert classify_false_positive(A, np.array([0.0, 0.5]), cats, used) == ("Cls", 1)
    assert classify_false_positive(A, np.array([0.1, 0.0]), cats, used) == ("Loc", 0)
    assert classify_false_positive(A, np.array([0.0, 0.1]), cats, used) == ("Bkg", -1)
    assert classify_false_positive(A, np.array([0.0, 0.3]), cats, used) == ("Both", -1)
    assert classify_false_positive(A, np.array([0.8, 0.0]), cats, np.array([True, False])) == ("Dupe", 0)


def test_each_error_types_count_and_dap_are_what_the_definitions_give():
    b = error_breakdown(_gt(), _dets(), [A, B], ["A", "B"])
    assert b.counts == dict.fromkeys(ERROR_TYPES, 1)
    assert b.per_class[A]["counts"] == {"Cls": 0, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 0, "Miss": 0}
    assert b.per_class[B]["counts"] == {"Cls": 1, "Loc": 0, "Both": 0, "Dupe": 0, "Bkg": 1, "Miss": 1}
    base = _mean_ap(BASE_A, BASE_B)
    assert base == pytest.approx(40 / 202)  # A: (0.5 x 26 + 0.4 x 25) / 101; B: 51 x (1/3) / 101
    assert b.ap == pytest.approx(base, abs=1e-12)
    assert b.ap == pytest.approx(overall_metrics(run_cocoeval(_gt(), _dets(), [A, B]))["AP50"], abs=1e-12)
    for kind, (fixed_a, fixed_b) in FIXED.items():
        assert b.dap[kind] == pytest.approx(_mean_ap(fixed_a, fixed_b) - base, abs=1e-12), kind
        assert b.per_class[A]["dAP"][kind] == pytest.approx(reference_ap(*fixed_a) - reference_ap(*BASE_A)), kind
    assert b.dap["Loc"] > 0 and b.dap["Cls"] > 0 and b.dap["Dupe"] > 0 and b.dap["Miss"] > 0
    assert b.ap_all_fixed == pytest.approx(1.0)  # only true positives left, nothing unmatched


def test_at_a_stricter_foreground_iou_a_loose_box_is_a_localisation_error_of_that_ap():
    """--iou 0.75 (TIDE's pos_threshold): a box found at IoU 2/3 is a true positive of AP50 but a Loc error of AP75,
    whose oracle makes it a true positive again; the AP broken down is COCO's AP75."""
    gt = _gt()
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] == 1]  # a1, a2 of class A
    dets = [{"image_id": 1, "category_id": A, "bbox": [0, 0, 10, 10], "score": 0.9},    # a1 exactly
            {"image_id": 1, "category_id": A, "bbox": [52, 50, 10, 10], "score": 0.8}]  # a2 at IoU 80/120
    at50 = error_breakdown(gt, dets, [A, B], ["A", "B"])
    assert at50.counts == dict.fromkeys(ERROR_TYPES, 0) and at50.ap == pytest.approx(1.0)
    at75 = error_breakdown(gt, dets, [A, B], ["A", "B"], fg_iou=0.75)
    assert at75.ap_name == "AP75" and at75.counts == dict(dict.fromkeys(ERROR_TYPES, 0), Loc=1)
    assert at75.ap == pytest.approx(reference_ap([T, F], 2), abs=1e-12)
    assert at75.ap == pytest.approx(overall_metrics(run_cocoeval(gt, dets, [A, B]))["AP75"], abs=1e-12)
    assert at75.dap["Loc"] == pytest.approx(1.0 - reference_ap([T, F], 2), abs=1e-12)
    assert at75.ap_all_fixed == pytest.approx(1.0)
    record = at75.as_dict()
    assert record["iou_foreground"] == 0.75 and record["AP75"] == at75.ap and "AP50" not in record
    # AP at each COCO IoU: a2 (IoU 2/3) is found up to 0.65 and missed from 0.70; the ten average to COCO's AP
    per_iou = record["AP_per_IoU"]
    assert list(per_iou) == [f"{0.5 + 0.05 * i:.2f}" for i in range(10)]
    assert per_iou["0.65"] == pytest.approx(1.0) and per_iou["0.70"] == pytest.approx(reference_ap([T, F], 2))
    coco_ap = overall_metrics(run_cocoeval(gt, dets, [A, B]))["AP"]
    assert sum(per_iou.values()) / 10 == pytest.approx(coco_ap, abs=1e-12)
    with pytest.raises(ConfigError, match="--iou 0.77"):
        error_breakdown(gt, dets, [A, B], ["A", "B"], fg_iou=0.77)


def test_pr_points_and_the_f1_optimal_threshold_equal_a_direct_computation():
    analysis = pr_analysis(_gt(), _dets(), [A, B], ["A", "B"])
    curve_a = analysis.classes[0]
    assert curve_a.scores.tolist() == [0.95, 0.9, 0.8, 0.7, 0.2] and curve_a.tp50.tolist() == BASE_A[0]
    precision, recall = pr_points(curve_a.tp50, 4)
    assert precision == pytest.approx([0, 1 / 2, 1 / 3, 1 / 4, 2 / 5]) and recall == pytest.approx(
        [0, 0.25, 0.25, 0.25, 0.5])
    assert curve_area(curve_a.tp50, 4) == pytest.approx(0.25 * 0.5 + 0.25 * 0.4)  # under the envelope
    assert analysis.per_class_metrics["A"]["AP50"] == pytest.approx(23 / 101)
    # every threshold of the pooled list, counted directly: keep score >= t
    scores = [s for _, _, s, _, _ in DETECTIONS]
    hits = {"d1": T, "d7": T, "d8": T}
    best_f1, best_t = -1.0, None
    for t in sorted(set(scores), reverse=True):  # the highest threshold reaching the best F1
        kept = [name for name, _, s, _, _ in DETECTIONS if s >= t]
        tp = sum(hits.get(n, F) for n in kept)
        f1 = 2 * tp / (len(kept) + 6)  # 2 TP / (detections + ground truth)
        if f1 > best_f1:
            best_f1, best_t = f1, t
    assert analysis.overall.threshold == best_t == 0.2 and analysis.overall.f1 == pytest.approx(best_f1)
    assert analysis.chosen["A"].threshold == 0.2 and analysis.chosen["A"].f1 == pytest.approx(2 * 2 / (5 + 4))
    assert analysis.chosen["B"].threshold == 0.3 and analysis.chosen["B"].f1 == pytest.approx(2 * 1 / (3 + 2))
    ties = threshold_curve(np.array([0.9, 0.5, 0.5, 0.1]), np.array([T, F, T, F]), 3)
    assert ties["threshold"].tolist() == [0.9, 0.5, 0.1] and ties["true_positives"].tolist() == [1, 2, 2]
    assert ties["detections"].tolist() == [1, 3, 4]
    assert f1_optimal(np.array([0.4]), np.array([F]), 2) is None  # nothing ever matches: no threshold


def test_the_confusion_matrix_counts_equal_a_hand_count():
    everything = confusion(_gt(), _dets(), [A, B], ["A", "B"], [0.0, 0.0])
    # rows: ground truth A, B, background; columns: predicted A, B, background
    assert everything.matrix.tolist() == [[2, 1, 1],   # a1, a4 found; a3 taken for B (d4); a2 missed
                                          [0, 1, 1],   # b2 found; b1 missed
                                          [3, 1, 0]]   # d2, d3, d6 and d5 on background
    assert everything.labels == ["A", "B", "background"]
    assert everything.normalised[0].tolist() == pytest.approx([0.5, 0.25, 0.25])
    worst = everything.worst(3)
    assert [(o.image_id, o.false_positives, o.misses) for o in worst] == [(2, 2, 2), (1, 2, 1), (3, 1, 0)]
    at_half = confusion(_gt(), _dets(), [A, B], ["A", "B"], [0.5, 0.5])  # d7 and d8 dropped
    assert at_half.matrix.tolist() == [[1, 1, 2], [0, 0, 2], [3, 1, 0]]


# ----------------------------------------------------------------------------------------------------------------
# A trained model, through the CLI
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def own_run(learned_run, tmp_path_factory):
    """learned_run's checkpoint, config and records in a folder of this module's (analyses write into the run)."""
    src, run = Path(learned_run.work_dir), tmp_path_factory.mktemp("run") / "learned"
    run.mkdir()
    for path in [*src.glob("*.pth"), *src.glob("*.py"), src / "metrics.json"]:
        shutil.copy(path, run / path.name)
    for scalars in src.glob("*/vis_data/scalars.json"):
        (run / scalars.parent.parent.name / "vis_data").mkdir(parents=True)
        shutil.copy(scalars, run / scalars.parent.parent.name / "vis_data" / "scalars.json")
    return run


@pytest.fixture(scope="module")
def analysed(own_run):
    """``fltool analyze errors`` and ``analyze pr`` on the run, with their default output folder."""
    errors = runner.invoke(app, ["analyze", "errors", str(own_run)])
    assert errors.exit_code == 0, errors.output
    pr = runner.invoke(app, ["analyze", "pr", str(own_run)])
    assert pr.exit_code == 0, pr.output
    return errors, pr


def test_the_breakdown_of_a_trained_model_accounts_for_all_of_its_ap50(own_run, analysed):
    record = json.loads((own_run / "analysis" / "errors.json").read_text())
    trained = json.loads((own_run / "metrics.json").read_text())["bbox"]
    assert trained["AP50"] > 0.3  # the model learned: there is AP to break down
    assert record["AP50"] == pytest.approx(trained["AP50"], abs=0.0005)  # fltool eval's AP50 (3 decimals)
    assert record["AP50"] + (record["AP50_all_fixed"] - record["AP50"]) == pytest.approx(1.0, abs=1e-9)
    assert all(v is not None and v >= 0 for v in record["dAP"].values())
    assert record["dAP"]["FalsePos"] + record["AP50"] <= 1.0 + 1e-9
    assert sum(record["counts"].values()) > 0 and set(record["per_class"]) == {"circle", "square"}
    rows = (own_run / "analysis" / "errors.csv").read_text().splitlines()
    assert rows[0].startswith("class,AP50") and [r.split(",")[0] for r in rows[1:]] == ["all", "circle", "square"]
    detail = (own_run / "analysis" / "errors_detail.csv").read_text().splitlines()
    assert len(detail) - 1 == sum(record["counts"].values())
    assert (own_run / "analysis" / "errors.png").stat().st_size > 10_000
    assert "dAP50" in analysed[0].stdout and "all six fixed: AP50 1.000" in " ".join(analysed[0].stdout.split())


def test_analyze_errors_at_iou_075_breaks_down_ap75_beside_the_ap50_breakdown(own_run, analysed):
    strict = runner.invoke(app, ["analyze", "errors", str(own_run), "--iou", "0.75"])
    assert strict.exit_code == 0, strict.output
    record = json.loads((own_run / "analysis" / "errors_iou75.json").read_text())
    trained = json.loads((own_run / "metrics.json").read_text())["bbox"]
    assert record["iou_foreground"] == 0.75 and record["AP75"] == pytest.approx(trained["AP75"], abs=0.0005)
    assert record["AP75_all_fixed"] == pytest.approx(1.0, abs=1e-9)
    assert json.loads((own_run / "analysis" / "errors.json").read_text())["iou_foreground"] == 0.5  # kept
    assert (own_run / "analysis" / "errors_iou75.png").is_file() and "dAP75" in strict.stdout
    wrong = runner.invoke(app, ["analyze", "errors", str(own_run), "--iou", "0.72"])
    assert wrong.exit_code != 0 and "COCO's IoU thresholds" in wrong.output
    assert not (own_run / "analysis" / "errors_iou72.json").exists()


def test_the_pr_area_at_iou_05_is_cocos_ap50_and_the_thresholds_are_kept_in_the_run(own_run, analysed):
    record = json.loads((own_run / "analysis" / "pr.json").read_text())
    trained = json.loads((own_run / "metrics.json").read_text())["bbox"]
    overall = record["per_class"]["all"]
    assert overall["AP50"] == pytest.approx(trained["AP50"], abs=0.0005)
    assert overall["AP"] == pytest.approx(trained["AP"], abs=0.0005)
    assert overall["pr_area50"] == pytest.approx(overall["AP50"], abs=0.005)
    kept = json.loads((own_run / "thresholds.json").read_text())
    best = record["f1_optimal"]["overall"]
    assert kept["overall"] == best["threshold"] and kept["source"]["checkpoint"].endswith("iter_300.pth")
    assert set(kept["per_class"]) == {"circle", "square"}
    rows = [line.split(",") for line in (own_run / "analysis" / "f1_confidence.csv").read_text().splitlines()[1:]]
    pooled = [(float(r[1]), float(r[4])) for r in rows if r[0] == "all"]
    assert best["f1"] == pytest.approx(max(f for _, f in pooled))
    assert best["threshold"] == max(t for t, f in pooled if f == pytest.approx(best["f1"]))
    counts = np.array(record["confusion"]["counts"])
    for k, name in enumerate(["circle", "square"]):  # the diagonal: COCO's true positives at the thresholds
        assert counts[k, k] == record["at_applied_thresholds"][name]["true_positives"]
    for name in ("pr_curves.png", "f1_confidence.png", "confusion.png", "gallery.png", "pr_curves.csv",
                 "confusion.csv", "per_class.csv"):
        assert (own_run / "analysis" / name).is_file(), name
    assert "thresholds.json (fltool predict --score-thr auto)" in " ".join(analysed[1].stdout.split())


def test_predict_score_thr_auto_applies_the_runs_thresholds_per_class(own_run, analysed, tmp_path):
    ann = Path(json.loads((own_run / "metrics.json").read_text())["val_ann_file"])
    images = [str(ann.parent / "images" / img["file_name"]) for img in json.loads(ann.read_text())["images"][:3]]
    written = json.loads((own_run / "thresholds.json").read_text())
    first = runner.invoke(app, ["predict", str(own_run), *images, "--score-thr", "auto", "--out-dir",
                                str(tmp_path / "a"), "--no-draw"])
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["score_thr"] == "auto" and summary["score_thresholds"] == written["per_class"]
    strict = dict(written, overall=0.0, per_class={"circle": 0.999999, "square": 0.0})
    (own_run / "thresholds.json").write_text(json.dumps(strict))
    try:
        second = runner.invoke(app, ["predict", str(own_run), *images, "--score-thr", "auto", "--out-dir",
                                     str(tmp_path / "b"), "--no-draw"])
    finally:
        (own_run / "thresholds.json").write_text(json.dumps(written))
    assert second.exit_code == 0, second.output
    found = json.loads((tmp_path / "b" / "detections.json").read_text())
    assert found and {d["category"] for d in found} == {"square"}  # circle's threshold is out of reach
    assert min(d["score"] for d in found) < written["per_class"]["square"]  # square keeps even its weak ones
    bad = runner.invoke(app, ["predict", str(own_run), images[0], "--score-thr", "best"])
    assert bad.exit_code == 2 and "Invalid value for '--score-thr'" in bad.output


def test_auto_without_chosen_thresholds_says_how_to_choose_them(tiny_run, tmp_path):
    result = runner.invoke(app, ["predict", str(tiny_run.work_dir), str(next(tiny_run.work_dir.glob("*.py"))),
                                 "--score-thr", "auto", "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no thresholds.json" in result.stderr and "fltool analyze pr" in result.stderr


def test_export_carries_the_thresholds_and_old_metadata_still_reads(own_run, analysed, tmp_path):
    from fltool.deploy.onnx_export import ExportOptions, export_onnx
    from fltool.engine.backends import read_meta
    from fltool_plugins.models import DeployMeta, MetadataError

    result = export_onnx(ExportOptions(target=own_run, out=tmp_path / "m.onnx", check=False))
    written = json.loads((own_run / "thresholds.json").read_text())
    meta = read_meta(tmp_path / "m.onnx")
    assert meta.thresholds == written == result.meta.thresholds
    props = meta.to_props()
    old = {k: v for k, v in props.items() if k != "fltool.thresholds"}  # a file exported before the field
    assert DeployMeta.from_props(old).thresholds is None
    with pytest.raises(MetadataError, match="fltool.thresholds"):
        DeployMeta.from_props(dict(props, **{"fltool.thresholds": json.dumps({"overall": "high"})}))


def test_compare_puts_two_runs_side_by_side_with_their_differences(own_run, analysed, tiny_run, tmp_path):
    result = runner.invoke(app, ["compare", str(tiny_run.work_dir), str(own_run), "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "compare.json").read_text())
    tiny = json.loads((tiny_run.work_dir / "metrics.json").read_text())["bbox"]
    learned = json.loads((own_run / "metrics.json").read_text())["bbox"]
    ap = next(row for row in record["metrics"] if row[0] == "AP")
    assert ap[1:] == [tiny["AP"], learned["AP"], pytest.approx(learned["AP"] - tiny["AP"])]
    errors = json.loads((own_run / "analysis" / "errors.json").read_text())
    cls = next(row for row in record["errors"] if row[0] == "dAP Cls")
    assert cls[1:] == [None, errors["dAP"]["Cls"], None]  # the tiny run was never analysed
    learned_run = record["runs"][1]
    assert learned_run["per_class_AP"].keys() == {"circle", "square"}
    assert learned_run["speed"]["train_s_per_iter"] > 0 and learned_run["speed"]["iterations"] == 300
    curves = (tmp_path / "compare_curves.csv").read_text().splitlines()
    assert any(line.startswith("learned,val,300,") for line in curves)  # validation placed at its iteration
    assert (tmp_path / "compare.png").stat().st_size > 20_000
    one = runner.invoke(app, ["compare", str(own_run)])
    assert one.exit_code == 2 and "two or more runs" in one.output
    missing = runner.invoke(app, ["compare", str(own_run), str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "no such run folder" in missing.stderr


def test_errors_and_pr_run_on_your_own_data_with_its_classes(tiny_run, tiny_layouts, tmp_path):
    errors = runner.invoke(app, ["analyze", "errors", str(tiny_run.work_dir), "--data", str(tiny_layouts["voc"]),
                                 "--work-dir", str(tmp_path / "errors")])
    assert errors.exit_code == 0, errors.output
    record = json.loads((tmp_path / "errors" / "errors.json").read_text())
    assert list(record["per_class"]) == ["circle", "square", "triangle", "cross"]
    assert record["source"]["ann_file"].startswith(str(tmp_path / "errors"))  # the VOC data, converted
    assert record["AP50_all_fixed"] == pytest.approx(1.0)
    pr = runner.invoke(app, ["analyze", "pr", str(tiny_run.work_dir / "tiny_synth.py"),
                             str(tiny_run.work_dir / "iter_4.pth"), "--data", str(tiny_layouts["yolo"]),
                             "--work-dir", str(tmp_path / "pr"), "--no-write-thresholds", "--score-thr", "0.05"])
    assert pr.exit_code == 0, pr.output
    table = json.loads((tmp_path / "pr" / "pr.json").read_text())
    assert set(table["per_class"]) == {"circle", "square", "triangle", "cross", "all"}
    assert table["fixed_thr"] == 0.05 and table["thresholds_file"] is None
    assert not (tiny_run.work_dir / "thresholds.json").exists()


def test_a_crowd_region_is_ignored_and_no_detections_leave_every_box_missed():
    gt = _gt()
    gt["annotations"].append({"id": 9, "image_id": 3, "category_id": B, "bbox": [95, 95, 30, 30], "area": 900.0,
                              "iscrowd": 1})  # covers d5, which COCO then ignores: no longer a Bkg error
    b = error_breakdown(gt, _dets(), [A, B], ["A", "B"])
    assert b.counts == {"Cls": 1, "Loc": 1, "Both": 1, "Dupe": 1, "Bkg": 0, "Miss": 1}
    assert confusion(gt, _dets(), [A, B], ["A", "B"], [0.0, 0.0]).matrix[2].tolist() == [3, 0, 0]
    none = error_breakdown(_gt(), [], [A, B], ["A", "B"])
    assert none.ap == 0.0 and none.counts["Miss"] == 6 and sum(none.counts.values()) == 6
    analysis = pr_analysis(_gt(), [], [A, B], ["A", "B"])
    assert analysis.overall is None and analysis.thresholds == {"A": 0.3, "B": 0.3} and analysis.notes
