"""The task seam: what differs between training a detector and a classifier, behind one small interface.

The engine (``build_run``, ``train``) is given a ``Task`` and never asks which one it runs; the entry points pick
it (``yolojax.tasks.task_for(config)``). Adding a task is writing one class with these members - no loop changes.

What the engine relies on:

- Batches. The train loader's batches are dicts of numpy arrays with one leading batch dimension; the train step
  reads ``images`` (uint8 (B, S, S, 3) RGB, or the device-rendering fields ``batch_images`` reads) and passes the
  whole device batch to the task's objective. The loop reads no other field: compile bookkeeping uses
  ``batch_shapes``; instances come from the step's ``instances`` item when the objective gives one, else the
  batch size.
- Loaders. ``train_loader.num_batches``, ``.iterator(epoch, step, end_epoch=)`` (exactly resumable, see
  ``yolojax.data.loader``), ``.close()``, ``.workers``, and ``.close_mosaic_epoch`` (None: no mosaic to close;
  the time budget re-plans it only when ``closes_mosaic``); ``val_loader.close()``.
- The objective. ``objective(config)`` is ``TrainHyper.objective``: ``f(outputs, batch, model) -> (total,
  items)``, a module-level (hashable) function, or None for the detection loss. ``items`` hold every name of
  ``loss_names``, averaged into the progress line and the ``train/<name>`` columns.
- Weights. ``save_weights`` writes last.npz / best.npz in the background; the final validation reads the best
  back with ``load_weights``.
- Validation. ``validator(...)`` returns a callable ``(variables) -> result`` with ``result.table`` (console
  lines; the first two are the summary), ``result.speed`` (ms per image: preprocess, inference, loss,
  postprocess) and ``result.phases`` (seconds per validation phase); ``val_row(result)`` gives its results.csv
  values and ``fitness(result, config)`` the number that picks best.npz and drives early stopping.
- Optional: ``auto_lr_classes(config, nc)``, the class count ``optimizer=auto``'s learning-rate fit reads (default:
  the dataset's ``nc``).
- Pictures (``plots=True``, process 0, drawn on the run's writer thread): ``batch_picture`` draws a train batch,
  ``validation_pictures`` the final validation; the loop picks which batches and when.
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np


class Task(Protocol):
    name: str  # "detect" | "classify": runs go to runs/<name>/train, train2, ...
    loss_names: tuple[str, ...]  # the step's loss items of the progress line and the train/<name> columns
    columns: tuple[str, ...]  # results.csv columns, in order: epoch, time, train/..., metrics/..., val/..., lr/pg0..2
    closes_mosaic: bool  # the train loader closes mosaic at close_mosaic_epoch (a time budget re-plans it)
    default_imgsz: int  # the image size of a run that gives none (imgsz=None): 640 detect, 224 classify

    def datasets(self, config) -> tuple[dict[int, str], Any, Any]:
        """(class names, train dataset, val dataset) of ``config.data`` (``single_cls``, ``classes`` applied)."""

    def build_model(self, config, names: Mapping[int, str], dtype) -> tuple[Any, dict]:
        """(Linen model, numpy variables) for ``config.model``: built from a YAML, or weights transferred.
        The variables are ``{"params", "batch_stats"}``; parameter leaves named ``bias``, or under ``bn``, form
        the optimizer's no-decay groups (``yolojax.engine.optim.param_group_labels``)."""

    def model_line(self, model) -> str:
        """The model's one-line summary printed before training (layers, parameters, GFLOPs)."""

    def save_weights(self, variables, path, names: Mapping[int, str], model) -> None:
        """Write ``variables`` (numpy) to ``path`` (last.npz, best.npz, ...), atomically."""

    def load_weights(self, path) -> dict:
        """The variables ``save_weights`` wrote to ``path``."""

    def auto_batch(self, config, devices, model, variables, train_dataset) -> int:
        """The global batch AutoBatch picks for ``batch=-1`` or a memory fraction."""

    def train_loader(self, config, dataset, *, batch: int, workers: int, platform: str) -> Any:
        """The train loader for the global ``batch`` (its ``global_batch`` is the batch the run trains with)."""

    def val_loader(self, config, dataset, *, batch: int, workers: int) -> Any:
        """The validation loader at ``batch`` images per batch: iterable (one pass); optionally with
        ``shape_batches()`` (the first batch of each image shape of a pass, what the validation step compiles for)."""

    def objective(self, config) -> Callable | None:
        """The train step's loss (``TrainHyper.objective``); None: the detection loss."""

    def batch_shapes(self, batch: Mapping[str, Any]) -> dict[str, tuple]:
        """What decides the train step's compiled program, by name, e.g. {"images": (B, H, W, 3), ...}."""

    def loader_note(self, train_loader) -> str:
        """Words after 'Using N dataloader workers' on where augmentation runs ("" for none)."""

    def train_labels(self, train_loader) -> Sequence[Any] | None:
        """Per-image (n, 5) rows ``class, x, y, w, h`` (normalised) of the training set for labels.jpg (None: none)."""

    def validator(self, config, model, val_loader, names: Mapping[int, str], put: Callable) -> Callable:
        """``(variables) -> result``; ``put`` places a host batch on the devices. Optionally a ``loader`` (the
        ``val_loader``, with ``shape_batches()``) and ``dispatch(variables, host batch)``, which runs the step on one
        batch without waiting: the loop then compiles the validation step while the train step compiles."""

    def val_row(self, result) -> dict[str, float]:
        """A validation result's values of the results.csv columns (metrics/..., val/...)."""

    def fitness(self, result, config) -> float:
        """The number to maximise (best.npz, early stopping)."""

    def final_validation(self, validator, variables, config, save_dir) -> Any:
        """Validate the final weights, printing the task's table and any extras (e.g. COCO JSON); the result."""

    def batch_picture(self, batch: Mapping[str, np.ndarray], names: Mapping[int, str]) -> np.ndarray | None:
        """RGB uint8 (H, W, 3) picture of a host train batch (numpy arrays, as the train loader gave it) for
        train_batchN.jpg and TensorBoard; None: the task draws none."""

    def validation_pictures(self, result, names: Mapping[int, str], save_dir: pathlib.Path) -> dict[str, np.ndarray]:
        """Write the task's pictures of a validation ``result`` (the final one) under ``save_dir``; returns
        {file name: RGB uint8 image} of those worth showing in TensorBoard (tagged by the name's stem)."""
