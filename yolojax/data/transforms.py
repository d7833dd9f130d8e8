"""The Grain transforms that build one batch from its record: a training batch (``train_sample`` per image, in the
loader's ``Layout``) and a validation batch (``val_sample`` per image). They run in Grain's worker processes (the
record says ``shared``: the largest array is built in shared memory, ``sources.batch_array``) or in the main one."""
from __future__ import annotations

import grain.python as grain
import numpy as np

from yolojax.augment.batch import Layout
from yolojax.augment.plan import PAD_VALUE
from yolojax.augment.sample import train_sample
from yolojax.data.batching import pad_boxes, resized
from yolojax.data.dataset import DetectionDataset, val_sample
from yolojax.data.sources import batch_array, removed_on_error


class BuildTrainBatch(grain.MapTransform):
    """A training batch (``yolojax.augment.batch``, in ``layout``) from its record ``{epoch, positions, indices,
    mosaic, shared, shape?, resize?}``: sample ``p`` of epoch ``e`` is drawn from ``default_rng([seed, e, p])``."""

    def __init__(self, ds: DetectionDataset, hyp: dict, seed: int, compat: str, buckets,
                 layout: Layout = Layout.IMAGES, source_offset: int = 0):
        self.ds, self.hyp, self.seed, self.compat, self.buckets = ds, hyp, seed, compat, tuple(buckets)
        self.layout = layout
        self.source_offset = source_offset  # where this process's images start in the global batch

    def map(self, rec):
        warp = self.layout is Layout.WARP
        sources = self._sources(rec) if warp else None
        # Mosaic partners come from this batch's own images when it has at least 8 (like Ultralytics' buffer of
        # recently loaded images: each image is decoded once), else from the whole dataset; the device warp always
        # draws them from the batch (whose images it ships).
        pool = rec["indices"] if warp or len(rec["indices"]) >= 8 else None
        samples = [train_sample(self.ds, int(idx), np.random.default_rng([self.seed, rec["epoch"], int(pos)]),
                                self.hyp, mosaic=rec["mosaic"], compat=self.compat, pool=pool, layout=self.layout,
                                slot=k if warp else None, shape=rec.get("shape"))
                   for k, (pos, idx) in enumerate(zip(rec["positions"], rec["indices"]))]
        b, c, m = pad_boxes([x.boxes for x in samples], [x.classes for x in samples], self.buckets)
        if warp:
            tiles = np.stack([x.warp[0] for x in samples])
            tiles[..., 0] = np.where(tiles[..., 0] >= 0, tiles[..., 0] + self.source_offset, -1)  # global positions
            batch = {"sources": sources, "warp_tiles": tiles, "warp_cols": np.stack([x.warp[1] for x in samples]),
                     "warp_rows": np.stack([x.warp[2] for x in samples]), "boxes": b, "classes": c, "mask": m}
            hw = sources.shape[1:3]
        else:
            first = samples[0].image
            images = batch_array((len(samples),) + first.shape, first.dtype, rec.get("shared", False))
            batch = {"images": np.stack([x.image for x in samples], out=images), "boxes": b, "classes": c, "mask": m}
            hw = first.shape[:2]
        if self.layout is not Layout.IMAGES:
            if samples[0].hsv_tables is not None:  # None: no gains, only the channel order
                batch["hsv_tables"] = np.stack([x.hsv_tables for x in samples])
            batch["hsv_to_rgb"] = np.array([x.to_rgb for x in samples], bool)
        if "resize" in rec:
            batch = resized(batch, hw, rec["resize"])
        return batch

    def _sources(self, rec) -> np.ndarray:
        """The device warp's sources: the batch's own decoded images (the mosaic partners' pool), (n, S, S, 3) BGR."""
        s, n = self.ds.imgsz, len(rec["indices"])
        sources = batch_array((n, s, s, 3), np.uint8, rec.get("shared", False))
        with removed_on_error(sources):
            for k, idx in enumerate(rec["indices"]):
                img = self.ds.load(int(idx))[0]
                h, w = img.shape[:2]
                sources[k, :h, :w] = img
                sources[k, h:] = 0  # never read; zeroed so a batch is a function of its seed
                sources[k, :h, w:] = 0
        return sources


class BuildValBatch(grain.MapTransform):
    """A validation batch from its record ``{indices, shape, shared?}``: each image letterboxed into the batch's
    shape (``val_sample``); index −1: a blank padding image, ``image_valid`` False."""

    def __init__(self, ds: DetectionDataset, compat: str, buckets):
        self.ds, self.compat, self.buckets = ds, compat, tuple(buckets)

    def map(self, rec):
        h, w = rec["shape"]
        n = len(rec["indices"])
        imgs = batch_array((n, h, w, 3), np.uint8, rec.get("shared", False))
        ratio_pad = np.zeros((n, 2, 2), np.float64)
        ori = np.zeros((n, 2), np.int64)
        boxes, classes = [], []
        with removed_on_error(imgs):
            imgs.fill(PAD_VALUE)
            for k, idx in enumerate(rec["indices"]):
                if idx < 0:  # padding image: blank, no boxes, image_valid False
                    boxes.append(np.zeros((0, 4), np.float32)), classes.append(np.zeros((0,), np.int32))
                    continue
                img, b, c, rp, o = val_sample(self.ds, int(idx), (h, w), compat=self.compat)
                imgs[k], ratio_pad[k], ori[k] = img, rp, o
                boxes.append(b), classes.append(c)
        b, c, m = pad_boxes(boxes, classes, self.buckets)
        idx = np.asarray(rec["indices"], np.int64)
        return {"images": imgs, "boxes": b, "classes": c, "mask": m, "image_valid": idx >= 0,
                "ratio_pad": ratio_pad, "ori_shape": ori, "index": idx}
