"""Dataset download: http(s) zip archives only, never code from a YAML (spec §4.1, DESIGN "Bad input").

``download_zip(url, dest_dir) -> Path``: streams the archive with a tqdm progress bar into a temporary file in
``dest_dir`` (renamed atomically when complete, so an interrupted download never looks finished), checks *every*
entry before extracting anything (absolute paths and entries escaping ``dest_dir`` are refused: "zip-slip"),
extracts, and deletes the archive. An unreachable network gives one clear message instead of a traceback.

``run_download(spec, datasets_dir, where=...)``: what ``check_dataset`` calls with a YAML's ``download`` field, which
may be a URL, a list of URLs, or a list of ``{url: ..., dir: <subfolder of datasets_dir>}`` mappings. Anything else
(``bash ...`` commands, Python code) is refused with instructions to download by hand.
"""
from __future__ import annotations

import os
import pathlib
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Any

from tqdm import tqdm

from yolojax.data.dataset_yaml import DatasetError

_CHUNK = 1 << 16


def _is_url(s: Any) -> bool:
    return isinstance(s, str) and s.strip().lower().startswith(("http://", "https://")) and "\n" not in s.strip()


def _fetch(url: str, dest: pathlib.Path, timeout: float) -> None:
    """Stream ``url`` into ``dest`` via a temp file + atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) checked by caller
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                raise DatasetError(
                    f"Could not download {url}: {reason}. The network looks unreachable (or the URL is wrong). "
                    f"Download the file by hand and extract it into {dest.parent}, or retry when online.") from e
            with resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=f"Downloading {dest.name}", leave=False) as bar:
                    try:
                        while chunk := resp.read(_CHUNK):
                            f.write(chunk)
                            bar.update(len(chunk))
                    except (OSError, socket.timeout) as e:
                        raise DatasetError(f"Download of {url} was interrupted: {e}. Nothing was kept; retry.") from e
            if total is not None and f.tell() != total:
                raise DatasetError(f"Download of {url} is incomplete ({f.tell()} of {total} bytes). Nothing was "
                                   "kept; retry.")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def safe_extract(archive: str | os.PathLike, dest_dir: str | os.PathLike) -> list[pathlib.Path]:
    """Extract a zip into ``dest_dir`` after checking that no entry is absolute or escapes ``dest_dir``.

    Returns the top-level paths created. Raises ``DatasetError`` naming the archive and the bad entry; in that case
    nothing is extracted.
    """
    dest = pathlib.Path(dest_dir).resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise DatasetError(f"{archive} is not a valid zip archive ({e}). Delete it and download again.") from e
    with zf:
        members = zf.infolist()
        for m in members:
            name = m.filename
            if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or os.path.isabs(name):
                raise DatasetError(f"Refusing to extract {archive}: entry '{name}' has an absolute path. The "
                                   "archive is unsafe; nothing was extracted.")
            target = (dest / name).resolve()
            if target != dest and dest not in target.parents:
                raise DatasetError(f"Refusing to extract {archive}: entry '{name}' would be written outside "
                                   f"{dest}. The archive is unsafe; nothing was extracted.")
        zf.extractall(dest)
        tops = sorted({pathlib.PurePosixPath(m.filename).parts[0] for m in members if m.filename.strip("/")})
    return [dest / t for t in tops]


def download_zip(url: str, dest_dir: str | os.PathLike, *, timeout: float = 30.0, keep: bool = False) -> list[pathlib.Path]:
    """Download a zip from ``url`` and extract it into ``dest_dir`` (see module docstring); returns top-level paths."""
    if not _is_url(url):
        raise DatasetError(f"'{url}' is not an http(s) URL.")
    dest_dir = pathlib.Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = pathlib.PurePosixPath(urllib.request.urlparse(url).path).name or "download.zip"
    archive = dest_dir / name
    if not archive.exists():
        _fetch(url, archive, timeout)
    if not name.lower().endswith(".zip"):
        raise DatasetError(f"Downloaded {archive}, but only .zip archives are extracted automatically. Extract it by "
                           f"hand into {dest_dir}.")
    tops = safe_extract(archive, dest_dir)
    if not keep:
        archive.unlink()
    return tops


def run_download(spec: Any, datasets_dir: str | os.PathLike, *, where: str = "The dataset YAML") -> None:
    """Execute a YAML ``download`` field if (and only if) it is URLs; see module docstring."""
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    plan = []
    for it in items:
        if isinstance(it, dict) and _is_url(it.get("url")):
            plan.append((it["url"].strip(), pathlib.Path(datasets_dir) / str(it.get("dir", "."))))
        elif _is_url(it):
            plan.append((it.strip(), pathlib.Path(datasets_dir)))
        else:
            raise DatasetError(
                f"{where}: its 'download' field is not an http(s) archive URL (it starts with {str(it)[:60]!r}); "
                "yolojax never executes shell commands or Python code from a YAML. Download and extract the dataset "
                f"by hand into {datasets_dir} (so that the 'val' paths exist), or replace 'download' by a zip URL.")
    for url, dest in plan:
        print(f"Downloading {url} to {dest} ...")
        download_zip(url, dest)
