"""Dataset YAML resolution (spec §4.1/4.2) and downloads (zip from a real local HTTP server, zip-slip, offline)."""
from __future__ import annotations

import functools
import http.server
import io
import pathlib
import shutil
import socket
import threading
import zipfile

import pytest

from yolojax.data.dataset_yaml import DatasetError, check_dataset, img2label_path, list_images
from yolojax.data.download import download_zip, safe_extract


def _tree(root: pathlib.Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dataset(tmp_path, fixtures_dir):
    dst = tmp_path / "ds"
    shutil.copytree(fixtures_dir / "augment" / "dataset", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def test_bundled_names_resolve():
    import yaml

    from yolojax.data.dataset_yaml import CFG_DIR
    coco = yaml.safe_load((CFG_DIR / "coco128.yaml").read_text())
    assert len(coco["names"]) == 80 and coco["names"][0] == "person" and coco["names"][79] == "toothbrush"
    assert coco["download"] == "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip"
    voc = yaml.safe_load((CFG_DIR / "VOC.yaml").read_text())
    assert len(voc["names"]) == 20 and voc["names"][19] == "tvmonitor"
    assert len(yaml.safe_load((CFG_DIR / "coco.yaml").read_text())["names"]) == 80


def test_yaml_without_path_resolves_next_to_file(dataset):
    d = check_dataset(dataset / "data.yaml")
    assert d["path"] == dataset.resolve()
    assert d["train"] == [dataset.resolve() / "images" / "train"] and d["nc"] == 5
    assert d["names"] == {0: "red", 1: "blue", 2: "green", 3: "yellow", 4: "purple"}


def test_relative_root_goes_under_datasets_dir(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(tmp_path / "dsets"))
    shutil.copytree(dataset, tmp_path / "dsets" / "mine")
    y = tmp_path / "elsewhere" / "my.yaml"
    y.parent.mkdir()
    y.write_text("path: mine\ntrain: images/train\nvalidation: images/train\nnames: [a, b, c, d, e]\n")
    d = check_dataset(y)
    assert d["val"] == [(tmp_path / "dsets" / "mine" / "images" / "train").resolve()]


@pytest.mark.parametrize("text, needle", [
    ("val: images/train\nnames: [a]\n", "'train'"),
    ("train: images/train\nnames: [a]\n", "'val'"),
    ("train: images/train\nval: images/train\n", "'names'"),
    ("train: images/train\nval: images/train\nnames: [a, b]\nnc: 3\n", "'nc' is 3"),
    ("train: images/train\nval: images/missing\nnames: [a]\n", "images not found"),
    ("train: [images/train\n", "not valid YAML"),
])
def test_bad_yaml_messages_name_file_and_key(dataset, text, needle):
    y = dataset / "bad.yaml"
    y.write_text(text)
    with pytest.raises(DatasetError) as e:
        check_dataset(y)
    assert needle in str(e.value) and str(y) in str(e.value)


def test_unknown_name():
    with pytest.raises(DatasetError, match="neither an existing file nor a bundled"):
        check_dataset("no_such_dataset_xyz")


def test_a_folder_is_no_detection_dataset(tmp_path):
    with pytest.raises(DatasetError, match="is a folder: a detection dataset is a data YAML"):
        check_dataset(tmp_path)


def test_code_download_is_never_executed(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(tmp_path / "dsets"))
    marker = tmp_path / "pwned"
    y = dataset / "code.yaml"
    y.write_text(f"train: images/train\nval: images/nope\nnames: [a]\ndownload: bash touch {marker}\n")
    with pytest.raises(DatasetError, match="never executes"):
        check_dataset(y)
    y.write_text(f"train: images/train\nval: images/nope\nnames: [a]\ndownload: |\n  open('{marker}', 'w')\n")
    with pytest.raises(DatasetError, match="never executes"):
        check_dataset(y)
    assert not marker.exists()


def test_img2label_path_replaces_last_images_dir():
    p = img2label_path("/data/images/coco/images/train2017/0001.jpg")
    assert p == pathlib.Path("/data/images/coco/labels/train2017/0001.txt")


def test_list_images_txt_sorted_filtered_fraction(dataset):
    imgs = sorted((dataset / "images" / "train").glob("*.png"))
    (dataset / "images" / "train" / "notes.md").write_text("x")
    lst = dataset / "list.txt"
    lst.write_text("\n".join(f"./images/train/{p.name}" for p in reversed(imgs)) + "\n")
    assert list_images([lst]) == imgs
    assert list_images([dataset / "images"]) == imgs  # recursive, .md filtered out
    assert list_images([lst], fraction=0.25) == imgs[:4]


# ---------------------------------------------------------------------------------------------------- downloads
def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 (port 0) serving tmp_path/www in a thread."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_check_dataset_downloads_zip_from_local_server(dataset, http_dir, tmp_path, monkeypatch):
    www, url = http_dir
    entries = {f"toy/{p.relative_to(dataset).as_posix()}": p.read_bytes()
               for p in dataset.rglob("*") if p.is_file() and p.name != "data.yaml"}
    (www / "toy.zip").write_bytes(_zip_bytes(entries))
    dsets = tmp_path / "dsets"
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(dsets))
    y = tmp_path / "toy.yaml"
    y.write_text(f"path: toy\ntrain: images/train\nval: images/train\nnames: [a, b, c, d, e]\n"
                 f"download: {url}/toy.zip\n")
    d = check_dataset(y)
    assert d["val"][0] == (dsets / "toy" / "images" / "train").resolve()
    assert len(list_images(d["val"])) == 16
    assert sorted(p.name for p in dsets.iterdir()) == ["toy"]  # archive and temp file removed


@pytest.mark.parametrize("bad", ["../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_zip_slip_refused_and_nothing_extracted(tmp_path, bad):
    arc = tmp_path / "a.zip"
    arc.write_bytes(_zip_bytes({"fine/a.txt": b"1", bad: b"evil"}))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(DatasetError, match="Refusing to extract") as e:
        safe_extract(arc, dest)
    assert bad in str(e.value) and str(arc) in str(e.value)
    assert list(dest.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


def test_unreachable_network_clear_message_and_no_partial_file(tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port now
    with pytest.raises(DatasetError, match="network looks unreachable"):
        download_zip(f"http://127.0.0.1:{port}/x.zip", tmp_path / "d", timeout=2)
    assert list((tmp_path / "d").iterdir()) == []


def test_missing_file_on_server_is_clear(http_dir, tmp_path):
    _, url = http_dir
    with pytest.raises(DatasetError, match="Could not download"):
        download_zip(f"{url}/missing.zip", tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []
