"""Grain loaders: fixed shapes, determinism across runs and worker counts, exact mid-epoch resume through Orbax,
exhaustive validation batches; and the synthetic shapes dataset."""
from __future__ import annotations

import pathlib
import shutil

import numpy as np
import pytest

from yolojax.data.dataset import DetectionDataset
from yolojax.data.batching import BUCKETS, box_bucket, pad_boxes, usual_box_bucket
from yolojax.data.loader import TrainLoader, ValLoader


@pytest.fixture(scope="module")
def ds(fixtures_dir, tmp_path_factory):
    dst = tmp_path_factory.mktemp("loader") / "ds"
    shutil.copytree(fixtures_dir / "augment" / "dataset", dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return DetectionDataset.from_config(str(dst / "data.yaml"), "train", imgsz=64, verbose=False)


def _equal(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
                                    for x, y in zip(a, b))


def _block_gone(name: str, wait_s: float = 5.0) -> bool:
    """Whether the shared-memory block ``name`` is removed (within ``wait_s``: once a Grain loader has run in this
    process, Grain removes dropped blocks in a background thread)."""
    import os
    import time

    path = os.path.join("/dev/shm", name.lstrip("/"))
    end = time.monotonic() + wait_s
    while os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.01)
    return not os.path.exists(path)


def _record_blocks(monkeypatch) -> list[str]:
    """Names of the shared blocks the loader's transforms allocate from now on (in this test)."""
    from yolojax.data import transforms as transforms_module

    made, real = [], transforms_module.batch_array

    def recording(*args):
        arr = real(*args)
        made.append(arr.shm.name)
        return arr

    monkeypatch.setattr(transforms_module, "batch_array", recording)
    return made


def test_bucket_never_truncates():
    assert [box_bucket(n) for n in (0, 16, 17, 100, 513, 1500)] == [16, 16, 32, 128, 1024, 2048]
    boxes = [np.ones((17, 4), np.float32), np.zeros((0, 4), np.float32)]
    b, c, m = pad_boxes(boxes, [np.arange(17), np.zeros(0, int)])
    assert b.shape == (2, 32, 4) and m.sum() == 17 and (c[0, :17] == np.arange(17)).all() and not m[1].any()


def test_usual_box_bucket_hand_computed_and_loader_default(ds):
    five = [5] * 10  # every image has 5 boxes: a sample holds 5, a mosaic 20, a mosaic with mixup 40
    assert usual_box_bucket(five, 8, mosaic=0.0, mixup=0.0) == 16
    assert usual_box_bucket(five, 8, mosaic=1.0, mixup=0.0) == 32
    assert usual_box_bucket(five, 8, mosaic=1.0, mixup=1.0) == 64
    assert usual_box_bucket([300] * 4, 2, mosaic=1.0, mixup=0.0) == 2048  # beyond the list: multiples of 1024
    # one image in 100 has 60 boxes: a batch of 64 mosaic samples (256 tiles) usually holds one, a batch of 1 not
    rare = [60] + [1] * 99
    assert usual_box_bucket(rare, 64, mosaic=1.0, mixup=0.0) == 64
    assert usual_box_bucket(rare, 1, mosaic=1.0, mixup=0.0) == 16
    assert usual_box_bucket([], 8, mosaic=1.0, mixup=0.0) == 16
    # the loader's default buckets start there; explicit buckets are kept as given
    counts = [len(lb) for lb in ds.labels]
    loader = TrainLoader(ds, batch_size=8, seed=3)
    start = usual_box_bucket(counts, 8, mosaic=loader.hyp["mosaic"], mixup=loader.hyp["mixup"], seed=3)
    assert loader.buckets == tuple(b for b in BUCKETS if b >= start)
    assert all(b["mask"].shape[1] >= start for b in loader.epoch_iterator(0))
    assert TrainLoader(ds, batch_size=8, buckets=(16, 32)).buckets == (16, 32)


