"""The task seam (``yolojax.engine.task.Task``): a task written outside the package - a one-layer classifier of
random coloured images, with its own batches, objective, validator and results columns - runs through the real
builder and loop (optimizer, checkpoints, results.csv, resume), with no change to the engine."""
from __future__ import annotations

import pathlib

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from yolojax.config import apply_overrides, check_config, default_config
from yolojax.engine.log import log
from yolojax.engine.loop import train
from yolojax.report.results import read_results_csv

NC, SIZE = 3, 32
COLUMNS = ("epoch", "time", "train/loss", "metrics/accuracy_top1", "val/loss", "lr/pg0", "lr/pg1", "lr/pg2")


def _images(n: int, seed: int):
    """Noise images whose class is the brightest channel: a linear model over the channel means separates them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NC, n).astype(np.int32)
    images = rng.integers(0, 120, (n, SIZE, SIZE, 3)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, ..., c] += 100
    return images, labels


class ToyClassifier(nn.Module):
    num_classes: int = NC

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, name="bn")(x.mean(axis=(1, 2)))
        return nn.Dense(self.num_classes, name="fc")(x)


def toy_objective(logits, batch, model):
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()
    return loss * batch["labels"].shape[0], {"loss": loss}


class ToyIterator:
    """Batches from (epoch, step) to the end of ``end_epoch - 1``; epoch ``e`` is a permutation seeded by ``e``."""

    def __init__(self, loader, epoch, step, end_epoch):
        self.loader, self.epoch, self.step, self.end_epoch = loader, epoch, step, end_epoch

    def __iter__(self):
        return self

    def __next__(self):
        if self.step >= self.loader.num_batches:
            self.epoch, self.step = self.epoch + 1, 0
        if self.epoch >= self.end_epoch:
            raise StopIteration
        order = np.random.default_rng(self.epoch).permutation(len(self.loader.labels))
        idx = order[self.step * self.loader.global_batch:(self.step + 1) * self.loader.global_batch]
        self.step += 1
        return {"images": self.loader.images[idx], "labels": self.loader.labels[idx]}

    def close(self):
        pass


class ToyLoader:
    workers, close_mosaic_epoch = 0, None

    def __init__(self, data, batch):
        self.images, self.labels = data
        self.global_batch = batch
        self.num_batches = len(self.labels) // batch

    def iterator(self, epoch, step, end_epoch):
        return ToyIterator(self, epoch, step, end_epoch)

    def close(self):
        pass


class ToyResult:
    def __init__(self, top1, loss):
        self.top1, self.loss = top1, loss
        self.table = [f"{'all':>22s}{top1:>11.3g}", f"{'val loss':>22s}{loss:>11.3g}"]
        self.speed = {"preprocess": 0.0, "inference": 0.0, "loss": 0.0, "postprocess": 0.0}
        self.phases = {}


class ToyTask:
    name = "classify"
    loss_names = ("loss",)
    columns = COLUMNS
    closes_mosaic = False

    def datasets(self, config):
        return {i: f"c{i}" for i in range(NC)}, _images(64, 1), _images(48, 2)

    def build_model(self, config, names, dtype):
        model = ToyClassifier(len(names))
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 3)))
        return model, jax.tree.map(np.asarray, dict(variables))

    def model_line(self, model):
        return "ToyClassifier: 1 layer"

    def save_weights(self, variables, path, names, model):
        pathlib.Path(path).write_bytes(flax.serialization.msgpack_serialize(variables))

    def load_weights(self, path):
        return flax.serialization.msgpack_restore(pathlib.Path(path).read_bytes())

    def auto_batch(self, config, devices, model, variables, train_dataset):
        return 8

    def train_loader(self, config, dataset, *, batch, workers, platform):
        return ToyLoader(dataset, batch)

    def val_loader(self, config, dataset, *, batch, workers):
        return ToyLoader(dataset, batch)

    def objective(self, config):
        return toy_objective

    def batch_shapes(self, batch):
        return {"images": batch["images"].shape}

    def loader_note(self, train_loader):
        return ""

    def train_labels(self, train_loader):
        return None

    def validator(self, config, model, val_loader, names, put):
        def validate(variables):
            labels = val_loader.labels
            logits = np.asarray(model.apply(variables, val_loader.images.astype(np.float32) / 255.0))
            loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean())
            return ToyResult(float(np.mean(logits.argmax(-1) == labels)), loss)

        return validate

    def val_row(self, result):
        return {"metrics/accuracy_top1": result.top1, "val/loss": result.loss}

    def fitness(self, result, config):
        return result.top1

    def final_validation(self, validator, variables, config, save_dir):
        result = validator(variables)
        for line in result.table:
            log(line)
        return result

    def batch_picture(self, batch, names):
        return None  # no train_batch pictures for this toy

    def validation_pictures(self, result, names, save_dir):
        return {}  # nor validation pictures


def _config(**kw):
    return check_config(apply_overrides(default_config(), dict(
        model="toy", data="toy", imgsz=SIZE, batch=8, nbs=8, epochs=2, workers=0, optimizer="SGD", lr0=0.01,
        warmup_epochs=0.0, plots=False, tensorboard=False, **kw)))


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_a_task_outside_the_package_trains_validates_and_resumes_through_the_loop(tmp_path, capsys):
    out = train(_config(), tmp_path / "a", ToyTask())
    rows = read_results_csv(tmp_path / "a" / "results.csv")
    header = (tmp_path / "a" / "results.csv").read_text().splitlines()[0]
    assert tuple(h.strip() for h in header.split(",")) == COLUMNS
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["train/loss"] < rows[0]["train/loss"]  # it learns
    best = max(r["metrics/accuracy_top1"] for r in rows)
    assert best > 0.6  # chance is 1/3
    assert out["metrics/accuracy_top1"] == pytest.approx(best, abs=1e-5)  # the final validation reads best.npz
    text = capsys.readouterr().out
    assert "ToyClassifier: 1 layer" in text and "compiled train step for images (8, 32, 32, 3)" in text
    assert ("%11s" * 5) % ("Epoch", "GPU_mem", "loss", "Instances", "Size") in text

    def stop_at_second_epoch(event):
        if event.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train(_config(), tmp_path / "b", ToyTask(), callbacks={"on_train_epoch_start": [stop_at_second_epoch]})
    assert [r["epoch"] for r in read_results_csv(tmp_path / "b" / "results.csv")] == [1]
    train(_config(resume=True), tmp_path / "b", ToyTask())
    resumed = read_results_csv(tmp_path / "b" / "results.csv")
    for a, b in zip(rows, resumed, strict=True):  # every value but the wall-clock time, exactly
        assert {k: v for k, v in a.items() if k != "time"} == {k: v for k, v in b.items() if k != "time"}
    weights = [ToyTask().load_weights(tmp_path / run / "weights" / "last.npz") for run in ("a", "b")]
    assert jax.tree.all(jax.tree.map(np.array_equal, *weights))
