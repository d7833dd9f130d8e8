"""The benchmark scripts run end to end (tiny model, 64 px, batch 2, no Ultralytics) and print sane JSON lines.

Each script runs as a subprocess, exactly as a user or ``benchmarks/gpu_suite.sh`` runs it. They share one
persistent JAX compilation cache (the test-suite cache), so only the first run pays the compiles.
"""
from __future__ import annotations

import json
import statistics
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = ["--width", "0.0625", "--imgsz", "64", "--batch", "2"]


def _run(script: str, *args: str, timeout: int = 600) -> list[dict]:
    cache = os.environ["YOLOJAX_TEST_JAX_CACHE"]  # set by conftest
    env = dict(os.environ, JAX_PLATFORMS="cpu", YOLOJAX_BENCH_JAX_CACHE=cache)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args, "--no-record"],
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_train_step_script_reports_a_real_step():
    (rec,) = _run("train_step.py", *TINY, "--steps", "2", "--warmup", "1", "--hsv-on-device", "--warp-on-device")
    assert rec["benchmark"] == "train_step" and rec["impl"] == "yolojax"
    assert rec["setting"].endswith("mosaic + warp + flips in the step, HSV jitter in the step")
    assert rec["augment_ms"] > 0  # the composition + jitter timed alone
    assert rec["median_ms"] > 0 and rec["compile_s"] > 0
    # images/s is batch / median step time
    assert rec["images_per_s"] == pytest.approx(2 / (rec["median_ms"] / 1000), rel=0.02)
    # a fresh detector's loss on images with boxes is finite and positive (box + cls + dfl terms)
    assert 0 < rec["loss"] < 1e4
    # FLOPs at 64 px scale as the pixel count from model_info at 640 (convolutions only, +BN/bias terms)
    from yolojax.nn.summary import model_info
    from yolojax.nn.yolo import YOLOv8

    model = YOLOv8(scale="n", multiples=(0.33, 0.0625, 1024))
    assert rec["gflops_per_image"] == pytest.approx(model_info(model, 640).gflops / 100, abs=0.006)


@pytest.mark.slow
def test_val_bench_script_validates_every_image():
    (rec,) = _run("val_bench.py", "--width", "0.0625", "--imgsz", "64", "--batch", "2", "--images", "4")
    assert rec["benchmark"] == "val" and rec["impl"] == "yolojax"
    assert rec["images_per_s"] > 0 and rec["second_pass_s"] > 0
    # a random-init model finds nothing right: mAP in [0, 1] and far from perfect
    assert 0.0 <= rec["map50_95"] <= rec["map50"] < 0.5


@pytest.mark.slow
def test_e2e_whole_run_times_complete_train_calls():
    """``e2e.py --whole-run``: a complete training call (tiny model, 2 epochs with validation, checkpoints, the final
    validation) in a fresh process; its phases tile the call's wall time and the summary's median is that run's."""
    recs = _run("e2e.py", "--whole-run", "b8-320", "--width", "0.0625", "--imgsz", "64", "--batch", "4", "--images",
                "8", "--epochs", "2", "--close-mosaic", "1", "--repeats", "1", "--no-warmup", "--no-ultralytics")
    (run,) = [r for r in recs if r["impl"] == "yolojax"]
    (summary,) = [r for r in recs if r["impl"] == "summary"]
    assert not [r for r in recs if r["impl"] == "ultralytics"]
    assert run["setting"].startswith("yolov8n width 0.0625 b4 @64 nbs 64, 8 train / 8 val JPEGs")
    assert "2 epochs, close_mosaic 1" in run["setting"]
    assert 0 < sum(run["phases"].values()) <= run["wall_s"] + 0.1 < run["process_s"] + 0.1
    assert run["cpu_s"] > 0  # the training process's own CPU seconds (its children's, as seen by e2e.py)
    for phase in ("step", "val_forward", "checkpoint", "final_val"):
        assert run["phases"][phase] > 0, phase
    assert 0.0 <= run["map50_95"] <= run["map50"] <= 1.0
    assert summary["yolojax_median_s"] == round(run["wall_s"], 1) and "ratio_ultralytics_over_yolojax" not in summary