def test_batches_shapes_and_epoch_coverage(ds):
    loader = TrainLoader(ds, batch_size=5, seed=1)
    assert loader.num_batches == 4  # ceil(16 / 5), as Ultralytics
    order = loader.epoch_order(0)
    assert len(order) == 20 and sorted(order[:16]) == list(range(16))  # each image once, then 4 repeated
    batches = list(loader.epoch_iterator(0))
    assert len(batches) == 4
    for b in batches:
        assert b["images"].shape == (5, 64, 64, 3) and b["images"].dtype == np.uint8
        m = b["mask"].shape[1]
        assert b["boxes"].shape == (5, m, 4) and b["classes"].dtype == np.int32 and m in (16, 32)
        assert (b["boxes"][~b["mask"]] == 0).all() and (b["boxes"][b["mask"]][:, 2:] <= 64).all()
    assert not np.array_equal(loader.epoch_order(0), loader.epoch_order(1))  # reshuffled per epoch
    tiny = TrainLoader(ds, batch_size=64, seed=0)
    assert tiny.global_batch == 16 and tiny.num_batches == 1  # batch = min(batch, len(dataset))


def test_same_seed_same_batches_and_resume_without_workers(ds):
    a = list(TrainLoader(ds, batch_size=4, seed=7).iterator(0, 0, 2))
    b = list(TrainLoader(ds, batch_size=4, seed=7).iterator(0, 0, 2))
    assert _equal(a, b)
    c = list(TrainLoader(ds, batch_size=4, seed=8).epoch_iterator(0))
    assert not _equal(a[:4], c)
    loader = TrainLoader(ds, batch_size=4, seed=7, close_mosaic_epoch=1)
    it = loader.iterator(0, 0, 2)
    first = [next(it) for _ in range(3)]
    state = it.get_state()
    it.close()
    rest = list(loader.restore_iterator(state))
    full = list(loader.iterator(0, 0, 2))
    assert _equal(first + rest, full) and len(full) == 8
    # close_mosaic from epoch 1: a 64 px non-mosaic sample keeps ~the dataset's 1.7 boxes, mosaic ones more
    assert np.mean([b["mask"].sum() for b in full[4:]]) < np.mean([b["mask"].sum() for b in full[:4]])


@pytest.mark.slow
def test_workers_identical_and_orbax_resume_mid_epoch(ds, tmp_path):
    import grain.python  # noqa: F401  (registers grain.checkpoint)
    import grain
    import orbax.checkpoint as ocp

    ref = list(TrainLoader(ds, batch_size=3, seed=5, workers=0).epoch_iterator(2))
    loader = TrainLoader(ds, batch_size=3, seed=5, workers=2)
    it = loader.epoch_iterator(2)
    got = [next(it) for _ in range(2)]
    mngr = ocp.CheckpointManager(tmp_path / "ckpt")
    mngr.save(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    it.close()
    fresh = loader.epoch_iterator(0)  # a new iterator; the restore moves it to epoch 2, step 2
    restored = mngr.restore(2, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))["data"]
    rest = list(restored)
    restored.close()
    mngr.close()
    assert len(ref) == 6 and _equal(got + rest, ref)


@pytest.mark.slow
def test_val_loader_workers_serve_every_pass(ds):
    import multiprocessing

    ref = list(ValLoader(ds, batch_size=6, rect=True))
    loader = ValLoader(ds, batch_size=6, rect=True, workers=2)
    assert _equal(list(loader), ref)
    workers = {p.pid for p in multiprocessing.active_children()}
    assert workers
    assert _equal(list(loader), ref)  # the second pass: same batches from the same processes
    assert {p.pid for p in multiprocessing.active_children()} == workers
    first = next(iter(loader))  # a pass left after one batch: the next pass still starts at batch 0
    assert _equal([first], ref[:1]) and _equal(list(loader), ref)
    loader.close()
    assert not any(p.pid in workers for p in multiprocessing.active_children())


def test_val_loader_sees_every_image_once(ds):
    loader = ValLoader(ds, batch_size=6, rect=True)
    batches = list(loader)
    assert len(batches) == 3 and loader.shapes == [(64, 96)]
    idx = np.concatenate([b["index"][b["image_valid"]] for b in batches])
    assert sorted(idx) == list(range(16))
    last = batches[-1]
    assert list(last["image_valid"]) == [True] * 4 + [False] * 2
    assert (last["images"][4:] == 114).all() and not last["mask"][4:].any()
    n_boxes = sum(int(b["mask"].sum()) for b in batches)
    assert n_boxes == sum(len(lb) for lb in ds.labels)
    np.testing.assert_allclose(batches[0]["ratio_pad"][0], [[0.5, 0.5], [16, 8]])
    sq = list(ValLoader(ds, batch_size=16, rect=False))
    assert len(sq) == 1 and sq[0]["images"].shape == (16, 64, 64, 3)


