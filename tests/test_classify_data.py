"""Classification data: folder checks, download by name from a local server, the synthetic set, transforms.

References are hand-computed cases and properties (a linear ramp resized by 2, exact crops and flips, pixel shifts,
bit masks) rather than the code under test.
"""
from __future__ import annotations

import functools
import os
import hashlib
import http.server
import io
import math
import threading
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image

from yolojax.data import classify, classify_augment as A
from yolojax.data.classify import check_cls_dataset, cls_index
from yolojax.data.dataset_yaml import DatasetError
from yolojax.data.synthetic import NAMES, make_shapes_cls_dataset


def _png(seed: int, size: int = 16) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _layout(root, splits=("train", "val"), classes=("cat", "ant", "bee"), n=2):
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / c / f"{i}.png").write_bytes(_png(hash((split, c, i)) % 1000))
    return root


# ---------------------------------------------------------------- dataset folders


def test_layout_names_sorted_and_index(tmp_path):
    root = _layout(tmp_path / "ds")
    d = check_cls_dataset(root)
    assert d["names"] == {0: "ant", 1: "bee", 2: "cat"} and d["nc"] == 3
    assert d["train"] == root / "train" and d["val"] == root / "val" and d["test"] == root / "val"
    idx = cls_index(d["val"], d["names"])
    assert len(idx) == 6 and idx.counts == {"found": 6, "corrupt": 0}
    assert [(p.split("/")[-2], k) for p, k in idx.samples] == [("ant", 0)] * 2 + [("bee", 1)] * 2 + [("cat", 2)] * 2


def test_test_split_stands_in_for_missing_val(tmp_path):
    root = _layout(tmp_path / "ds", splits=("train", "test"))
    d = check_cls_dataset(root)
    assert d["val"] == root / "test" and d["test"] == root / "test"


def test_val_class_ids_come_from_train(tmp_path):
    root = _layout(tmp_path / "ds")
    (root / "val" / "ant").rename(tmp_path / "gone")  # val lacks a class: ids must not shift
    d = check_cls_dataset(root)
    assert sorted({k for _, k in cls_index(d["val"], d["names"]).samples}) == [1, 2]


@pytest.mark.parametrize("case, needle", [
    ("missing", "no such folder"), ("no_train", "has no train/ folder"), ("no_val", "has no val/"),
    ("file", "no such folder"), ("no_classes", "has no class sub-folders")])
def test_bad_layouts_are_one_line_errors(tmp_path, monkeypatch, case, needle):
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(tmp_path / "datasets"))
    root = tmp_path / "ds"
    if case == "no_train":
        _layout(root, splits=("val",))
    elif case == "no_val":
        _layout(root, splits=("train",))
    elif case == "file":
        root = tmp_path / "data.txt"
        root.write_text("x")
    elif case == "no_classes":
        (root / "train").mkdir(parents=True)
        (root / "val").mkdir()
    with pytest.raises(DatasetError, match=needle) as e:
        check_cls_dataset(root, autodownload=False)
    assert "\n" not in str(e.value)


def test_empty_and_unknown_class_folders_are_named(tmp_path):
    root = _layout(tmp_path / "ds")
    d = check_cls_dataset(root)
    (root / "val" / "dog").mkdir()
    with pytest.raises(DatasetError, match="'dog' is not a class of the train split"):
        cls_index(d["val"], d["names"])
    (root / "val" / "dog").rmdir()
    for f in (root / "train" / "bee").iterdir():
        f.unlink()
    (root / "train" / "bee" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"class folder\(s\) bee hold no image"):
        cls_index(d["train"], d["names"])


