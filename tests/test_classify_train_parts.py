"""Classification training parts: loaders, objective, validator, predict (Ultralytics 8.2.103 semantics)."""
from __future__ import annotations

import math
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax.classify_predict import classify, preprocess
from yolojax.classify_val import ClassifyValidator, table_lines
from yolojax.data.classify import check_cls_dataset, cls_index
from yolojax.data.classify_augment import classify_train, classify_val, train_kwargs
from yolojax.data.classify_loader import ClassifyDataset, ClassifyTrainLoader, ClassifyValLoader
from yolojax.loss import ClassificationObjective
from yolojax.nn import YOLOv8Cls
from yolojax.nn.yolo import init_variables

TINY = (0.33, 0.0625, 1024)  # yolov8-cls at width 1/16
HYP = {"scale": 0.5, "fliplr": 0.5, "auto_augment": "randaugment", "erasing": 0.4}


@pytest.fixture(scope="module")
def info(tmp_path_factory):
    from yolojax.data.synthetic import shapes_cls_dir

    return check_cls_dataset(shapes_cls_dir(n_train=3, n_val=2, size=64, root=tmp_path_factory.mktemp("cls")))


@pytest.fixture(scope="module")
def train_ds(info):
    return ClassifyDataset.from_index(cls_index(info["train"], info["names"]), imgsz=48)


@pytest.fixture(scope="module")
def val_ds(info):
    return ClassifyDataset.from_index(cls_index(info["val"], info["names"]), imgsz=48)


def test_cache_ram_and_disk_feed_the_loaders_the_decoded_images(tmp_path):
    """cache="ram" holds every decode in memory (the image files may go); cache="disk" writes <stem>.npy beside each
    image (OpenCV's BGR decode, as Ultralytics' classification dataset saves it) and reads it from there. Both give
    the loaders the pixels the image files give."""
    import pickle
    import shutil

    import cv2

    from yolojax.data.classify_loader import open_cls_split
    from yolojax.data.synthetic import shapes_cls_dir

    root = shutil.copytree(shapes_cls_dir(n_train=2, n_val=1, size=32), tmp_path / "cls")
    info = check_cls_dataset(str(root))
    plain = open_cls_split(info, "train", imgsz=32)
    want = [plain.sample(i) for i in range(len(plain))]
    assert len(want) == 12 and plain.ram_cache is None and not plain.disk_cache
    disk = open_cls_split(info, "train", imgsz=32, cache="disk")
    npys = sorted(root.glob("train/*/*.npy"))
    assert len(npys) == 12 and disk.disk_cache
    for f in disk.files:
        np.testing.assert_array_equal(np.load(pathlib.Path(f).with_suffix(".npy")), cv2.imread(f))
    first = pathlib.Path(disk.files[0]).with_suffix(".npy")
    np.save(first, np.zeros((5, 7, 3), np.uint8))  # the .npy is what is read, not the image
    assert disk.sample(0)[0].shape == (5, 7, 3)
    first.unlink()
    ram = open_cls_split(info, "train", imgsz=32, cache="ram")
    assert len(ram.ram_cache) == 12
    shutil.rmtree(root / "train")  # the images live in memory now, also in a (pickled) Grain worker's copy
    for ds in (ram, pickle.loads(pickle.dumps(ram))):
        for i, (img, label) in enumerate(want):
            got, got_label = ds.sample(i)
            assert got_label == label and np.array_equal(got, img)


def test_the_split_key_picks_the_folder_validated_on(tmp_path):
    import shutil

    from yolojax.config import apply_overrides, check_config, default_config
    from yolojax.data.synthetic import shapes_cls_dir
    from yolojax.tasks.classify import ClassificationTask

    root = shutil.copytree(shapes_cls_dir(n_train=3, n_val=2, size=32), tmp_path / "cls")
    shutil.copytree(root / "val", root / "test")
    for f in root.glob("test/*/0001.png"):  # test/: one image a class
        f.unlink()
    sizes = {}
    for split in ("val", "test", "train"):
        config = check_config(apply_overrides(default_config(), {"task": "classify", "data": str(root), "imgsz": 32,
                                                                 "split": split}))
        _, train_ds, val_ds = ClassificationTask().datasets(config)
        sizes[split] = (len(train_ds), len(val_ds))
    assert sizes == {"val": (18, 12), "test": (18, 6), "train": (18, 18)}


def take(it, n):
    out = [next(it) for _ in range(n)]
    it.close()
    return out


