"""Label verification and cache (spec §4.3): every bad-input case names the file (and line); the dataset is untouched."""
from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np
import pytest

from yolojax.data import labels as labels_mod
from yolojax.data.dataset_yaml import DatasetError
from yolojax.data.labels import load_labels


def _img(path: pathlib.Path, h=40, w=60, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _make(root: pathlib.Path, label_texts: list[str | None]) -> list[pathlib.Path]:
    files = []
    for i, text in enumerate(label_texts):
        im = root / "images" / "train" / f"{i:03d}.png"
        _img(im, seed=i)
        if text is not None:
            lb = root / "labels" / "train" / f"{i:03d}.txt"
            lb.parent.mkdir(parents=True, exist_ok=True)
            lb.write_text(text)
        files.append(im)
    return files


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.suffix != ".cache"}


GOOD = "0 0.5 0.5 0.2 0.3\n"


@pytest.mark.parametrize("line, reason", [
    ("0 0.5 0.5 0.2", "4 fields"),
    ("0 0.5 0.5 0.2 0.3 0.1", "6 fields"),
    ("0 0.5 x 0.2 0.3", "non-numeric"),
    ("0 0.5 nan 0.2 0.3", "non-finite"),
    ("5 0.5 0.5 0.2 0.3", "class id 5"),          # nc = 5: ids must be < 5 (v8's `<= nc` off-by-one rejected)
    ("-1 0.5 0.5 0.2 0.3", "class id -1"),
    ("1.5 0.5 0.5 0.2 0.3", "class id 1.5"),
    ("0 1.2 0.5 0.2 0.3", "out of bounds"),
    ("0 0.5 0.5 -0.2 0.3", "out of bounds"),
    ("0 0.1 0.1 0.2 0.2 0.3", "6 fields"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "odd number"),
])
def test_bad_label_line_names_file_and_line(tmp_path, line, reason, capsys):
    files = _make(tmp_path, [GOOD, GOOD + GOOD.replace("0.5 0.5", "0.4 0.4") + line + "\n", None])
    before = _snapshot(tmp_path)
    ls = load_labels(files, nc=5)
    assert ls.counts["corrupt"] == 1 and len(ls) == 2 and str(files[1]) not in ls.im_files
    lb_file = tmp_path / "labels" / "train" / "001.txt"
    msg = [m for m in ls.msgs if str(lb_file) in m]
    assert msg and f"{lb_file}:3" in msg[0] and reason in msg[0]
    out = capsys.readouterr().out
    assert "2 images, 1 backgrounds, 1 corrupt" in out and f"{lb_file}:3" in out
    assert _snapshot(tmp_path) == before  # nothing modified but the cache


def test_bad_images_skipped_counted_named(tmp_path):
    files = _make(tmp_path, [GOOD, GOOD])
    bad = tmp_path / "images" / "train" / "junk.jpg"
    bad.write_bytes(b"not an image at all")
    tiny = tmp_path / "images" / "train" / "tiny.png"
    _img(tiny, 8, 40)
    ls = load_labels(files + [bad, tiny], nc=1)
    assert ls.counts == {"found": 2, "missing": 0, "empty": 0, "corrupt": 2, "total": 4}
    assert len(ls) == 2
    assert any(str(bad) in m and "corrupt image" in m for m in ls.msgs)
    assert any(str(tiny) in m and "smaller than 10" in m for m in ls.msgs)


def test_no_valid_images_raises(tmp_path):
    bad = tmp_path / "images" / "x.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no valid images"):
        load_labels([bad], nc=1, verbose=False)


def test_polygon_duplicates_backgrounds_single_cls(tmp_path, recwarn):
    poly = "1 0.1 0.2 0.5 0.2 0.3 0.6\n"  # triangle → box extent x 0.1..0.5, y 0.2..0.6
    files = _make(tmp_path, [poly, "2 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n2 0.5 0.5 0.2 0.2\n", "", None])
    ls = load_labels(files, nc=3, verbose=False)
    np.testing.assert_allclose(ls.labels[0], [[1, 0.3, 0.4, 0.4, 0.4]], atol=1e-6)
    # duplicates removed; rows come out sorted (as Ultralytics' np.unique)
    np.testing.assert_allclose(ls.labels[1], [[1, 0.3, 0.3, 0.1, 0.1], [2, 0.5, 0.5, 0.2, 0.2]], atol=1e-7)
    assert any("1 duplicate labels removed" in m for m in ls.msgs)
    assert ls.counts["empty"] == 1 and ls.counts["missing"] == 1 and len(ls.labels[2]) == len(ls.labels[3]) == 0
    assert ls.summary() == "4 images, 2 backgrounds, 0 corrupt"
    assert tuple(ls.shapes[0]) == (40, 60)
    one = load_labels(files, nc=3, single_cls=True, verbose=False)
    assert all((lb[:, 0] == 0).all() for lb in one.labels)


def test_cache_written_reused_and_rebuilt(tmp_path, monkeypatch):
    files = _make(tmp_path, [GOOD, GOOD])
    ls = load_labels(files, nc=1, verbose=False)
    cache = tmp_path / "labels" / "train.cache"
    assert ls.cache_path == cache and cache.exists()
    with np.load(cache, allow_pickle=False) as z:  # plain arrays: no pickle needed to read it
        assert list(z["im_files"]) == [str(f) for f in files]
    calls = []
    real_scan = labels_mod.scan
    monkeypatch.setattr(labels_mod, "scan", lambda *a, **k: calls.append(1) or real_scan(*a, **k))
    load_labels(files, nc=1, verbose=False)
    assert calls == []  # fresh cache reused
    lb = tmp_path / "labels" / "train" / "001.txt"
    lb.write_text("0 0.5 0.5 0.4 0.4\n0 0.2 0.2 0.1 0.1\n")
    st = lb.stat()
    os.utime(lb, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    ls2 = load_labels(files, nc=1, verbose=False)
    assert calls == [1] and len(ls2.labels[1]) == 2  # stale → rebuilt
    cache.write_bytes(b"garbage")
    ls3 = load_labels(files, nc=1, verbose=False)
    assert calls == [1, 1] and len(ls3.labels[1]) == 2  # unreadable → rebuilt
    load_labels(files, nc=2, verbose=False)
    assert calls == [1, 1, 1]  # scan settings are part of the key
    assert not [p for p in cache.parent.iterdir() if p.name.endswith(".tmp")]


def test_read_only_labels_dir_works_without_cache(tmp_path, monkeypatch):
    files = _make(tmp_path, [GOOD])

    def refuse(*a, **k):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(labels_mod.tempfile, "mkstemp", refuse)
    with pytest.warns(UserWarning, match="not writable"):
        ls = load_labels(files, nc=1, verbose=False)
    assert len(ls) == 1 and ls.cache_path is None
    assert not (tmp_path / "labels" / "train.cache").exists()


def test_current_compat_tolerates_one_percent(tmp_path):
    files = _make(tmp_path, ["0 0.5 0.5 0.2 1.005\n"])
    v8 = labels_mod.scan(files, 1, compat="v8")
    cur = labels_mod.scan(files, 1, compat="current")
    assert v8.counts["corrupt"] == 1 and cur.counts["corrupt"] == 0
    assert cur.labels[0][0, 4] == pytest.approx(1.0)