def test_unreadable_images_are_skipped_named_and_counted(tmp_path, capsys, monkeypatch):
    root = _layout(tmp_path / "ds")
    bad = root / "train" / "cat" / "broken.png"
    bad.write_bytes(_png(0)[:40])
    tiny = root / "train" / "ant" / "tiny.png"
    tiny.write_bytes(cv2.imencode(".png", np.zeros((5, 20, 3), np.uint8))[1].tobytes())
    d = check_cls_dataset(root)
    idx = cls_index(d["train"], d["names"])
    assert idx.counts == {"found": 6, "corrupt": 2} and len(idx) == 6
    assert {str(bad), str(tiny)} == {m.split(": ")[0] for m in idx.msgs}
    assert "smaller than 10 px" in capsys.readouterr().out
    assert (root / "train.cache").is_file()
    with monkeypatch.context() as m:  # from the cache: the same verdicts, no image opened
        m.setattr(classify, "verify_cls_image", lambda *a: pytest.fail("verified again despite a fresh cache"))
        again = cls_index(d["train"], d["names"])
    assert again.samples == idx.samples and again.msgs == idx.msgs
    bad.write_bytes(_png(1))  # repaired: the cache is stale and the image is used
    assert cls_index(d["train"], d["names"]).counts == {"found": 7, "corrupt": 1}


def test_imagenet_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(tmp_path))
    with pytest.raises(DatasetError) as e:
        check_cls_dataset("imagenet")
    msg = str(e.value)
    assert "\n" not in msg and "image-net.org" in msg
    assert f"{tmp_path}/imagenet/train/<wnid>/" in msg and f"{tmp_path}/imagenet/val/<wnid>/" in msg


# ---------------------------------------------------------------- download by name


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """Release assets served from ``tmp_path/www`` on 127.0.0.1; datasets go to ``tmp_path/datasets``."""
    www = tmp_path / "www"
    (www / "v0.0.0").mkdir(parents=True)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    monkeypatch.setenv("YOLOJAX_ASSETS_URL", f"http://127.0.0.1:{srv.server_address[1]}")
    monkeypatch.setenv("YOLOJAX_DATASETS_DIR", str(tmp_path / "datasets"))
    yield www / "v0.0.0", requests
    srv.shutdown()
    srv.server_close()