def same(a, b):
    return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


# ------------------------------------------------------------------------------------------------------ objective
def test_objective_is_ultralytics_loss_and_hashable(fixtures_dir):
    ref = np.load(fixtures_dir / "cls" / "loss_cls.npz")
    obj = ClassificationObjective()
    total, items = jax.jit(obj, static_argnums=2)(jnp.asarray(ref["logits"]), {"labels": ref["labels"]}, None)
    np.testing.assert_allclose(float(total), float(ref["loss"]), rtol=1e-6)  # the mean: no batch-size factor
    assert set(items) == set(obj.loss_names) == {"loss"} and float(items["loss"]) == float(total)
    assert hash(obj) == hash(ClassificationObjective()) and obj == ClassificationObjective()


# ---------------------------------------------------------------------------------------------------- train loader
def test_train_batches_are_the_augmented_samples_of_a_shuffled_epoch(train_ds):
    n = len(train_ds)  # 6 classes x 3 images
    loader = ClassifyTrainLoader(train_ds, batch_size=8, seed=3, hyp=HYP)
    assert (loader.num_batches, loader.global_batch, loader.close_mosaic_epoch) == (math.ceil(n / 8), 8, None)
    batches = take(loader.iterator(0, 0, 2), 2 * loader.num_batches)
    order = loader.epoch_order(0)
    assert sorted(order[:n]) == list(range(n)) and list(order[n:]) == list(order[: len(order) - n])
    assert not np.array_equal(order, loader.epoch_order(1))  # reshuffled every epoch
    for b in batches:
        assert b["images"].shape == (8, 48, 48, 3) and b["images"].dtype == np.uint8
        assert b["labels"].dtype == np.int32 and b["labels"].shape == (8,)
    # the whole first epoch's labels, and one sample rebuilt by hand from its (seed, epoch, position) stream
    labels = np.concatenate([b["labels"] for b in batches[: loader.num_batches]])
    np.testing.assert_array_equal(labels, train_ds.labels[order])
    pos, epoch = 10, 1
    idx = loader.epoch_order(epoch)[pos]
    want = classify_train(train_ds.load(int(idx)), np.random.default_rng([3, epoch, pos]),
                          **{**train_kwargs(HYP), "imgsz": 48})
    np.testing.assert_array_equal(batches[loader.num_batches + pos // 8]["images"][pos % 8], want)


def test_train_resume_and_process_shards_are_bit_identical(train_ds):
    loader = ClassifyTrainLoader(train_ds, batch_size=6, seed=1, hyp=HYP)
    full = take(loader.iterator(0, 0, 2), 2 * loader.num_batches)
    it = loader.iterator(0, 0, 2)
    next(it), next(it), next(it), next(it)
    state = it.get_state()
    it.close()
    assert same(take(loader.restore_iterator(state), 2), full[4:6])  # (epoch 1, step 1) onwards
    assert same(take(loader.iterator(1, 1, 2), 2), full[4:6])
    halves = [take(ClassifyTrainLoader(train_ds, batch_size=6, seed=1, hyp=HYP, process_index=p,
                                       process_count=2).iterator(0, 0, 1), 3) for p in (0, 1)]
    for k in range(3):
        for key in ("images", "labels"):
            np.testing.assert_array_equal(np.concatenate([halves[0][k][key], halves[1][k][key]]), full[k][key])


def test_grain_worker_processes_build_the_same_batches(train_ds, val_ds):
    hyp = {**HYP, "auto_augment": None}
    ref = take(ClassifyTrainLoader(train_ds, batch_size=8, seed=2, hyp=hyp).iterator(0, 0, 1), 3)
    got = take(ClassifyTrainLoader(train_ds, batch_size=8, seed=2, hyp=hyp, workers=2).iterator(0, 0, 1), 3)
    assert same(got, ref)
    ref = list(ClassifyValLoader(val_ds, batch_size=5, crop_fraction=0.8))
    loader = ClassifyValLoader(val_ds, batch_size=5, crop_fraction=0.8, workers=2)
    try:
        assert same(list(loader), ref) and same(list(loader), ref)  # two passes served by the same worker set
    finally:
        loader.close()


def test_train_loader_refuses_bad_settings(train_ds):
    with pytest.raises(ValueError, match="auto_augment is 'trivial'; valid: randaugment, autoaugment, augmix"):
        ClassifyTrainLoader(train_ds, batch_size=4, hyp={"auto_augment": "trivial"})
    with pytest.raises(ValueError, match="does not divide over 4 processes"):
        ClassifyTrainLoader(train_ds, batch_size=6, process_count=4)


# ------------------------------------------------------------------------------------------------------ val loader
def test_val_batches_hold_every_image_once_padded_to_one_shape(val_ds):
    n = len(val_ds)  # 12
    loader = ClassifyValLoader(val_ds, batch_size=5, crop_fraction=0.8)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert all(b["images"].shape == (5, 48, 48, 3) for b in batches)
    valid = np.concatenate([b["image_valid"] for b in batches])
    assert valid.sum() == n and not valid[n:].any()
    np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches])[valid], np.arange(n))
    np.testing.assert_array_equal(np.concatenate([b["labels"] for b in batches])[valid], val_ds.labels)
    np.testing.assert_array_equal(batches[1]["images"][2], classify_val(val_ds.load(7), 48, 0.8))
    assert not batches[2]["images"][2:].any()  # padding: blank
    with pytest.raises(ValueError, match=r"crop_fraction=0 must be in \(0, 1\]"):
        ClassifyValLoader(val_ds, batch_size=4, crop_fraction=0)


