"""TensorBoard event files without TensorFlow: a thin writer over tensorboardX and a reader of its files.

The writer puts ``events.out.tfevents.*`` straight into the run directory, so ``tensorboard --logdir
runs/detect`` lists every run (train, train2, ...) as Ultralytics' TensorBoard callback does. The reader
parses the TFRecord framing (length, masked CRC32C of the length, payload, masked CRC32C of the payload)
and the ``Event`` protos with tensorboardX's own generated classes, so reading back needs no extra
dependency; it checks both CRCs, so a truncated or corrupted file is reported, not half-read.
"""
from __future__ import annotations

import pathlib
import struct
from typing import Iterator, Mapping

import cv2
import numpy as np


class TensorBoardLogger:
    """``TensorBoardLogger(log_dir)``: scalars and images of a run, through tensorboardX's public ``FileWriter``.

    Not thread-safe by itself: a run calls it from its writer thread only (``yolojax.report.writers.AsyncWriter``)."""

    def __init__(self, log_dir, *, flush_secs: int = 30):
        from tensorboardX import FileWriter

        self.log_dir = pathlib.Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = FileWriter(str(self.log_dir), flush_secs=flush_secs)

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        """One scalar per tag at ``step`` (one event); non-finite or non-numeric values are skipped.

        Tags are kept exactly (``metrics/mAP50(B)``, as in results.csv): tensorboardX's ``add_scalar`` would
        rewrite the parentheses to underscores, so the Summary proto is built here."""
        from tensorboardX.proto.summary_pb2 import Summary

        kept = []
        for tag, value in values.items():
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if np.isfinite(v):
                kept.append(Summary.Value(tag=str(tag), simple_value=v))
        if kept:
            self._writer.add_summary(Summary(value=kept), int(step))

    def image(self, tag: str, rgb: np.ndarray, step: int) -> None:
        """An RGB uint8 (H, W, 3) image (stored PNG-encoded)."""
        from tensorboardX.summary import image

        rgb = np.ascontiguousarray(np.asarray(rgb, np.uint8))
        self._writer.add_summary(image(tag, rgb, dataformats="HWC"), int(step))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


# ----------------------------------------------------------------------------------------------- reading


def _masked_crc(data: bytes) -> int:
    from tensorboardX.crc32c import crc32c

    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path) -> Iterator[bytes]:
    """The payloads of a TFRecord file; raises ``ValueError`` naming the file and offset on a bad record."""
    data = pathlib.Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {pos}")
        header = data[pos:pos + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[pos + 8:pos + 12])
        if _masked_crc(header) != length_crc:
            raise ValueError(f"{path}: bad length CRC at byte {pos}")
        start, end = pos + 12, pos + 12 + length
        if end + 4 > len(data):
            raise ValueError(f"{path}: truncated record at byte {pos}")
        payload = data[start:end]
        if _masked_crc(payload) != struct.unpack("<I", data[end:end + 4])[0]:
            raise ValueError(f"{path}: bad payload CRC at byte {pos}")
        yield payload
        pos = end + 4


def event_files(log_dir) -> list[pathlib.Path]:
    return sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*"))


def read_events(log_dir) -> list:
    """Every ``tensorboardX.proto.event_pb2.Event`` of the event files in ``log_dir`` (files in name order)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for f in event_files(log_dir):
        for payload in read_records(f):
            ev = Event()
            ev.ParseFromString(payload)
            events.append(ev)
    return events


def read_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` in write order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for ev in read_events(log_dir):
        for v in ev.summary.value:
            if v.WhichOneof("value") == "simple_value":
                out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out


def read_images(log_dir) -> dict[str, list[tuple[int, np.ndarray]]]:
    """``{tag: [(step, RGB uint8 (H, W, 3)), ...]}`` decoded from the stored PNGs."""
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for ev in read_events(log_dir):
        for v in ev.summary.value:
            if v.WhichOneof("value") == "image":
                buf = np.frombuffer(v.image.encoded_image_string, np.uint8)
                bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
                out.setdefault(v.tag, []).append((int(ev.step), bgr[..., ::-1].copy()))
    return out