def _zip(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for split, n in (("train", 3), ("val", 1)):
            for c in ("one", "two"):
                for i in range(n):
                    z.writestr(f"{name}/{split}/{c}/{i}.png", _png(i))
    return buf.getvalue()


def test_downloads_a_named_dataset_once(assets, tmp_path):
    folder, requests = assets
    (folder / "mnist160.zip").write_bytes(_zip("mnist160"))
    d = check_cls_dataset("mnist160")
    assert requests == ["/v0.0.0/mnist160.zip"]
    assert d["path"] == tmp_path / "datasets" / "mnist160" and d["names"] == {0: "one", 1: "two"}
    assert len(cls_index(d["train"], d["names"])) == 6
    assert not (tmp_path / "datasets" / "mnist160.zip").exists()  # the archive is removed after extraction
    check_cls_dataset("mnist160")
    assert len(requests) == 1  # present now: not fetched again


def test_failed_download_names_the_dataset(assets, tmp_path):
    _, requests = assets
    with pytest.raises(DatasetError, match=r"data=imagewoof160: no folder .* download failed .*404") as e:
        check_cls_dataset("imagewoof160")
    assert requests == ["/v0.0.0/imagewoof160.zip"] and "\n" not in str(e.value)
    assert not (tmp_path / "datasets" / "imagewoof160").exists()
    with pytest.raises(DatasetError, match="autodownload is off"):
        check_cls_dataset("cifar10", autodownload=False)


# ---------------------------------------------------------------- synthetic set


def _digest(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_synthetic_set_is_deterministic_and_valid(tmp_path):
    a = make_shapes_cls_dataset(tmp_path / "a", n_train=4, n_val=2)
    b = make_shapes_cls_dataset(tmp_path / "b", n_train=4, n_val=2)
    assert _digest(a) == _digest(b) and len(_digest(a)) == 6 * 6
    d = check_cls_dataset(a)
    assert d["names"] == dict(enumerate(sorted(NAMES)))
    for split, n in (("train", 4), ("val", 2)):
        idx = cls_index(d[split], d["names"])
        assert idx.counts["corrupt"] == 0 and np.bincount([k for _, k in idx.samples]).tolist() == [n] * 6
    assert cv2.imread(idx.samples[0][0]).shape == (64, 64, 3)


# ---------------------------------------------------------------- transforms


def test_val_transform_matches_a_hand_computed_resize_and_crop():
    x = np.arange(16)
    ramp = np.broadcast_to((2 * x + 3).astype(np.uint8)[None, :, None], (12, 16, 3)).copy()
    out = A.classify_val(ramp, 6)  # short side 12 -> 6, long 16 -> 8; crop 6 of 8 from column 1
    # a 2x bilinear shrink of a ramp samples it at source column 2k + 0.5 (kept columns are away from the edges)
    expected = np.broadcast_to((2 * (2 * np.arange(1, 7) + 0.5) + 3).astype(np.uint8)[None, :, None], (6, 6, 3))
    np.testing.assert_array_equal(out, expected)
    # shrinking averages the source footprint (bilinear as a tent filter of width 2 source pixels: weights 1/8,
    # 3/8, 3/8, 1/8 over columns 2k-1..2k+2), so stripes 0,0,200,200,... become 50,150,... (not 0,200,... sampled)
    stripes = np.broadcast_to(np.where(x // 2 % 2, 200, 0).astype(np.uint8)[None, :, None], (12, 16, 3))
    np.testing.assert_array_equal(A.classify_val(stripes, 6)[0, :, 0], [150, 50, 150, 50, 150, 50])
    img = np.random.default_rng(0).integers(0, 256, (10, 15, 3), dtype=np.uint8)
    np.testing.assert_array_equal(A.classify_val(img, 10), img[:, 2:12])  # (15 - 10) / 2 = 2.5 rounds to 2
    assert A.short_side_size((10, 15), 9) == (9, 13) and A.short_side_size((30, 7), 5) == (21, 5)
    assert A.classify_val(img, 8, crop_fraction=0.875).shape == (8, 8, 3)  # via a short side of floor(8/.875)=9


def _within(box, hw, scale, ratio):
    top, left, ch, cw = box
    h, w = hw
    inside = 0 <= top and 0 <= left and top + ch <= h and left + cw <= w and ch > 0 and cw > 0
    area_ok = (cw + 0.5) * (ch + 0.5) >= scale[0] * h * w and (cw - 0.5) * (ch - 0.5) <= scale[1] * h * w
    ratio_ok = (cw + 0.5) / (ch - 0.5) >= ratio[0] and (cw - 0.5) / max(ch + 0.5, 1e-9) <= ratio[1]
    return inside and area_ok and ratio_ok


@pytest.mark.parametrize("hw, scale", [((64, 64), (0.08, 1.0)), ((100, 60), (0.5, 1.0)), ((48, 200), (0.2, 0.6))])
def test_random_resized_crop_obeys_scale_and_ratio(hw, scale):
    rng = np.random.default_rng(1)
    boxes = [A.random_resized_crop_box(rng, hw, scale, A.RRC_RATIO) for _ in range(2000)]
    assert all(_within(b, hw, scale, A.RRC_RATIO) for b in boxes)
    fractions = np.array([b[2] * b[3] / (hw[0] * hw[1]) for b in boxes])
    assert fractions.min() < scale[0] + 0.1 * (scale[1] - scale[0])  # the whole range is reached
    tops, lefts = np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes])
    assert tops.max() > 0 and lefts.max() > 0


def test_random_resized_crop_falls_back_to_a_centred_crop():
    # a 10x100 strip cannot hold 90 % of its area at an aspect ratio <= 4/3: central crop w = round(10 * 4/3) = 13,
    # offset (100 - 13) // 2 = 43
    assert A.random_resized_crop_box(np.random.default_rng(0), (10, 100), (0.9, 1.0)) == (0, 43, 10, 13)
    assert A.random_resized_crop_box(np.random.default_rng(0), (100, 10), (0.9, 1.0)) == (43, 0, 13, 10)


_PLAIN = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), auto_augment=None, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, erasing=0.0)


@pytest.mark.parametrize("lr, ud", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.0, 0.0)])
def test_flips_are_exact(lr, ud):
    img = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = A.classify_train(img, np.random.default_rng(0), imgsz=32, **{**_PLAIN, "fliplr": lr, "flipud": ud})
    expected = img[::-1 if ud else 1, ::-1 if lr else 1]
    np.testing.assert_array_equal(out, expected)


def test_train_transform_is_deterministic_per_seed():
    img = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    kw = A.train_kwargs({"imgsz": 32})
    a = [A.classify_train(img, np.random.default_rng([7, 2, i]), **kw) for i in range(6)]
    b = [A.classify_train(img, np.random.default_rng([7, 2, i]), **kw) for i in range(6)]
    assert all(x.shape == (32, 32, 3) and x.dtype == np.uint8 and np.array_equal(x, y) for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) == 6