def test_shapes_dataset_deterministic_and_bundled(tmp_path, monkeypatch):
    from yolojax.data.dataset_yaml import check_dataset
    from yolojax.data.synthetic import make_shapes_dataset, shapes_yaml

    a = make_shapes_dataset(tmp_path / "a", n_train=12, n_val=4, seed=3)
    b = make_shapes_dataset(tmp_path / "b", n_train=12, n_val=4, seed=3)
    files_a = sorted(p.relative_to(a.parent) for p in a.parent.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b.parent) for p in b.parent.rglob("*") if p.is_file())
    assert all((a.parent / f).read_bytes() == (b.parent / f).read_bytes() for f in files_a)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    train = DetectionDataset.from_config(str(a), "train", imgsz=64, verbose=False)
    assert len(train) == 12 and train.num_classes == 6 and len({tuple(s) for s in train.shapes}) > 1
    all_cls = np.concatenate(train.labels)[:, 0]
    assert len(all_cls) >= 12 and len(np.unique(all_cls)) >= 4
    monkeypatch.setenv("YOLOJAX_CACHE", str(tmp_path / "cache"))
    d = check_dataset("shapes")
    assert d["yaml_file"] == shapes_yaml() and d["nc"] == 6 and d["val"][0].is_dir()


def test_background_prefetch_same_batches_error_and_close(ds, tmp_path):
    """Without workers the loader runs a step ahead in a thread: the same batches as inline loading, an error in
    the thread reaches the consumer with its message, and close() stops the thread."""
    from yolojax.data.dataset import DatasetError
    from yolojax.data.prefetch import ThreadPrefetch

    inline = list(TrainLoader(ds, batch_size=4, seed=7, prefetch=0).iterator(0, 0, 2))
    ahead = TrainLoader(ds, batch_size=4, seed=7, prefetch=2).iterator(0, 0, 2)
    ahead.start_prefetch()
    assert isinstance(ahead._it, ThreadPrefetch)
    assert _equal(inline, list(ahead))
    val_inline = list(ValLoader(ds, batch_size=5, prefetch=0))
    assert _equal(val_inline, list(ValLoader(ds, batch_size=5, prefetch=2)))

    it = TrainLoader(ds, batch_size=4, seed=7, prefetch=2).iterator(0, 0, 2)
    next(it)
    thread = it._it._thread
    it.close()
    assert not thread.is_alive()

    root = tmp_path / "ds"
    shutil.copytree(pathlib.Path(ds.im_files[0]).parents[2], root)
    copy = DetectionDataset.from_config(str(root / "data.yaml"), "train", imgsz=64, verbose=False)
    victim = pathlib.Path(copy.im_files[len(copy) - 1])
    victim.unlink()  # deleted after verification
    with pytest.raises(DatasetError, match=victim.name):
        list(ValLoader(copy, batch_size=4, prefetch=2))


def test_batches_built_by_workers_are_made_in_shared_memory(ds):
    """A Grain worker builds its batch's images (or, for the device warp, its sources) directly in shared memory,
    which Grain then hands to the main process as it is instead of copying it into a new block; in the main process
    (no workers) the same batch is a plain array. Same values either way."""
    from grain.python import SharedMemoryArray

    from yolojax.data.loader import _TrainPlan

    assert not _TrainPlan(TrainLoader(ds, batch_size=8, seed=5, workers=0), 1, 0, 2)[0]["shared"]
    for warp, key in ((False, "images"), (True, "sources")):
        loader = TrainLoader(ds, batch_size=8, seed=5, workers=1, warp_on_device=warp)
        assert loader.warp_on_device == warp
        rec = _TrainPlan(loader, 1, 0, 2)[0]
        assert rec["shared"]
        built = loader.transform.map(rec)  # here, in this process, as a worker would
        plain = loader.transform.map(dict(rec, shared=False))
        shared, heap = isinstance(built[key], SharedMemoryArray), type(plain[key]) is np.ndarray
        same, name = _equal([built], [plain]), built[key].shm.name
        del built  # never handed over (nobody read its metadata): the block goes with the worker's array
        assert shared and heap and same
        assert _block_gone(name)


