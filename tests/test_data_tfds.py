"""TFDS datasets (``data="tfds:voc/2007"``, ``"tfds:coco/2017"``) read through tensorflow-datasets, offline.

``tfds.testing.mock_data`` cannot serve this reader without TensorFlow: its fake examples must be *encoded* to honour
the ``SkipDecoding`` image decoder we use (decoding lazily is the point), and tfds encodes numpy images with TF. So the
fixtures are tiny datasets *prepared by tfds itself* (ArrayRecord, no TF needed): builders named ``voc``/``coco``
with the stock feature specs (VOC's copied from the stock builder; COCO's written out, since the stock COCO builder
needs TF to construct) and hand-written examples, whose boxes and pixels we know. The ``dev`` extra installs
tensorflow-datasets (without TensorFlow), so CI runs these tests; they are skipped only where it is missing.
The README's ``data=tfds:`` command runs here as written, on the prepared tiny VOC.
"""
from __future__ import annotations

import pathlib
import pickle
import shlex
import sys

import cv2
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from yolojax import augment  # noqa: E402
from yolojax.augment import augment_hyp, train_sample  # noqa: E402
from yolojax.data.dataset import DetectionDataset, val_sample  # noqa: E402
from yolojax.data.dataset_yaml import DatasetError, check_dataset  # noqa: E402
from yolojax.data.dataset import TfdsDetectionDataset  # noqa: E402
from yolojax.data.tfds import TfdsSpec, example_labels, import_tfds, parse_spec  # noqa: E402

COCO_NAMES = [f"coco_class_{i}" for i in range(80)]


def _png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)  # lossless: the decoded BGR image must equal `img`
    assert ok
    return buf.tobytes()