def test_erasing_probability_and_area():
    rng = np.random.default_rng(4)
    boxes = [A.random_erasing_box(rng, (64, 64), 0.4) for _ in range(3000)]
    hits = [b for b in boxes if b is not None]
    assert abs(len(hits) / 3000 - 0.4) < 4 * math.sqrt(0.24 / 3000)
    assert all(0 <= t and 0 <= lf and t + eh <= 64 and lf + ew <= 64 for t, lf, eh, ew in hits)
    areas = np.array([eh * ew / 64 ** 2 for _, _, eh, ew in hits])
    assert areas.min() >= 0.02 - 0.01 and areas.max() <= 0.33 + 0.02
    img = np.full((64, 64, 3), 200, np.uint8)
    out = A.classify_train(img, np.random.default_rng(5), imgsz=64, **{**_PLAIN, "fliplr": 0.0, "erasing": 1.0})
    zero = (out == 0).all(-1)
    rows, cols = np.nonzero(zero)
    assert zero.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1) and (out[~zero] == 200).all()  # one black rectangle
    assert 0.02 - 0.01 <= zero.mean() <= 0.33 + 0.02


def test_rand_augment_ops_by_hand():
    img = np.random.default_rng(6).integers(1, 256, (20, 30, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    shifted = np.asarray(A.apply_op(pil, "translate_x", 5.7))  # int(5.7) = 5 pixels right, black fill
    np.testing.assert_array_equal(shifted[:, 5:], img[:, :-5])
    assert (shifted[:, :5] == 0).all()
    down = np.asarray(A.apply_op(pil, "translate_y", -3.0))
    np.testing.assert_array_equal(down[:-3], img[3:])
    np.testing.assert_array_equal(np.asarray(A.apply_op(pil, "posterize", 4.0)), img & 0xF0)
    np.testing.assert_array_equal(np.asarray(A.apply_op(pil, "solarize", 128.0)), np.where(img >= 128, 255 - img, img))
    np.testing.assert_array_equal(np.asarray(A.apply_op(pil, "identity", 0.0)), img)
    np.testing.assert_array_equal(np.asarray(A.apply_op(pil, "invert", 0.0)), 255 - img)
    space = A.op_space((20, 30), 31)
    mags = {name: float(m[9]) for name, (m, _) in space.items() if len(m) > 1}
    assert len(A.RAND_AUGMENT_OPS) == 14 and mags["posterize"] == 7 and mags["rotate"] == pytest.approx(9.0)
    assert mags["translate_x"] == pytest.approx(150 / 331 * 30 * 0.3) and mags["solarize"] == pytest.approx(178.5)
    assert float(A.op_space((20, 30), 10)["posterize"][0][8]) == 4  # 8 - round(8 / 2.25)
    lin = A.linspace32(0.0, 0.9, 31)  # exact end points, within an ulp of the exact grid
    assert lin[0] == 0 and lin[-1] == np.float32(0.9) and (np.diff(lin) > 0).all()
    np.testing.assert_allclose(lin, np.arange(31) * 0.03, rtol=2e-7, atol=1e-9)


def test_auto_augment_policies_run_and_are_deterministic():
    img = np.random.default_rng(9).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    assert len(A.AUTO_AUGMENT_IMAGENET) == 25
    assert all(name in A.op_space((8, 8), 10) for sub in A.AUTO_AUGMENT_IMAGENET for name, _, _ in sub)
    for policy in ("randaugment", "autoaugment", "augmix"):
        kw = {**_PLAIN, "auto_augment": policy, "fliplr": 0.0}
        outs = [A.classify_train(img, np.random.default_rng([0, 0, i]), imgsz=40, **kw) for i in range(20)]
        again = [A.classify_train(img, np.random.default_rng([0, 0, i]), imgsz=40, **kw) for i in range(20)]
        assert all(np.array_equal(a, b) for a, b in zip(outs, again))
        assert sum(not np.array_equal(o, img) for o in outs) >= 10  # the policy changes most images


def test_augmix_blend_is_the_convex_combination_truncated_to_uint8():
    img = np.full((2, 3, 3), 100, np.uint8)
    chains = [np.zeros_like(img), np.full_like(img, 200), np.full_like(img, 50)]
    # 0.5 * 100 + 0.5 * (0.5 * 0 + 0.25 * 200 + 0.25 * 50) = 50 + 31.25 = 81.25 -> 81
    out = A.augmix_blend(img, chains, 0.5, np.array([0.5, 0.25, 0.25]))
    assert out.dtype == np.uint8 and out.shape == img.shape and (out == 81).all()
    # 0.2 * 100 + 0.8 * 200 = 180 with one chain; all weight on the original gives it back (up to float32)
    assert (A.augmix_blend(img, chains[1:2], 0.2, np.array([1.0])) >= 179).all()
    assert (A.augmix_blend(img, chains[1:2], 0.2, np.array([1.0])) <= 180).all()
    assert (A.augmix_blend(img, chains, 1.0, np.array([0.2, 0.3, 0.5])) == 100).all()
    ramp = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5, 1).repeat(3, -1)
    half = A.augmix_blend(ramp, [255 - ramp], 0.3, np.array([1.0]))  # 0.3 v + 0.7 (255 - v), truncated
    np.testing.assert_array_equal(half, np.floor(0.3 * ramp + 0.7 * (255.0 - ramp)).astype(np.uint8))


def test_augmix_is_deterministic_and_stays_between_its_chains():
    img = np.random.default_rng(11).integers(0, 256, (36, 44, 3), dtype=np.uint8)
    changed = 0
    for seed in range(12):
        out = A.aug_mix(img, np.random.default_rng([1, 0, seed]))
        assert out.shape == img.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, A.aug_mix(img, np.random.default_rng([1, 0, seed])))
        skip, weights, chains = A.augmix_draw(img, np.random.default_rng([1, 0, seed]))
        assert 0 <= skip <= 1 and weights.shape == (3,) and abs(weights.sum() - 1) < 1e-9 and (weights >= 0).all()
        assert len(chains) == 3 and all(c.shape == img.shape and c.dtype == np.uint8 for c in chains)
        np.testing.assert_array_equal(out, A.augmix_blend(img, chains, skip, weights))
        stack = np.stack([img, *chains]).astype(int)
        assert (out >= stack.min(0) - 1).all() and (out <= stack.max(0)).all()  # a convex mix, truncated
        changed += int(np.abs(out.astype(int) - img).mean() > 1)
    assert changed >= 9  # most draws visibly change the image
    with pytest.raises(ValueError, match="severity is 11; valid: an integer in"):
        A.aug_mix(img, np.random.default_rng(0), severity=11)