# ------------------------------------------------------------------------------------------------------- validator
class TableModel(nn.Module):
    """Logits looked up by the sample id written in pixel (0, 0, 0): a model whose outputs are known by hand."""

    table: tuple
    num_classes: int = 6

    @nn.compact
    def __call__(self, x, train=False, decode=True):
        ids = jnp.round(x[:, 0, 0, 0] * 255).astype(jnp.int32)
        logits = jnp.asarray(self.table, jnp.float32)[ids]
        return logits if (train or not decode) else jax.nn.softmax(logits)


def test_validator_scores_top1_top5_loss_and_confusion_as_computed_by_hand():
    logits = np.array([
        [5, 1, 0, 0, 0, 0],  # label 0: top-1
        [0, 4, 3, 2, 1, 0.5],  # label 0: 6th of 6 -> miss
        [1, 2, 3, 4, 5, 6],  # label 1: 5th -> top-5
        [0, 0, 9, 0, 0, 0],  # label 2: top-1
        [0, 1, 0, 8, 0, 0],  # label 1: 2nd -> top-5
    ], np.float32)
    labels = np.array([0, 0, 1, 2, 1], np.int32)
    model = TableModel(table=tuple(map(tuple, logits.tolist())))
    images = np.zeros((6, 8, 8, 3), np.uint8)
    images[:5, 0, 0, 0] = np.arange(5)
    batches = [{"images": images[:3], "labels": labels[:3], "image_valid": np.ones(3, bool)},  # batches of 3
               {"images": images[3:6], "labels": np.r_[labels[3:], 0].astype(np.int32),
                "image_valid": np.array([True, True, False])}]
    res = ClassifyValidator(model, batches, {i: str(i) for i in range(6)})({})
    assert (res.top1, res.top5, res.seen) == (2 / 5, 4 / 5, 5) and res.fitness == pytest.approx(0.6)
    assert res.results_dict == {"metrics/accuracy_top1": 0.4, "metrics/accuracy_top5": 0.8}
    confusion = np.zeros((6, 6), int)
    for p, t in [(0, 0), (1, 0), (5, 1), (2, 2), (3, 1)]:
        confusion[p, t] += 1
    np.testing.assert_array_equal(res.confusion, confusion)
    assert res.table == ["               classes   top1_acc   top5_acc", "                   all        0.4        0.8"]
    assert table_lines(0.4, 0.8) == res.table
    assert set(res.speed) == {"preprocess", "inference", "loss", "postprocess"}
    assert set(res.phases) == {"val_data", "val_forward", "val_metrics"} and all(v >= 0 for v in res.phases.values())
    assert [f["batch"] is b for f, b in zip(res.first_batches, batches)] == [True, True]
    np.testing.assert_array_equal(res.first_batches[1]["top"][:2, 0], [2, 3])  # ranked classes of the plotted batch

    def ce(z, y):
        z = z - z.max(1, keepdims=True)
        return -(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(1)))

    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    v8 = (ce(probs[:3], labels[:3]).mean() + ce(probs[3:], labels[3:]).mean()) / 2  # the softmax's cross-entropy
    assert res.losses["val/loss"] == pytest.approx(round(float(v8), 5), abs=1e-5)
    cur = ClassifyValidator(model, batches, {}, compat="current")({})
    want = (ce(logits[:3], labels[:3]).mean() + ce(logits[3:], labels[3:]).mean()) / 2  # the logits'
    assert cur.losses["val/loss"] == pytest.approx(round(float(want), 5), abs=1e-5)


