"""Resuming a run: which run directory ``resume`` names, and the configuration the resumed run continues with."""
from __future__ import annotations

import pathlib

from yolojax import config as cfgmod
from yolojax.engine.checkpoint import Checkpointer

# The keys a resumed run takes from the new command line; every other value is the interrupted run's own.
RESUME_OVERRIDES = ("device", "workers", "epochs", "patience", "val", "plots", "save_period", "time", "verbose")


def find_resume(config, workdir, task_name: str = "detect") -> tuple[pathlib.Path, Checkpointer]:
    """(run dir, Checkpointer) for ``resume=True`` (workdir, else the newest run) or a path."""
    target = config.resume
    if isinstance(target, str) and target not in ("True", "true", "1"):
        p = pathlib.Path(target)
        if p.is_file():  # weights/last.npz or similar: its run directory
            p = p.parent.parent if p.parent.name == "weights" else p.parent
        if p.name == "ckpt":
            p = p.parent.parent
        elif p.name == "weights":
            p = p.parent
        run = p
    elif workdir:
        run = pathlib.Path(workdir)
    else:
        root = pathlib.Path(config.get("project") or f"runs/{task_name}")
        runs = sorted(root.glob("*/weights/ckpt"), key=lambda d: d.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"resume=True but no checkpoint was found under {root}/*/weights/ckpt. Give the "
                                    f"run directory: --config.resume=runs/{task_name}/train")
        run = runs[-1].parent.parent
    ckdir = run / "weights" / "ckpt"
    if not ckdir.is_dir():
        raise FileNotFoundError(f"resume: {run} holds no checkpoint ({ckdir} is missing).")
    return run, Checkpointer(ckdir, asynchronous=True)


def resumed_config(config, meta: dict, run: pathlib.Path):
    """The configuration of the run ``meta`` (its checkpoint's metadata) stored, with ``config``'s values of
    ``RESUME_OVERRIDES`` that differ from the defaults (``epochs`` only to extend the run) and ``resume`` = ``run``.
    A finished run that is not extended raises ConfigError."""
    stored = dict(meta["config"])
    defaults = cfgmod.default_config()
    for key in RESUME_OVERRIDES:  # the run's own config wins, except these
        if key in ("epochs",) and config[key] <= stored[key]:
            continue
        if config[key] != defaults[key] or key == "device":
            stored[key] = config[key]
    finished = meta.get("finished", False)
    if finished and stored["epochs"] <= meta["config"]["epochs"]:
        raise cfgmod.ConfigError(f"{run}: training to {meta['config']['epochs']} epochs is finished, nothing to "
                                 f"resume. Start a new run, or extend this one with --config.resume={run} "
                                 f"--config.epochs=N (N > {meta['config']['epochs']}).")
    stored["resume"] = str(run)
    return cfgmod.apply_overrides(defaults, stored, source="checkpoint key")