def test_augmix_ops_at_magnitude_zero_leave_the_image_and_severity_scales_the_change():
    img = np.random.default_rng(12).integers(0, 256, (24, 30, 3), dtype=np.uint8)
    pil = Image.fromarray(img)
    signed = [n for n in A.AUGMIX_OPS if A.op_space((24, 30), 10)[n][1]]
    assert len(A.AUGMIX_OPS) == 13 and len(signed) == 9
    for name in signed:  # bin 0 of every signed op: no shift, shear, rotation; enhance factor 1
        np.testing.assert_array_equal(np.asarray(A.apply_op(pil, name, 0.0)), img, err_msg=name)
    # a mid-grey multiple of 16 is also kept by posterize (4 bits), solarize (at 255), autocontrast and equalize:
    # at severity 1 every chain returns the image, and the mix is the image (float32 truncation may take 1 off)
    grey = np.full((16, 16, 3), 96, np.uint8)
    for seed in range(10):
        out = A.aug_mix(grey, np.random.default_rng(seed), severity=1)
        assert ((out == 96) | (out == 95)).all()
    space = A.op_space((30, 60), 10, max_translate=(10.0, 20.0), max_bits=4)
    assert [float(v) for v in space["posterize"][0]] == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]
    assert float(space["translate_x"][0][-1]) == 20 and float(space["translate_y"][0][-1]) == 10
    assert (np.asarray(A.apply_op(pil, "posterize", 0.0)) == 0).all()  # 0 bits kept: black
    change = {sev: np.mean([np.abs(A.aug_mix(img, np.random.default_rng(s), severity=sev).astype(float) - img)
                            .mean() for s in range(30)]) for sev in (1, 3, 10)}
    assert change[1] < 3 < change[3] < change[10]