@pytest.mark.slow
def test_gpu_suite_dry_run_measures_a_whole_run_on_the_cpu(tmp_path):
    """``gpu_suite.sh run --dry-run`` (here its whole-run step alone): the GPU sequence's command lines with tiny
    settings on the CPU; both trainers' complete runs land in results.jsonl with their ratio."""
    ul = Path(os.environ.get("ULTRALYTICS_PYTHON", REPO.parent / "ulvenv" / "bin" / "python"))
    if not ul.exists():
        pytest.skip(f"the dry run compares with Ultralytics: no {ul} (set ULTRALYTICS_PYTHON)")
    env = dict(os.environ, JAX_PLATFORMS="cpu", OUT=str(tmp_path), SUITE_STEPS="e2e_run", PYTHON=sys.executable,
               UL_PYTHON=str(ul), YOLOJAX_BENCH_JAX_CACHE=os.environ["YOLOJAX_TEST_JAX_CACHE"])
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "run", "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    recs = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["impl"] for r in recs] == ["yolojax", "ultralytics", "summary"], recs
    assert all(r["benchmark"] == "e2e_whole_run" and r["preset"] == "gpu-b64-640" for r in recs)
    assert "yolov8n width 0.0625 b4 @64" in recs[0]["setting"] and "2 epochs" in recs[0]["setting"]
    assert recs[2]["ratio_ultralytics_over_yolojax"] == pytest.approx(
        recs[2]["ultralytics_median_s"] / recs[2]["yolojax_median_s"], rel=0.02)
    assert "=== e2e_run" in (tmp_path / "log.txt").read_text()


def test_color_check_script_counts_no_difference_from_opencv_on_cpu():
    (rec,) = _run("color_check.py", "--batch", "2", "--imgsz", "64", "--runs", "2")
    assert rec["benchmark"] == "color_check" and rec["backend"] == "cpu"
    assert rec["bgr_to_hsv"]["pixels_differing"] == rec["hsv_to_bgr"]["pixels_differing"] == 0
    assert rec["jitter_first4_pixels_differing"] == 0 and rec["jitter_ms"] > 0
    assert rec["warp_ms"] > 0
    if tuple(int(v) for v in rec["opencv"].split(".")[:2]) >= (4, 11):  # OpenCV's float32 warp (tests/test_warp.py)
        assert rec["warp_max_level_difference"] <= 1


def test_interleaved_times_alternate_blocks_and_cancel_a_drifting_machine():
    """``train_step.py --interleave``: the two step functions run in alternating blocks (the first of each pair
    alternates), every step is kept, and on a machine that slows down over time the ratio still comes out as the
    true ratio - where timing all of one side and then all of the other would not."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_step

    clock, order = [0], []

    def make(name: str, cost: float):
        def steps(k: int) -> list[float]:
            order.append(name)
            out = []
            for _ in range(k):
                clock[0] += 1
                out.append(cost * (1 + 0.05 * clock[0]))  # the machine slows by 5% of a step per step
            return out
        return steps

    fast, slow = make("a", 1.0), make("b", 2.0)
    got = train_step.interleaved_times(fast, slow, rounds=6, per_round=3, pause_s=0.0)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(got["times_a"]) == len(got["times_b"]) == 18
    assert got["ratio"] == pytest.approx(2.0, rel=0.03)
    assert got["round_ratio_median"] == pytest.approx(2.0, rel=0.03)
    # the same costs timed one side after the other are off by the drift
    clock[0] = 0
    a_times, b_times = fast(18), slow(18)
    sequential = statistics.median(b_times) / statistics.median(a_times)
    assert abs(sequential - 2.0) > 0.3
