"""Metrics: Ultralytics fixture parity (v82 default, v84 with compat="current") and hand-computed cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from yolojax.metrics import (
    IOUV,
    ConfusionMatrix,
    DetectionStatsAccumulator,
    DetMetrics,
    ap_per_class,
    box_iou,
    compute_ap,
    match_predictions,
)

CASES = [("v82", "v8"), ("v84", "current")]
NO_LETTERBOX = ((1.0, 1.0), (0.0, 0.0))


def _load(fixtures_dir, version):
    d = fixtures_dir / version
    return (np.load(d / "metrics_data.npz"), np.load(d / "metrics_nms.npz"), np.load(d / "metrics_results.npz"),
            json.loads((d / "metrics_fixtures.json").read_text()))


def _accumulate(fixtures_dir, version, compat):
    """The validator path: fixture NMS output + ground truth, image by image, through the accumulator."""
    data, nms, _, _ = _load(fixtures_dir, version)
    det, img = nms["val/det"], nms["val/img"]
    acc = DetectionStatsAccumulator(5, names=[f"class{i}" for i in range(5)], compat=compat)
    for i in range(data["raw_preds"].shape[0]):
        p, g = det[img == i], data["gt_batch_idx"] == i
        acc.update(p[:, :4], p[:, 4], p[:, 5], data["gt_xyxy"][g], data["gt_cls"][g],
                   ratio_pad=NO_LETTERBOX, orig_hw=tuple(data["img_hw"]))
    return acc


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def run(request, fixtures_dir):
    version, compat = request.param
    acc = _accumulate(fixtures_dir, version, compat)
    metrics = acc.compute()
    return version, compat, acc, metrics, _load(fixtures_dir, version)


def test_iou_thresholds_match_fixture(fixtures_dir):
    np.testing.assert_array_equal(IOUV, np.load(fixtures_dir / "v82" / "metrics_results.npz")["iouv"])


def test_true_positives_equal(run):
    _, _, acc, _, (_, _, ref, _) = run
    stats = acc.stats()
    np.testing.assert_array_equal(stats["tp"], ref["tp"])
    np.testing.assert_array_equal(stats["conf"], ref["conf"])
    np.testing.assert_array_equal(stats["pred_cls"], ref["pred_cls"])
    np.testing.assert_array_equal(stats["target_cls"], ref["target_cls"])
    np.testing.assert_array_equal(acc.nt_per_class, ref["nt_per_class"])
    np.testing.assert_array_equal(acc.nt_per_image, ref["nt_per_image"])


def test_metrics_equal(run):
    _, _, _, m, (_, _, ref, js) = run
    np.testing.assert_array_equal(m.ap_class_index, ref["ap_class_index"])
    for ours, key in ((m.p, "p"), (m.r, "r"), (m.f1, "f1"), (m.all_ap, "all_ap"), (m.ap50, "ap50"),
                      (m.ap, "ap50_95"), (m.maps, "maps")):
        np.testing.assert_allclose(ours, ref[key], atol=1e-6, rtol=0, err_msg=key)
    for key in ("p_curve", "r_curve", "f1_curve", "prec_values"):
        np.testing.assert_allclose(m.curves[key], ref[key], atol=1e-6, rtol=0, err_msg=key)
    u = js["ultralytics"]
    for ours, key in ((m.mp, "precision(mp)"), (m.mr, "recall(mr)"), (m.map50, "mAP50"), (m.map75, "mAP75"),
                      (m.map, "mAP50-95"), (m.fitness(), "fitness")):
        assert ours == pytest.approx(u[key], abs=1e-6), key
    assert m.results_dict.keys() == u["results_dict"].keys()
    for key, value in u["results_dict"].items():
        assert m.results_dict[key] == pytest.approx(value, abs=1e-6), key
    for i, (name, row) in enumerate(u["per_class"].items()):
        assert m.class_result(i) == pytest.approx((row["P"], row["R"], row["AP50"], row["AP50-95"]), abs=1e-6)


def test_table_lines(run):
    _, _, acc, m, (_, _, ref, js) = run
    lines = acc.table_lines(m)
    assert lines[0].split() == ["Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)"]
    assert len(lines[0]) == 22 + 11 * 6
    u = js["ultralytics"]
    expected = ["all", "20", "90"] + [f"{u[k]:.3g}" for k in ("precision(mp)", "recall(mr)", "mAP50", "mAP50-95")]
    assert lines[1].split() == expected
    assert len(lines) == 2 + 5
    first = js["ultralytics"]["per_class"]["class0"]
    assert lines[2].split() == ["class0", str(ref["nt_per_image"][0]), str(ref["nt_per_class"][0]),
                                f"{first['P']:.3g}", f"{first['R']:.3g}", f"{first['AP50']:.3g}",
                                f"{first['AP50-95']:.3g}"]


def test_coordinate_space_follows_compat(fixtures_dir):
    """v82 clips boxes to the image before matching, v84 does not: crossing them must break tp equality."""
    ref82 = np.load(fixtures_dir / "v82" / "metrics_results.npz")["tp"]
    crossed = _accumulate(fixtures_dir, "v84", "current").stats()["tp"]
    assert (crossed != ref82).sum() == 9  # the 9 entries README lists between the versions


def test_matching_rules_differ_where_expected():
    # labels L0, L1; detection 0 (most confident) overlaps L0 by 0.9; detection 1 overlaps L0 by 0.8, L1 by 0.6.
    iou = np.array([[0.9, 0.8], [0.0, 0.6]], np.float32)
    cls = np.zeros(2)
    v8 = match_predictions(cls, cls, iou, compat="v8")
    cur = match_predictions(cls, cls, iou, compat="current")
    # v8: detection 1's best label L0 goes to detection 0, and it never falls back to L1
    np.testing.assert_array_equal(v8[:, 0], [True, False])
    # current (COCO greedy): detection 1 takes the best still-free label, L1 at IoU 0.6
    np.testing.assert_array_equal(cur[:, 0], [True, True])
    np.testing.assert_array_equal(cur[1], IOUV <= np.float32(0.6))
    # a class mismatch zeroes the IoU
    assert not match_predictions(np.array([1, 1]), cls, iou).any()


def test_hand_computed_ap():
    # one class, 3 labels; detections by confidence: TP, FP, TP -> recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3.
    # v8 envelope: 1 up to recall 1/3, 2/3 up to 2/3, then linear to 0 at recall 1; 101-point trapezoid:
    # 0.33 + (1 + 2/3)/2*0.01 + 32*0.01*2/3 + (2/3 + 0.66)/2*0.01 + 0.33^2 = 0.6672.
    # current: the precision drops to 0 right after recall 2/3: 0.33 + 0.008333 + 0.213333 + 0.003333 = 0.555.
    recall = np.array([1, 1, 2]) / 3
    precision = np.array([1, 0.5, 2 / 3])
    assert compute_ap(recall, precision, "v8")[0] == pytest.approx(0.6672, abs=1e-9)
    assert compute_ap(recall, precision, "current")[0] == pytest.approx(0.555, abs=1e-9)
    tp = np.array([[1], [0], [1]], bool).repeat(10, 1)
    out = ap_per_class(tp, np.array([0.9, 0.8, 0.7]), np.zeros(3), np.zeros(3))
    np.testing.assert_allclose(out["ap"], 0.6672, atol=1e-9)
    # best mean-F1 confidence keeps all three detections: P = 2/3, R = 2/3
    assert out["p"][0] == pytest.approx(2 / 3, abs=1e-3) and out["r"][0] == pytest.approx(2 / 3, abs=1e-3)


def test_fitness_formulas():
    m = DetMetrics(2, p=np.array([0.5, 0.7]), r=np.array([0.4, 0.6]), f1=np.zeros(2),
                   all_ap=np.array([[0.8] + [0.4] * 9, [0.6] + [0.2] * 9]), ap_class_index=np.array([0, 1]))
    map50, map5095 = 0.7, (0.8 + 0.6 + 9 * 0.6) / 20
    assert m.map50 == pytest.approx(map50) and m.map == pytest.approx(map5095)
    assert m.fitness("v8") == pytest.approx(0.1 * map50 + 0.9 * map5095)
    assert m.fitness("current") == pytest.approx(map5095)
    with pytest.raises(ValueError, match="compat"):
        m.fitness("v9")


def test_empty_run_gives_zero_metrics():
    acc = DetectionStatsAccumulator(3)
    acc.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros((0, 4)), np.zeros(0))
    acc.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), [[0, 0, 10, 10]], [1])
    m = acc.compute()
    assert acc.seen == 2 and m.results_dict["fitness"] == 0.0 and m.map == 0.0
    assert acc.table_lines(m)[1].split()[:3] == ["all", "2", "1"]


def test_box_iou_hand_case():
    iou = box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]])
    np.testing.assert_allclose(iou, [[50 / 150, 0.0, 1.0]], atol=1e-6)


def test_confusion_matrix_hand_case():
    cm = ConfusionMatrix(2)
    gt_boxes = [[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]
    gt_cls = [0, 1, 0]
    det_boxes = [[0, 0, 10, 10], [20, 20, 30, 31], [100, 100, 110, 110], [0, 0, 10, 10], [0, 0, 10, 9.5]]
    det_conf = [0.9, 0.8, 0.7, 0.1, 0.6]
    det_cls = [0, 0, 1, 1, 0]
    cm.process_batch(det_boxes, det_conf, det_cls, gt_boxes, gt_cls)
    # rows predicted (0, 1, background), columns true (0, 1, background)
    expected = np.array([[1, 1, 1],   # label 0 found; label 1 found as class 0; duplicate of label 0 unmatched
                         [0, 0, 1],   # class-1 detection far from everything (the conf-0.1 one is ignored)
                         [1, 0, 0]])  # the third label missed
    np.testing.assert_array_equal(cm.matrix, expected)
    tp, fp = cm.tp_fp()
    np.testing.assert_array_equal(tp, [1, 0])
    np.testing.assert_array_equal(fp, [2, 1])
    cm.process_batch(det_boxes[:1], [0.9], [1], np.zeros((0, 4)), [])  # no labels: a false positive
    cm.process_batch(np.zeros((0, 4)), [], [], gt_boxes[:1], [1])  # no detections: a miss
    assert cm.matrix[1, 2] == 2 and cm.matrix[2, 1] == 1
    assert ConfusionMatrix(2, conf=0.001).conf == 0.25  # v8-era replaces the val conf
    assert ConfusionMatrix(2, conf=0.001, compat="current").conf == 0.001