def test_augmix_weights_are_beta_and_dirichlet_of_alpha():
    rng, tiny, n = np.random.default_rng(13), np.zeros((2, 2, 3), np.uint8), 500
    draws = [A.augmix_draw(tiny, rng) for _ in range(n)]
    skips, weights = np.array([d[0] for d in draws]), np.array([d[1] for d in draws])
    assert abs(skips.mean() - 0.5) < 4 * math.sqrt(1 / 12 / n)  # Beta(1, 1): uniform
    assert abs(skips.var() - 1 / 12) < 0.02
    assert (np.abs(weights.mean(0) - 1 / 3) < 4 * math.sqrt(1 / 18 / n)).all()  # Dirichlet(1, 1, 1) marginals
    assert np.allclose(weights.sum(1), 1)
    peaked = np.array([A.augmix_draw(tiny, rng, alpha=20.0)[0] for _ in range(200)])
    assert peaked.var() < skips.var() / 5  # Beta(20, 20) concentrates at 1/2


def test_augmix_runs_after_the_flips_in_place_of_colour_jitter():
    img = np.random.default_rng(14).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    kw = {**_PLAIN, "auto_augment": "augmix", "fliplr": 1.0, "hsv_v": 0.4, "hsv_s": 0.7}
    for seed in range(4):
        out = A.classify_train(img, np.random.default_rng(seed), imgsz=32, **kw)
        rng = np.random.default_rng(seed)
        A.random_resized_crop_box(rng, (32, 32), (1.0, 1.0), (1.0, 1.0))
        rng.random(), rng.random()  # the flips: left-right always, up-down never
        want = A.aug_mix(np.ascontiguousarray(img[:, ::-1]), rng)  # then AugMix, and no colour jitter
        np.testing.assert_array_equal(out, want)


def test_brightness_jitter_scales_pixels():
    img = np.random.default_rng(8).integers(0, 200, (16, 16, 3), dtype=np.uint8)
    for seed in range(5):
        out = A.color_jitter(img, np.random.default_rng(seed), brightness=0.4, contrast=0, saturation=0, hue=0)
        b = np.random.default_rng(seed)
        b.permutation(4)
        factor = b.uniform(0.6, 1.4)
        assert np.abs(out.astype(float) - np.clip(img * factor, 0, 255)).max() <= 1


def test_config_mapping_and_policies():
    kw = A.train_kwargs({"scale": 0.5, "imgsz": 64})
    assert kw["scale"] == (0.5, 1.0) and kw["auto_augment"] == "randaugment" and kw["erasing"] == 0.4
    with pytest.raises(ValueError, match="scale is 1.0"):
        A.train_kwargs({"scale": 1.0})
    assert A.train_kwargs({"auto_augment": "augmix"})["auto_augment"] == "augmix"
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="valid: randaugment, autoaugment, augmix"):
        A.classify_train(img, np.random.default_rng(0), imgsz=8, auto_augment="trivial")


def test_zip_url_and_local_zip(assets, tmp_path):
    folder, requests = assets
    (folder / "flowers.zip").write_bytes(_zip("flowers"))
    url = f"{os.environ['YOLOJAX_ASSETS_URL']}/v0.0.0/flowers.zip"
    d = check_cls_dataset(url)
    assert d["path"] == tmp_path / "datasets" / "flowers" and d["nc"] == 2 and requests == ["/v0.0.0/flowers.zip"]
    local = tmp_path / "bees.zip"
    local.write_bytes(_zip("bees"))
    d = check_cls_dataset(local)
    assert d["path"] == tmp_path / "datasets" / "bees" and len(cls_index(d["val"], d["names"])) == 2
    with pytest.raises(DatasetError, match="only .zip archives"):
        check_cls_dataset(url[:-4] + ".tar")


def test_shapes_name_builds_the_synthetic_set_once(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))
    d = check_cls_dataset("shapes")
    assert d["path"].parent == tmp_path / "cache" and d["nc"] == 6
    assert [len(cls_index(d[s], d["names"])) for s in ("train", "val")] == [240, 60]
    before = _digest(d["path"])
    assert check_cls_dataset("shapes")["path"] == d["path"] and _digest(d["path"]) == before
