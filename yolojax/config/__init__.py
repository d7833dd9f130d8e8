"""The run's configuration: defaults (``configs/default.py``), the one merge of overrides (``apply_overrides``,
``check_config``), run directories, value normalisation. The value rules are in ``yolojax.config.checks``."""
from __future__ import annotations

import ast
import difflib
import importlib.util
import pathlib
from typing import Any, Mapping

import ml_collections
import yaml

from yolojax.config.checks import check_value, check_values
from yolojax.config.errors import ConfigError

REPO_CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def default_config() -> ml_collections.ConfigDict:
    """``configs/default.py``'s ``get_config()`` (also importable from an installed package)."""
    path = REPO_CONFIGS / "default.py"
    if not path.is_file():  # installed without the repo: the copy shipped in the package
        path = pathlib.Path(__file__).resolve().parents[1] / "cfg" / "default.py"
    spec = importlib.util.spec_from_file_location("yolojax_default_config", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config()


def closest_key(key: str, valid) -> str | None:
    match = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return match[0] if match else None


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any], *,
                    source: str = "argument") -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``overrides`` set; an unknown key fails naming the closest valid one.

    The result is not type-locked: Ultralytics' arguments take several types (``resume`` bool or path,
    ``pretrained`` bool or path, ``cache`` bool or 'ram', ``epochs`` possibly fractional in a YAML)."""
    base = config.to_dict()
    for key in overrides:
        if key not in base:
            near = closest_key(key, base)
            hint = f" Did you mean '{near}'?" if near else ""
            raise ConfigError(f"'{key}' is not a valid yolojax/Ultralytics train {source}.{hint} "
                              f"Run 'yolojax cfg' to list every key with its default.")
    return ml_collections.ConfigDict({**base, **dict(overrides)}, type_safe=False)


def smart_value(text: str) -> Any:
    """Ultralytics' value rules: none -> None, true/false -> bool, a Python literal, else the string."""
    low = text.lower()
    if low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return text


def split_flag_overrides(argv: list[str], prefix: str = "--config.") -> tuple[list[str], dict[str, Any]]:
    """``argv`` without its ``--config.KEY=VALUE`` / ``--config.KEY VALUE`` words (a bare ``--config.KEY`` means
    True), and those overrides with their values read by :func:`smart_value`, as the ``yolojax`` command reads
    ``key=value``: both spellings then go through the same merge and the same value checks."""
    rest: list[str] = []
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        word = argv[i]
        if not word.startswith(prefix):
            rest.append(word)
            i += 1
            continue
        key, eq, value = word[len(prefix):].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                value, i = argv[i + 1], i + 1
            else:
                value = "true"
        overrides[key] = smart_value(value)
        i += 1
    return rest, overrides


def load_cfg_file(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Apply ``cfg=<yaml>`` overrides (Ultralytics' cfg argument)."""
    if not config.get("cfg"):
        return config
    path = pathlib.Path(config.cfg)
    if not path.is_file():
        raise ConfigError(f"cfg={config.cfg!r}: file not found.")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of train arguments.")
    data.pop("cfg", None)
    config = apply_overrides(config, data, source=f"key in {path}")
    check_values(data, where=f" in {path}")  # a bad value is named with its file
    return config


def check_imgsz(imgsz: int, stride: int = 32) -> int:
    """Round up to a multiple of the max stride, as Ultralytics does (with a warning)."""
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    imgsz = int(imgsz)
    new = max(stride, -(-imgsz // stride) * stride)
    if new != imgsz:
        print(f"WARNING: imgsz={imgsz} must be a multiple of max stride {stride}, updating to {new}")
    return new


def parse_freeze(freeze) -> tuple[int, ...]:
    if freeze in (None, "", "None", False):
        return ()
    if isinstance(freeze, str):
        freeze = yaml.safe_load(freeze)
    if isinstance(freeze, int):
        return tuple(range(freeze))
    return tuple(int(i) for i in freeze)


def increment_path(path: pathlib.Path, exist_ok: bool = False) -> pathlib.Path:
    """runs/detect/train -> train2, train3 … (v8-era: no separator); never reuses a run silently."""
    path = pathlib.Path(path)
    if exist_ok or not path.exists():
        return path
    n = 2
    while (path.parent / f"{path.name}{n}").exists():
        n += 1
    return path.parent / f"{path.name}{n}"


def run_dir(config) -> pathlib.Path:
    project = pathlib.Path(config.get("project") or f"runs/{config.get('task') or 'detect'}")
    return increment_path(project / (config.get("name") or "train"), bool(config.get("exist_ok")))


def save_args_yaml(config, path: pathlib.Path) -> None:
    path.write_text(yaml.safe_dump(to_plain(config), sort_keys=False))


def to_plain(config) -> dict:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def check_config(config):
    """``config`` (a ConfigDict or mapping) with its ``cfg=`` YAML applied and every value checked and normalised:
    a new, not type-locked ConfigDict. Raises ConfigError naming the key, the value given and what is valid."""
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if "cfg" in values:
        values["cfg"] = check_value("cfg", values["cfg"])
    values = load_cfg_file(ml_collections.ConfigDict(values, type_safe=False)).to_dict()
    return ml_collections.ConfigDict(check_values(values), type_safe=False)
