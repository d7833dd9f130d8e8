"""Downloads on first use, against a real HTTP server on 127.0.0.1 standing in for Ultralytics' release assets.

* Weights: ``YOLO("yolov8n.pt")`` / ``model=yolov8n.pt`` fetch the file into the working directory (the fixture
  checkpoint is served as ``/v8.2.0/yolov8n.pt``) with a licence line; a truncated or dropped download, a missing
  file and an unreachable server leave no file behind and give the one-paragraph error.
* VOC: ``data=VOC.yaml`` fetches tiny VOC-format archives made here (images + XML, one difficult object) and
  converts them into YOLO labels whose values are computed by hand; an interrupted download or conversion resumes
  without fetching finished archives again.
"""
from __future__ import annotations

import http.server
import io
import pathlib
import re
import socket
import struct
import threading
import zipfile

import cv2
import numpy as np
import pytest

from yolojax.data.dataset import DetectionDataset
from yolojax.data.dataset_yaml import DatasetError, check_dataset
from yolojax.data.download import PROGRESS_FILE, DownloadError, fetch_file
from yolojax.weights import attempt_download

REPO = pathlib.Path(__file__).resolve().parents[1]


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; ``server.faults[path]`` = "short" (Content-Length larger than the body),
    "reset" (half the body, then a TCP reset) or "nolength" (half the body without a Content-Length)."""

    def do_GET(self):  # noqa: N802 - http.server's name
        srv = self.server
        srv.requests.append(self.path)
        data, fault = srv.files.get(self.path), srv.faults.get(self.path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        if fault != "nolength":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data if fault is None else data[: len(data) // 2])
        self.wfile.flush()
        if fault == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def log_message(self, *args):
        pass


@pytest.fixture
def assets():
    """A release-assets server on 127.0.0.1: ``.files``, ``.faults``, ``.requests``, ``.url``."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.faults, srv.requests = {}, {}, []
    srv.handle_error = lambda *a: None  # the "reset" fault closes the socket under the handler
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def user_dir(tmp_path, monkeypatch, assets):
    """A working directory whose release assets come from the local server; datasets under ./datasets."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("YOLOJAX_ASSETS_URL", assets.url)
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(work / "datasets"))
    return work


@pytest.fixture(scope="module")
def pt_bytes(fixtures_dir) -> bytes:
    return (fixtures_dir / "v82" / "ckpt_n_last.pt").read_bytes()


# ------------------------------------------------------------------------------------------------------ weights
def test_yolo_downloads_released_weights_once_with_licence_line(user_dir, assets, pt_bytes, capsys):
    from yolojax import YOLO

    assets.files["/v8.2.0/yolov8n.pt"] = pt_bytes
    model = YOLO("yolov8n.pt")
    out = capsys.readouterr().out
    assert (user_dir / "yolov8n.pt").read_bytes() == pt_bytes
    assert sorted(p.name for p in user_dir.iterdir()) == ["yolov8n.pt"]  # no temporary file left
    line = next(line for line in out.splitlines() if "yolov8n.pt" in line and "AGPL-3.0" in line)
    assert "Ultralytics" in line and f"{assets.url}/v8.2.0/yolov8n.pt" in line
    assert model.names[0] == "person" and len(model.names) == 80
    YOLO("yolov8n.pt")  # found locally now: not fetched again
    assert assets.requests == ["/v8.2.0/yolov8n.pt"]


def test_cls_weights_and_paths_with_folders(user_dir, assets, pt_bytes):
    assets.files["/v8.2.0/yolov8s-cls.pt"] = pt_bytes
    assert attempt_download("yolov8s-cls.pt") == pathlib.Path("yolov8s-cls.pt")
    assets.files["/v8.2.0/yolov8x.pt"] = pt_bytes
    assert attempt_download("weights/yolov8x.pt").read_bytes() == pt_bytes  # to the path given, as Ultralytics
    assert (user_dir / "yolov8s-cls.pt").read_bytes() == pt_bytes


@pytest.mark.parametrize("fault, reason", [("short", "incomplete"), ("reset", "interrupted|incomplete"),
                                           ("nolength", "not a complete zip"), ("missing", "404")])
def test_failed_weights_download_leaves_no_file(user_dir, assets, pt_bytes, fault, reason):
    from yolojax import YOLO

    if fault != "missing":
        assets.files["/v8.2.0/yolov8m.pt"] = pt_bytes
        assets.faults["/v8.2.0/yolov8m.pt"] = fault
    with pytest.raises(FileNotFoundError) as e:
        YOLO("yolov8m.pt")
    msg = str(e.value)
    assert "github.com/ultralytics/assets/releases" in msg and "yolov8m.yaml" in msg and "\n" not in msg
    assert re.search(reason, msg), msg
    assert assets.requests == ["/v8.2.0/yolov8m.pt"]
    assert list(user_dir.iterdir()) == []


def test_fetch_file_checks_the_announced_length(user_dir, assets):
    assets.files["/notes.txt"] = b"x" * 1000
    assets.faults["/notes.txt"] = "short"
    with pytest.raises(DownloadError, match="incomplete .500 of 1000 bytes"):
        fetch_file(f"{assets.url}/notes.txt", user_dir / "notes.txt")
    del assets.faults["/notes.txt"]
    assert fetch_file(f"{assets.url}/notes.txt", user_dir / "sub" / "notes.txt").read_bytes() == b"x" * 1000
    assert sorted(str(p.relative_to(user_dir)) for p in user_dir.rglob("*")) == ["sub", "sub/notes.txt"]


def test_offline_keeps_the_one_paragraph_error(tmp_path, monkeypatch, capsys):
    from yolojax.cli import main

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there: the "network" is unreachable
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLOJAX_ASSETS_URL", f"http://127.0.0.1:{port}")
    assert main(["detect", "train", "data=coco8.yaml", "model=yolov8l.pt", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ERROR: Model weights 'yolov8l.pt' not found") and err.count("\n") == 1
    assert "downloading it failed" in err and "yolov8l.yaml" in err and str(tmp_path) in err
    assert list(tmp_path.iterdir()) == []


def test_other_missing_names_are_not_fetched(user_dir, assets):
    from yolojax import YOLO

    for name in ("yolov8n_custom.pt", "yolo11n.pt", "runs/best.npz"):
        with pytest.raises(FileNotFoundError, match="not found"):
            YOLO(name)
    assert assets.requests == []


def _coco128_zip(n: int = 8) -> bytes:
    """A stand-in for coco128.zip: the same layout (coco128/images/train2017, coco128/labels/train2017), n images."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i in range(n):
            img = np.full((64, 96, 3), 114, np.uint8)
            img[16:48, 20 + i:60 + i] = rng.integers(0, 256, 3)
            z.writestr(f"coco128/images/train2017/{i:012d}.jpg", cv2.imencode(".jpg", img)[1].tobytes())
            z.writestr(f"coco128/labels/train2017/{i:012d}.txt", f"{i % 80} {(40 + i) / 96} 0.5 {40 / 96} 0.5\n")
    return buf.getvalue()