def test_validator_on_a_real_classifier_matches_its_probabilities(val_ds):
    from yolojax.metrics import top_k_accuracy

    model = YOLOv8Cls(num_classes=6, multiples=TINY)
    variables = init_variables(model, seed=1)
    loader = ClassifyValLoader(val_ds, batch_size=5)
    v = ClassifyValidator(model, loader, val_ds.names)
    res = v(variables)
    x = np.stack([classify_val(val_ds.load(i), 48) for i in range(len(val_ds))])
    probs = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32) / 255.0))
    want = top_k_accuracy(probs, val_ds.labels)
    assert (res.top1, res.top5, res.seen) == (pytest.approx(want["top1"]), pytest.approx(want["top5"]), 12)
    assert v.compiled_shapes == {(5, 48, 48, 3)} and res.confusion.sum() == 12


# --------------------------------------------------------------------------------------------------------- predict
def test_predict_is_the_centre_crop_through_the_eval_model(tmp_path):
    import cv2

    model = YOLOv8Cls(num_classes=7, multiples=TINY)
    variables = init_variables(model, seed=2)
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (48, 96, 3), np.uint8)  # BGR, as OpenCV reads it
    cv2.imwrite(str(tmp_path / "wide.png"), wide)
    out = classify(model, variables, [str(tmp_path / "wide.png"), wide, wide[:, ::-1].copy()], imgsz=32, batch=2)
    assert [p.path for p in out] == [str(tmp_path / "wide.png"), None, None] and out[0].orig_shape == (48, 96)
    x = preprocess(wide, 32)  # short side 48 -> 32, width 64, centre 32 columns; RGB
    np.testing.assert_array_equal(x, classify_val(wide[..., ::-1].copy(), 32))
    want = np.asarray(model.apply(variables, jnp.asarray(x[None], jnp.float32) / 255.0))[0]
    np.testing.assert_allclose(out[0].probs, want, atol=1e-6)
    np.testing.assert_allclose(out[1].probs, want, atol=1e-6)
    assert out[0].probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert list(out[0].top5) == list(np.argsort(-want)[:5]) and out[0].top1 == int(np.argmax(want))
    assert np.all(np.diff(out[0].top5conf) <= 0) and out[0].top1conf == pytest.approx(float(want.max()), abs=1e-6)
    # pixels outside the centre crop do not matter: the columns the crop keeps come from the middle of the resize
    edited = wide.copy()
    edited[:, :4] = 255
    edited[:, -4:] = 0
    np.testing.assert_allclose(classify(model, variables, edited, imgsz=32)[0].probs, want, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------- config
def test_classification_keys_have_ultralytics_defaults_rules_and_detection_warnings():
    from yolojax.config import ConfigError, default_config
    from yolojax.config.checks import check_values, inapplicable_warnings

    c = default_config().to_dict()
    assert {k: c[k] for k in ("dropout", "auto_augment", "erasing", "crop_fraction")} == {
        "dropout": 0.0, "auto_augment": "randaugment", "erasing": 0.4, "crop_fraction": 1.0}
    ok = check_values({"auto_augment": None, "crop_fraction": 0.875, "erasing": 0.0, "dropout": 0.2})
    assert ok == {"auto_augment": None, "crop_fraction": 0.875, "erasing": 0.0, "dropout": 0.2}
    for policy in ("autoaugment", "augmix"):
        assert check_values({"auto_augment": policy}) == {"auto_augment": policy}
    for key, bad, valid in [("crop_fraction", 0, r"in \(0, 1\]"), ("crop_fraction", 1.5, r"in \(0, 1\]"),
                            ("erasing", 1.2, r"in \[0, 1\]"), ("dropout", -0.1, r"in \[0, 1\]"),
                            ("auto_augment", "trivial", "one of randaugment, autoaugment, augmix or None")]:
        with pytest.raises(ConfigError, match=f"{key}={bad!r} is not valid: {key} must be .*{valid}"):
            check_values({key: bad})
    lines = inapplicable_warnings({**c, "erasing": 0.0, "crop_fraction": 0.9})
    assert [line.split("=")[0] for line in lines] == ["WARNING: erasing", "WARNING: crop_fraction"]
    assert all("classification argument" in line for line in lines)
    assert inapplicable_warnings({**c, "task": "classify", "erasing": 0.0, "crop_fraction": 0.9}) == []


# Keys Ultralytics' ClassificationTrainer (8.2.103) never reads, each set away from its default: what a detection
# argument list copied onto a classifier looks like.
DETECTION_SETTINGS = {"single_cls": True, "classes": [0, 2], "rect": True, "close_mosaic": 0, "multi_scale": True,
                      "save_json": True, "conf": 0.25, "iou": 0.5, "max_det": 100, "box": 5.0, "cls": 1.0, "dfl": 2.0,
                      "degrees": 10.0, "translate": 0.2, "shear": 2.0, "perspective": 0.001, "bgr": 0.1,
                      "mosaic": 0.5, "mixup": 0.1, "copy_paste": 0.3, "hsv_on_device": True,
                      "warp_on_device": False}
# Keys classification does read (its loader, optimizer, schedule and run settings), set away from their defaults.
CLASSIFICATION_SETTINGS = {"cache": "ram", "fliplr": 0.2, "flipud": 0.3, "scale": 0.3, "erasing": 0.1,
                           "auto_augment": "augmix", "dropout": 0.2, "crop_fraction": 0.9, "fraction": 0.5,
                           "cos_lr": True, "freeze": 3, "lr0": 0.02, "patience": 5, "bn_sync": False}


def test_detection_settings_on_a_classifier_warn_once_each_and_defaults_never():
    from yolojax.config import default_config
    from yolojax.config.checks import inapplicable_warnings

    c = {**default_config().to_dict(), "task": "classify"}
    assert inapplicable_warnings(c) == []  # the defaults of every key
    assert inapplicable_warnings({**c, **CLASSIFICATION_SETTINGS}) == []
    lines = inapplicable_warnings({**c, **DETECTION_SETTINGS})
    by_key = {line.split("=")[0].removeprefix("WARNING: "): line for line in lines}
    assert len(lines) == len(by_key) and by_key.keys() == DETECTION_SETTINGS.keys(), lines  # one line per key
    for key, value in DETECTION_SETTINGS.items():
        assert by_key[key].startswith(f"WARNING: {key}={value!r} has no effect on YOLOv8 classification training: "
                                      "classification does not use it ("), by_key[key]
    # the detection task reads all of them (copy_paste aside, which it warns about with its own reason)
    det = inapplicable_warnings({**c, **DETECTION_SETTINGS, "task": "detect"})
    assert [line.split("=")[0] for line in det] == ["WARNING: copy_paste"] and "segment" in det[0]
    # label_smoothing: neither task's 8.2.103 loss reads it, each says why in its own words
    (cls_line,) = inapplicable_warnings({**c, "label_smoothing": 0.1})
    (det_line,) = inapplicable_warnings({**c, "label_smoothing": 0.1, "task": "detect"})
    assert "classification does not use it" in cls_line and "cross-entropy" in cls_line
    assert "detection loss never reads it" in det_line


def test_hsv_gains_warn_on_a_classifier_only_where_an_auto_augment_policy_replaces_the_colour_jitter():
    from yolojax.config import default_config
    from yolojax.config.checks import inapplicable_warnings

    c = {**default_config().to_dict(), "task": "classify"}
    hsv = {"hsv_h": 0.1, "hsv_s": 0.5, "hsv_v": 0.2}
    lines = inapplicable_warnings({**c, **hsv})  # auto_augment="randaugment", the default
    assert [line.split("=")[0] for line in lines] == ["WARNING: hsv_h", "WARNING: hsv_s", "WARNING: hsv_v"]
    assert all("auto_augment='randaugment'" in line and "auto_augment=None" in line for line in lines)
    assert inapplicable_warnings({**c, **hsv, "auto_augment": None}) == []  # the jitter draws from them
    assert inapplicable_warnings({**c, **hsv, "task": "detect"}) == []  # detection's HSV augmentation


@pytest.mark.parametrize("name", ["imagenet", "imagenette"])
def test_dataset_configs_are_ultralytics_classification_runs(name):
    import importlib.util
    import pathlib

    from yolojax.config import default_config
    from yolojax.config.checks import check_values

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"cfg_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c, base = mod.get_config().to_dict(), default_config().to_dict()
    assert set(c) == set(base)
    assert (c["task"], c["data"], c["model"], c["imgsz"]) == ("classify", name, "yolov8n-cls.yaml", 224)
    changed = {k for k in c if c[k] != base[k]}
    assert changed == {"task", "data", "model", "imgsz"}  # otherwise Ultralytics' defaults (epochs 100 included)
    check_values({k: v for k, v in c.items() if k != "task"})  # task=classify: valid once the task is wired in


def test_validator_ranks_ties_to_the_lower_class_id():
    model = TableModel(table=((1.0,) * 6,))  # every sample: six equal scores
    batch = {"images": np.zeros((2, 8, 8, 3), np.uint8), "labels": np.array([4, 5], np.int32),
             "image_valid": np.ones(2, bool)}
    res = ClassifyValidator(model, [batch], {})({})
    assert (res.top1, res.top5) == (0.0, 0.5)  # ranked 0, 1, 2, 3, 4: label 4 is in the top 5, label 5 is not
    assert res.confusion[0].tolist() == [0, 0, 0, 0, 1, 1]


_SHARDED_SCRIPT = """
import os, sys, json
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from yolojax.classify_val import ClassifyValidator
from yolojax.loss import ClassificationObjective
from yolojax.nn import YOLOv8Cls
from yolojax.nn.yolo import init_variables
model = YOLOv8Cls(num_classes=6, multiples=(0.33, 0.0625, 1024))
variables = init_variables(model, seed=0)
rng = np.random.default_rng(0)
batches = [{"images": rng.integers(0, 256, (4, 32, 32, 3), np.uint8), "labels": rng.integers(0, 6, 4).astype(np.int32),
            "image_valid": np.array([True, True, True, k == 0])} for k in range(2)]
sharded = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
one, two = (ClassifyValidator(model, batches, {}, put=put)(variables)
            for put in (None, lambda b: jax.device_put(b, sharded)))
logits = rng.normal(size=(4, 6)).astype(np.float32)
f = jax.jit(jax.value_and_grad(lambda z, y: ClassificationObjective()(z, {"labels": y})[0]))
(l1, g1), (l2, g2) = f(logits, batches[0]["labels"]), f(*jax.device_put((logits, batches[0]["labels"]), sharded))
print(json.dumps({"devices": len(jax.devices()), "same": [one.top1 == two.top1, one.top5 == two.top5,
                  bool((one.confusion == two.confusion).all()),
                  abs(one.losses["val/loss"] - two.losses["val/loss"]) < 1e-5,
                  abs(float(l1) - float(l2)) < 1e-6, bool(np.allclose(g1, g2, atol=1e-7))], "seen": two.seen,
                  "grad_devices": len(g2.sharding.device_set)}))
"""


def test_validator_and_objective_on_batches_sharded_over_two_devices(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import script_env

    script = tmp_path / "sharded.py"
    script.write_text(_SHARDED_SCRIPT)
    env = script_env()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"devices": 2, "same": [True] * 6, "seen": 7, "grad_devices": 2}


@pytest.mark.parametrize("compat,lr_epoch1,lr_epoch10", [("v8", 9.996e-05, 7.7826e-05), ("current", 0.000311111,
                                                                                          0.000109)])
def test_optimizer_auto_learning_rates_as_ultralytics_logs_them(compat, lr_epoch1, lr_epoch10, tmp_path):
    """optimizer=auto on the built-in 6-class set (240 images, batch 16, nbs 64, 10 epochs): the lr columns that
    Ultralytics 8.2.103 (v8: its fit reads the fallback nc 10, lr0 0.000714, 100 warmup iterations) and 8.4.190
    (current: the dataset's nc 6, lr0 0.001, 45 warmup iterations) wrote after epochs 1 and 10 of that run."""
    from yolojax.config import apply_overrides, check_config, default_config
    from yolojax.engine.builder import build_run
    from yolojax.tasks import task_for

    config = check_config(apply_overrides(default_config(), dict(
        model="yolov8n-cls.yaml", data="shapes-cls", imgsz=32, batch=16, nbs=64, epochs=10, workers=0, plots=False,
        tensorboard=False, compat=compat)))
    run = build_run(config, tmp_path / "run", task_for(config))
    assert run.train_loader.num_batches == 15
    for ni, want in ((14, lr_epoch1), (9 * 15 + 14, lr_epoch10)):  # each epoch's last iteration
        lrs, _, _ = run.hyper.schedule.at(ni)
        for group in ("weight", "bias", "bn"):
            assert float(lrs[group]) == pytest.approx(want, rel=1e-4), (ni, group)
    run.val_loader.close()