def _image(i: int, h: int, w: int) -> np.ndarray:
    """A BGR image whose three channels differ (so a channel swap is caught) and vary with position."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 3 + i) % 256, (yy * 5) % 256, np.full_like(xx, 40 * i % 256)], -1).astype(np.uint8)


# Per example: (h, w, [(ymin, xmin, ymax, xmax, label, dropped_flag), ...]).
VOC_EXAMPLES = {
    "train": [(40, 60, [(0.1, 0.2, 0.5, 0.6, 14, False), (0.0, 0.0, 1.0, 1.0, 3, True)]), (32, 48, [])],
    "validation": [(50, 30, [(0.25, 0.5, 0.75, 1.0, 19, False)])],
    "test": [(36, 64, [(0.2, 0.1, 0.4, 0.9, 0, False), (0.5, 0.5, 0.9, 0.7, 7, False)])],
}
COCO_EXAMPLES = {
    "train": [(30, 40, [(0.1, 0.1, 0.3, 0.2, 79, False), (0.4, 0.4, 0.8, 0.9, 0, True)])],
    "validation": [(44, 28, [(0.0, 0.25, 0.5, 0.75, 5, False)]), (20, 20, [])],
}


def _prepare(data_dir):
    voc_features = tfds.builder("voc/2007").info.features  # the stock VOC spec (constructing it needs no TF)

    class FakeVoc(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "voc"
        VERSION = tfds.core.Version("5.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2007")]

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=voc_features)

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in VOC_EXAMPLES}

        def _generate_examples(self, split):
            offset = {"train": 0, "validation": 10, "test": 20}[split]
            for i, (h, w, objs) in enumerate(VOC_EXAMPLES[split], offset):
                yield i, {"image": _png(_image(i, h, w)), "image/filename": f"{i:06d}.jpg",
                          "labels": [o[4] for o in objs], "labels_no_difficult": [o[4] for o in objs if not o[5]],
                          "objects": [{"bbox": tfds.features.BBox(*o[:4]), "label": o[4], "is_difficult": o[5],
                                       "is_truncated": False, "pose": 0} for o in objs]}

    class FakeCoco(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "coco"
        VERSION = tfds.core.Version("1.1.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="2017")]

        def _info(self):  # tfds' coco/2017 spec (object_detection/coco.py) with hypothetical class names
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="jpeg"), "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=COCO_NAMES), "is_crowd": np.bool_})}))

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in COCO_EXAMPLES}

        def _generate_examples(self, split):
            offset = {"train": 100, "validation": 200}[split]
            for i, (h, w, objs) in enumerate(COCO_EXAMPLES[split], offset):
                yield i, {"image": _png(_image(i, h, w)), "image/filename": f"{i:012d}.jpg", "image/id": i,
                          "objects": [{"id": 1000 * i + j, "area": 1, "bbox": tfds.features.BBox(*o[:4]),
                                       "label": o[4], "is_crowd": o[5]} for j, o in enumerate(objs)]}

    for b in (FakeVoc(config="2007", data_dir=data_dir), FakeCoco(config="2017", data_dir=data_dir)):
        b.download_and_prepare(file_format="array_record")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tfds_data")
    _prepare(str(d))
    return str(d)


@pytest.fixture
def tfds_env(data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)  # honoured at call time: check_dataset needs no data_dir

    def no_download(self, *a, **k):
        raise AssertionError(f"the test tried to download {self.name} (the fixture data was not found)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)  # never the network
    return data_dir


def _expected(table, splits, offset_of):
    """{filename: (image BGR, (n, 5) labels xywh)} computed by hand from the (ymin, xmin, ymax, xmax) boxes."""
    out = {}
    for split in splits:
        for i, (h, w, objs) in enumerate(table[split], offset_of[split]):
            rows = [(o[4], (o[1] + o[3]) / 2, (o[0] + o[2]) / 2, o[3] - o[1], o[2] - o[0]) for o in objs if not o[5]]
            out[i] = (_image(i, h, w), np.asarray(rows, np.float32).reshape(-1, 5))
    return out


def test_parse_spec():
    assert parse_spec("tfds:coco/2017") == TfdsSpec("coco/2017", "train", "validation")
    assert parse_spec("tfds:voc/2007") == TfdsSpec("voc/2007", "train+validation", "test")  # Ultralytics' VOC.yaml
    assert parse_spec("tfds:voc/2012") == TfdsSpec("voc/2012", "train", "validation")
    assert parse_spec("tfds:coco/2017:1.1.0") == TfdsSpec("coco/2017:1.1.0", "train", "validation")
    assert parse_spec("tfds:voc/2007:5.0.0:train[:50%],validation") == TfdsSpec("voc/2007:5.0.0", "train[:50%]",
                                                                                 "validation")
    assert parse_spec("tfds:voc/2007:train") == TfdsSpec("voc/2007", "train", "test")
    with pytest.raises(DatasetError, match="tfds:NAME"):
        parse_spec("tfds:coco 2017")


def test_example_labels_converts_and_rejects():
    objs = {"bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], np.float32), "label": np.array([3, 1]),
            "is_crowd": np.array([False, True])}
    np.testing.assert_allclose(example_labels(objs, 5), [[3, 0.4, 0.3, 0.4, 0.4]], atol=1e-6)
    assert example_labels({"bbox": np.zeros((0, 4)), "label": np.zeros(0)}, 5).shape == (0, 5)
    for bad, msg in [({"bbox": [[0.1, 0.1, 0.2, 0.2]], "label": [5]}, "class id 5"),
                     ({"bbox": [[0.1, 0.1, 1.2, 0.2]], "label": [0]}, r"outside \[0, 1\]"),
                     ({"bbox": [[0.5, 0.1, 0.2, 0.2]], "label": [0]}, "ymax < ymin"),
                     ({"bbox": [[0.1, 0.1, 0.2, 0.2]], "label": [0, 1]}, "1 boxes but 2 labels")]:
        with pytest.raises(ValueError, match=msg):
            example_labels(bad, 5)


def _check_against(ds, expected, imgsz_is_long_side=True):
    assert sorted(int(f.split(".")[0]) for f in ds.im_files) == sorted(expected)
    for k, f in enumerate(ds.im_files):
        img, lb = expected[int(f.split(".")[0])]
        np.testing.assert_allclose(ds.labels[k], lb, atol=1e-6)
        assert tuple(ds.shapes[k]) == img.shape[:2]
        got = ds._read(k)
        assert got.dtype == np.uint8 and got.shape[2] == 3
        np.testing.assert_array_equal(got, augment.resize_long_side(img, ds.imgsz))


def test_voc2007_through_check_dataset(tfds_env):
    info = check_dataset("tfds:voc/2007")
    names = tfds.builder("voc/2007").info.features["objects"]["label"].names
    assert info["names"] == dict(enumerate(names)) and info["nc"] == 20 and names[14] == "person"
    assert info["train"] == ["train+validation"] and info["val"] == ["test"] and info["test"] is None
    offsets = {"train": 0, "validation": 10, "test": 20}
    train = DetectionDataset.from_config(info, "train", imgsz=64, verbose=False)
    assert isinstance(train, TfdsDetectionDataset) and len(train) == 3
    _check_against(train, _expected(VOC_EXAMPLES, ["train", "validation"], offsets))  # difficult box dropped
    val = DetectionDataset.from_config("tfds:voc/2007", "val", imgsz=64, verbose=False)
    _check_against(val, _expected(VOC_EXAMPLES, ["test"], offsets))
    img, boxes, cls, (h0, w0) = val.load(0)  # pixel xyxy of the resized image, as for YOLO-folder datasets
    i = int(val.im_files[0].split(".")[0])
    exp = _expected(VOC_EXAMPLES, ["test"], offsets)[i][1]
    assert (h0, w0) == tuple(val.shapes[0]) and img.shape[:2] == (36, 64)
    np.testing.assert_allclose(boxes[:, 0], (exp[:, 1] - exp[:, 3] / 2) * 64, atol=1e-4)
    np.testing.assert_array_equal(cls, exp[:, 0].astype(np.int32))


def test_coco2017_without_tensorflow_reads_prepared_files(tfds_env):
    # The stock coco builder needs TF to construct; without TF the prepared copy is read from its files.
    info = check_dataset("tfds:coco/2017")
    assert info["names"] == dict(enumerate(COCO_NAMES)) and info["val"] == ["validation"]
    offsets = {"train": 100, "validation": 200}
    train = DetectionDataset.from_config(info, "train", imgsz=40, verbose=False)
    _check_against(train, _expected(COCO_EXAMPLES, ["train"], offsets))  # crowd box dropped
    assert train.labels[0].shape == (1, 5) and train.im_files == ["000000000100.jpg"]  # stem = COCO image id
    val = DetectionDataset.from_config(info, "val", imgsz=40, verbose=False)
    _check_against(val, _expected(COCO_EXAMPLES, ["validation"], offsets))


def test_pipelines_and_pickling(tfds_env):
    ds = DetectionDataset.from_config("tfds:voc/2007", "train", imgsz=64, verbose=False)
    clone = pickle.loads(pickle.dumps(ds))  # what Grain does to reach worker processes
    for k in range(len(ds)):
        np.testing.assert_array_equal(clone._read(k), ds._read(k))
    img, boxes, cls = train_sample(ds, 0, np.random.default_rng(0), augment_hyp(), mosaic=True)[:3]
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and len(boxes) == len(cls)
    vimg, vboxes, vcls, ratio_pad, ori = val_sample(ds, 0, (64, 64))
    assert vimg.shape == (64, 64, 3) and ori == tuple(ds.shapes[0])


def test_split_subsets_single_cls_and_fraction(tfds_env):
    info = check_dataset("tfds:voc/2007:train,validation")
    assert info["test"] == ["test"]
    ds = DetectionDataset.from_config(info, "train", imgsz=64, single_cls=True, verbose=False)
    assert len(ds) == 2 and all((lb[:, 0] == 0).all() for lb in ds.labels)
    assert len(DetectionDataset.from_config(info, "train", imgsz=64, fraction=0.5, verbose=False)) == 1


def test_bad_split_and_corrupt_record(tfds_env, capsys):
    info = check_dataset("tfds:voc/2007:nosuchsplit")
    with pytest.raises(DatasetError, match="nosuchsplit"):
        DetectionDataset.from_config(info, "train", verbose=False)
    # A record whose box is inconsistent is skipped, counted and named; the others are kept.
    good = {"image": _png(_image(1, 20, 30)), "image/filename": b"a.jpg",
            "objects": {"bbox": np.array([[0.1, 0.1, 0.2, 0.3]], np.float32), "label": np.array([1])}}
    bad = {"image": _png(_image(2, 20, 30)), "image/filename": b"b.jpg",
           "objects": {"bbox": np.array([[0.1, 0.1, 0.2, 0.3]], np.float32), "label": np.array([7])}}
    ds = TfdsDetectionDataset.from_source([good, bad], {0: "x", 1: "y"}, where="tfds:fake split 'train'", imgsz=32)
    out = capsys.readouterr().out
    assert ds.im_files == ["a.jpg"] and "1 corrupt" in out and "record 1 (b.jpg)" in out and "class id 7" in out


def test_missing_tfds_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes `import tensorflow_datasets` fail
    with pytest.raises(DatasetError, match=r"pip install 'yolojax\[tfds\]'"):
        import_tfds()
    with pytest.raises(DatasetError, match=r"pip install 'yolojax\[tfds\]'"):
        check_dataset("tfds:coco/2017")


@pytest.mark.slow
def test_readme_tfds_command_trains(tfds_env, tmp_path, monkeypatch, capsys):
    from yolojax.cli import main

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(t.strip() for t in readme.splitlines() if t.startswith("yolojax detect train data=tfds:"))
    argv = shlex.split(line)
    assert argv[:4] == ["yolojax", "detect", "train", "data=tfds:voc/2007"]
    monkeypatch.chdir(tmp_path)
    assert main(argv[1:]) == 0
    out = capsys.readouterr().out
    rows = (tmp_path / "runs" / "detect" / "train" / "results.csv").read_text().strip().splitlines()
    assert len(rows) == 2  # header + 1 epoch
    # validated on VOC2007 test (1 image, 2 boxes), trained on train+validation (3 images)
    all_rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["all"]]
    assert all_rows and all(r[1:3] == ["1", "2"] for r in all_rows), out


# ------------------------------------------------------- classification: tfds:imagenette, tfds:cifar10, imagenet2012
# Per split: (h, w, class id) of each example; the images are _image(i, h, w) with i counted from the split's offset.
CLS_EXAMPLES = {"imagenette": {"train": [(40, 60, 3), (32, 48, 0), (50, 30, 9)],
                               "validation": [(36, 64, 5), (30, 30, 3)]},
                "cifar10": {"train": [(32, 32, 1), (32, 32, 7)], "test": [(32, 32, 4)]}}
CLS_OFFSET = {"train": 0, "validation": 10, "test": 20}


def _cls_builder(name, config, version, features, examples):
    """A tfds builder named like the stock one, with its feature spec and our examples."""

    class Fake(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=config)] if config else []

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(s) for s in examples}

        def _generate_examples(self, split):
            for i, (h, w, label) in enumerate(examples[split], CLS_OFFSET[split]):
                ex = {"image": _png(_image(i, h, w)), "label": label}
                if "id" in features:
                    ex["id"] = f"{split}_{i}"
                yield i, ex

    Fake.name = name
    return Fake


@pytest.fixture(scope="module")
def cls_data_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tfds_cls"))
    for name, config, version in (("imagenette", "full-size-v2", "1.0.0"), ("cifar10", None, "3.0.2")):
        stock = tfds.builder(name, data_dir=d)
        builder = _cls_builder(name, config, version, stock.info.features, CLS_EXAMPLES[name])
        builder(**({"config": config} if config else {}), data_dir=d).download_and_prepare(file_format="array_record")
    return d


@pytest.fixture
def cls_tfds_env(cls_data_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", cls_data_dir)

    def no_download(self, *a, **k):
        raise AssertionError(f"the test tried to download {self.name} (the fixture data was not found)")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    return cls_data_dir


def test_cls_imagenette_and_cifar10_through_check_cls_dataset(cls_tfds_env, data_dir):
    from yolojax.data.classify import check_cls_dataset
    from yolojax.data.classify_tfds import check_tfds_cls_dataset

    info = check_cls_dataset("tfds:imagenette")
    assert (info["train"], info["val"], info["test"], info["nc"]) == ("train", "validation", None, 10)
    assert info["names"][0] == "n01440764" and info["tfds"]["name"] == "imagenette"  # WordNet ids, as the folders
    info = check_cls_dataset("tfds:cifar10")
    assert (info["train"], info["val"], info["test"], info["nc"]) == ("train", "test", None, 10)  # no validation split
    with pytest.raises(DatasetError, match="tfds:voc/2007' has no 'label' ClassLabel feature"):  # a detection set
        check_tfds_cls_dataset("tfds:voc/2007", data_dir=data_dir)


def test_cls_tfds_splits_feed_the_classification_loaders(cls_tfds_env):
    from yolojax.data.classify import check_cls_dataset
    from yolojax.data.classify_augment import classify_val
    from yolojax.data.classify_loader import ClassifyTrainLoader, ClassifyValLoader, open_cls_split

    for name, val_split in (("imagenette", "validation"), ("cifar10", "test")):
        info = check_cls_dataset(f"tfds:{name}")
        val = open_cls_split(info, "val", imgsz=24)
        want = [(_image(i, h, w)[..., ::-1], c) for i, (h, w, c) in enumerate(CLS_EXAMPLES[name][val_split],
                                                                              CLS_OFFSET[val_split])]
        assert len(val) == len(want)
        for k, (rgb, c) in enumerate(want):
            img, label = val.sample(k)
            assert label == c and np.array_equal(img, rgb)
        img, label = pickle.loads(pickle.dumps(val)).sample(0)  # Grain workers get a pickled copy
        assert label == want[0][1] and np.array_equal(img, want[0][0])
        (batch,) = list(ClassifyValLoader(val, batch_size=4))
        assert list(batch["image_valid"]) == [True] * len(want) + [False] * (4 - len(want))
        assert list(batch["labels"][: len(want)]) == [c for _, c in want]
        np.testing.assert_array_equal(batch["images"][0], classify_val(want[0][0], 24))
        train = open_cls_split(info, "train", imgsz=24)
        loader = ClassifyTrainLoader(train, batch_size=2, seed=0, hyp={"auto_augment": None})
        it = loader.iterator(0, 0, 1)
        got = np.concatenate([next(it)["labels"] for _ in range(loader.num_batches)])
        it.close()
        labels = np.array([c for *_, c in CLS_EXAMPLES[name]["train"]])
        np.testing.assert_array_equal(got, labels[loader.epoch_order(0)])
    ram = open_cls_split(info, "val", imgsz=24, cache="ram")  # every record decoded into memory
    assert len(ram.ram_cache) == len(val) and all(
        a[1] == b[1] and np.array_equal(a[0], b[0]) for a, b in zip(ram.ram_cache, (val.sample(i) for i in
                                                                                   range(len(val)))))
    with pytest.raises(DatasetError, match=r"cache='disk' is not supported for tfds:cifar10 split 'test': use "
                                           r"cache='ram' or no cache"):
        open_cls_split(info, "val", imgsz=24, cache="disk")


def test_cls_imagenet2012_says_where_to_put_the_archives(cls_tfds_env):
    from yolojax.data.classify import check_cls_dataset

    manual = pathlib.Path(cls_tfds_env) / "downloads" / "manual"
    want = (rf"tfds cannot download ImageNet .* download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into "
            rf"{manual} \(missing: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar\)")
    with pytest.raises(DatasetError, match=want):
        check_cls_dataset("tfds:imagenet2012")