@pytest.mark.slow
def test_cli_train_coco128_with_released_weights_needs_no_manual_step(user_dir, assets, pt_bytes, capsys):
    from yolojax.cli import main

    assets.files["/v8.2.0/yolov8n.pt"] = pt_bytes
    assets.files["/v0.0.0/coco128.zip"] = _coco128_zip()
    argv = ["detect", "train", "data=coco128.yaml", "model=yolov8n.pt", "epochs=1", "imgsz=64", "batch=4",
            "workers=0", "plots=False"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert sorted(assets.requests) == ["/v0.0.0/coco128.zip", "/v8.2.0/yolov8n.pt"]
    assert any("yolov8n.pt" in line and "AGPL-3.0" in line for line in out.splitlines())
    assert (user_dir / "yolov8n.pt").read_bytes() == pt_bytes
    assert len(list((user_dir / "datasets" / "coco128" / "images" / "train2017").iterdir())) == 8
    rows = (user_dir / "runs" / "detect" / "train" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + the one epoch


# ------------------------------------------------------------------------------------------------------ VOC
def _voc_xml(w: int, h: int, objects) -> bytes:
    objs = "".join(
        f"<object><name>{n}</name>{'' if d is None else f'<difficult>{d}</difficult>'}<bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for n, d, (x0, y0, x1, y1) in objects)
    size = f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
    return f"<annotation>{size}{objs}</annotation>".encode()


def _jpg(h: int, w: int, seed: int) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", img)[1].tobytes()


# id -> (year, set, width, height, objects [(name, difficult or None, (xmin, ymin, xmax, ymax))])
VOC_IMAGES = {
    "000005": ("2007", "train", 100, 80, [("chair", "0", (11, 21, 51, 61)), ("person", "1", (1, 1, 20, 30))]),
    "000007": ("2007", "val", 64, 64, [("car", "0", (1, 1, 64, 64))]),
    "000009": ("2007", "test", 80, 100, [("horse", "0", (41, 11, 81, 51)), ("tvmonitor", None, (2, 3, 12, 23))]),
    "000010": ("2007", "test", 64, 48, []),
    "2008_000001": ("2012", "train", 96, 64, [("aeroplane", "0", (5, 5, 45, 25)), ("dog", "1", (1, 1, 9, 9))]),
    "2008_000002": ("2012", "val", 64, 96, [("bus", "0", (21, 31, 41, 71))]),
}
# Hand-computed labels: class id, ((xmin + xmax) / 2 - 1) / w, ((ymin + ymax) / 2 - 1) / h, (xmax - xmin) / w,
# (ymax - ymin) / h; difficult objects left out.
VOC_LABELS = {
    "000005": [[8, 0.30, 0.50, 0.40, 0.50]],
    "000007": [[6, 31.5 / 64, 31.5 / 64, 63 / 64, 63 / 64]],
    "000009": [[12, 0.75, 0.30, 0.50, 0.40], [19, 0.075, 0.12, 0.125, 0.20]],
    "000010": [],
    "2008_000001": [[0, 24 / 96, 14 / 64, 40 / 96, 20 / 64]],
    "2008_000002": [[5, 30 / 64, 50 / 96, 20 / 64, 40 / 96]],
}
VOC_ARCHIVES = {"VOCtrainval_06-Nov-2007.zip": ("2007", ("train", "val")),
                "VOCtest_06-Nov-2007.zip": ("2007", ("test",)),
                "VOCtrainval_11-May-2012.zip": ("2012", ("train", "val"))}


def _voc_zip(year: str, sets) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        base = f"VOCdevkit/VOC{year}"
        ids = {s: [i for i, v in VOC_IMAGES.items() if v[:2] == (year, s)] for s in sets}
        for s, members in ids.items():
            z.writestr(f"{base}/ImageSets/Main/{s}.txt", "".join(f"{i}\n" for i in members))
        if "train" in sets:
            z.writestr(f"{base}/ImageSets/Main/trainval.txt", "".join(f"{i}\n" for s in sets for i in ids[s]))
        for i in (i for s in sets for i in ids[s]):
            _, _, w, h, objs = VOC_IMAGES[i]
            z.writestr(f"{base}/Annotations/{i}.xml", _voc_xml(w, h, objs))
            z.writestr(f"{base}/JPEGImages/{i}.jpg", _jpg(h, w, seed=len(i) + int(i[-1])))
    return buf.getvalue()


@pytest.fixture
def voc_server(assets):
    for name, (year, sets) in VOC_ARCHIVES.items():
        assets.files[f"/v0.0.0/{name}"] = _voc_zip(year, sets)
    return assets


def _check_voc_result(root: pathlib.Path):
    for i, (year, s, w, h, _) in VOC_IMAGES.items():
        img = cv2.imread(str(root / "images" / f"{s}{year}" / f"{i}.jpg"))
        assert img.shape[:2] == (h, w)
        rows = [[float(v) for v in line.split()] for line in
                (root / "labels" / f"{s}{year}" / f"{i}.txt").read_text().splitlines()]
        np.testing.assert_allclose(np.asarray(rows).reshape(-1, 5), np.asarray(VOC_LABELS[i]).reshape(-1, 5),
                                   atol=1e-12)
    assert not list((root / "images" / "VOCdevkit").rglob("*.jpg"))  # moved, not copied


def test_voc_yaml_downloads_converts_and_trains(user_dir, voc_server, capsys):
    info = check_dataset("VOC.yaml")
    root = user_dir / "datasets" / "VOC"
    assert info["path"] == root and info["nc"] == 20 and info["names"][19] == "tvmonitor"
    _check_voc_result(root)
    assert sorted(voc_server.requests) == sorted(f"/v0.0.0/{n}" for n in VOC_ARCHIVES)
    assert not (root / PROGRESS_FILE).exists() and not list((root / "images").glob("*.zip"))
    out = capsys.readouterr().out
    assert "VOC test2007: 2 images, 2 boxes (0 difficult objects left out" in out
    assert "VOC train2012: 1 images, 1 boxes (1 difficult objects left out" in out
    # the dataset index loads: 4 train images (2007 + 2012 train and val), 2 val images (2007 test)
    train = DetectionDataset.from_config(info, "train", imgsz=64, verbose=False)
    val = DetectionDataset.from_config("VOC", "val", imgsz=64, verbose=False)  # done: nothing fetched again
    assert len(train) == 4 and len(val) == 2 and len(voc_server.requests) == 3
    assert sorted(len(lb) for lb in train.labels) == [1, 1, 1, 1] and sorted(len(lb) for lb in val.labels) == [0, 2]


@pytest.mark.slow
def test_voc_downloaded_dataset_trains(user_dir, voc_server, tiny_model_yaml):
    from yolojax import YOLO

    metrics = YOLO(str(tiny_model_yaml)).train(data="VOC", epochs=1, imgsz=64, batch=2, workers=0, plots=False)
    rows = (user_dir / "runs" / "detect" / "train" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and np.isfinite(metrics.box.map)  # one epoch over the converted labels, validated
    assert len(voc_server.requests) == 3


def test_voc_interrupted_download_resumes_without_refetching(user_dir, voc_server):
    voc_server.faults["/v0.0.0/VOCtrainval_11-May-2012.zip"] = "short"
    with pytest.raises(DatasetError, match="incomplete"):
        check_dataset("VOC")
    root = user_dir / "datasets" / "VOC"
    assert (root / PROGRESS_FILE).is_file()
    assert sorted(p.name for p in (root / "images").iterdir()) == ["VOCdevkit"]  # no partial archive kept
    del voc_server.faults["/v0.0.0/VOCtrainval_11-May-2012.zip"]
    voc_server.requests.clear()
    check_dataset("VOC")
    assert voc_server.requests == ["/v0.0.0/VOCtrainval_11-May-2012.zip"]
    _check_voc_result(root)


def test_voc_interrupted_conversion_resumes(user_dir, voc_server, monkeypatch):
    import yolojax.data.voc as voc

    real, calls = voc.voc_labels, []

    def stop_in_test2007(*a, **k):  # the 6th image is the second of test2007, the last set converted
        calls.append(a[0])
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(voc, "voc_labels", stop_in_test2007)
    with pytest.raises(KeyboardInterrupt):
        check_dataset("VOC")
    monkeypatch.setattr(voc, "voc_labels", real)
    root = user_dir / "datasets" / "VOC"
    assert (root / "images" / "test2007" / "000009.jpg").is_file()  # the val folder exists, half converted
    with pytest.raises(DatasetError, match="interrupted"):
        check_dataset("VOC", autodownload=False)
    voc_server.requests.clear()
    check_dataset("VOC")
    assert voc_server.requests == []  # every archive was already extracted
    _check_voc_result(root)
    voc.convert_voc(root, check_dataset("VOC")["names"])  # once more: idempotent
    _check_voc_result(root)


def test_unknown_converter_is_refused(user_dir, voc_server, tmp_path):
    y = tmp_path / "v.yaml"
    y.write_text(f"path: v\ntrain: images/a\nval: images/a\nnames: [a]\nconvert: coco_json\n"
                 f"download: {voc_server.url}/v0.0.0/VOCtest_06-Nov-2007.zip\n")
    with pytest.raises(DatasetError, match="key 'convert' is 'coco_json'"):
        check_dataset(y)
    assert voc_server.requests == []  # refused before downloading anything


def test_bundled_voc_yaml_names_and_splits():
    import yaml

    d = yaml.safe_load((REPO / "yolojax" / "cfg" / "datasets" / "VOC.yaml").read_text())
    assert list(d["names"].values()) == [  # Ultralytics' VOC.yaml order
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
        "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    assert d["train"] == ["images/train2012", "images/train2007", "images/val2012", "images/val2007"]
    assert d["val"] == ["images/test2007"] and d["convert"] == "voc"
    assert [pathlib.PurePosixPath(x["url"]).name for x in d["download"]] == list(VOC_ARCHIVES)