def test_a_worker_batch_that_fails_leaves_no_shared_memory_behind(ds, monkeypatch):
    """An image that cannot be read while a worker fills its shared block: the error propagates and the block is
    removed (nobody else would: the main process never receives it)."""
    from yolojax.data import loader as loader_module

    made = _record_blocks(monkeypatch)
    loader = TrainLoader(ds, batch_size=8, seed=5, workers=1, warp_on_device=True)
    rec = loader_module._TrainPlan(loader, 1, 0, 2)[0]

    def broken(i):
        raise OSError(f"cannot read image {i}")

    monkeypatch.setattr(loader.transform.ds, "load", broken)
    with pytest.raises(OSError, match="cannot read image"):
        loader.transform.map(rec)
    assert len(made) == 1
    assert _block_gone(made[0], wait_s=0)  # at once, while the traceback still holds the array


def test_val_batch_built_by_a_worker_is_handed_over_or_removed(ds, monkeypatch):
    """A validation batch built as a worker builds it: in a shared block, the same batch as in-process. Grain hands
    it over by reading its metadata - the block then outlives the worker's array, for the main process to remove;
    a block the worker drops without handing it over (its read-ahead when the loader stops), or one whose image
    cannot be read, is removed."""
    from grain.python import SharedMemoryArray

    from yolojax.data import transforms as transforms_module

    loader = ValLoader(ds, batch_size=6, rect=True, workers=1)
    ref = list(ValLoader(ds, batch_size=6, rect=True))[0]
    rec = dict(loader.records()[0], shared=True)
    built = loader.transform.map(rec)
    shared, same = isinstance(built["images"], SharedMemoryArray), _equal([built], [ref])
    name = built["images"].shm.name
    del built  # dropped without being handed over
    assert shared and same
    assert _block_gone(name)

    built = loader.transform.map(rec)
    meta = built["images"].metadata  # what Grain reads to hand it to the main process
    del built
    assert not _block_gone(meta.name, wait_s=0.5)
    received = SharedMemoryArray.from_metadata(meta)  # the main process's side (Grain's open_from_shm)
    received.unlink_on_del()
    assert np.array_equal(received, ref["images"])
    del received
    assert _block_gone(meta.name)

    def broken(*args, **kw):
        raise OSError("cannot read image")

    made = _record_blocks(monkeypatch)
    monkeypatch.setattr(transforms_module, "val_sample", broken)
    with pytest.raises(OSError, match="cannot read image") as err:
        loader.transform.map(rec)
    assert len(made) == 1 and _block_gone(made[0], wait_s=0)  # at once, while the traceback still holds the array
    del err


_FEED_TO_THE_END = r"""
import sys
from absl import flags
flags.FLAGS.mark_as_parsed()
from yolojax.data.dataset import DetectionDataset
from yolojax.data.loader import TrainLoader
from yolojax.engine.background import Feed


def main():
    ds = DetectionDataset.from_config(sys.argv[1], "train", imgsz=64, verbose=False)
    loader = TrainLoader(ds, batch_size=8, workers=1, process_index=1, process_count=2)
    feed = Feed(loader, 0, 0, 1, lambda b: b)
    for _ in range(loader.num_batches):
        next(feed)
    feed.close()  # then the process exits at once, as a trainer process that has nothing left to do


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_a_closed_feed_leaves_no_shared_block_to_the_exit(tmp_path, shapes_small):
    """A worker-fed trainer process that ends right after its last batch (the second process of a two-process run):
    closing the feed removes every shared block its batches used, so Python's resource tracker finds none left at
    exit (Grain's closed iterator keeps its read-ahead arrays in reference cycles until they are collected)."""
    import subprocess
    import sys

    from conftest import script_env

    script = tmp_path / "feed.py"  # a file: Grain's worker processes are spawned and import the main module
    script.write_text(_FEED_TO_THE_END)
    proc = subprocess.run([sys.executable, str(script), str(shapes_small)], env=script_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leaked shared_memory" not in proc.stderr, proc.stderr[-3000:]
