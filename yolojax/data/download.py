"""Downloads: single files and zip archives over http(s); never code from a YAML.

``fetch_file(url, dest)`` streams one file with a tqdm progress bar into a temporary file beside ``dest`` and renames
it into place only when it is complete (as many bytes as the server announced and, for ``.zip``/``.pt``, a readable
zip directory), so an interrupted or truncated download never leaves a file that looks finished. Failures raise
``DownloadError`` with the URL and the reason; callers add what the user should do.

``download_zip(url, dest_dir)`` fetches an archive (an archive already complete in ``dest_dir`` is not fetched
again), checks *every* entry before extracting anything (absolute paths and entries escaping ``dest_dir`` are
refused: "zip-slip"), extracts, and deletes the archive.

``run_download(spec, datasets_dir, root=..., convert=...)``: what ``check_dataset`` calls with a YAML's ``download``
field, which may be a URL, a list of URLs, or a list of ``{url: ..., dir: <subfolder of datasets_dir>}`` mappings,
followed by an optional named converter of ours (``convert: voc``). It is resumable: ``<root>/.yolojax-download``
lists the archives already extracted while a download is unfinished, so a rerun fetches only the others and then
converts again (converters are idempotent); the file is removed when everything is done. Anything else in
``download`` (``bash ...`` commands, Python code) is refused with instructions to download by hand.

URLs under Ultralytics' release assets (``ASSETS_URL``) are fetched from ``$YOLOJAX_ASSETS_URL`` instead when it is
set (a mirror, or a local server in tests): ``assets_url``.
"""
from __future__ import annotations

import http.client
import os
import pathlib
import socket
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Any, Callable

from tqdm import tqdm

from yolojax.data.errors import DatasetError
from yolojax.data.voc import convert_voc

_CHUNK = 1 << 16
ASSETS_URL = "https://github.com/ultralytics/assets/releases/download"  # + /<tag>/<file>
ASSETS_ENV = "YOLOJAX_ASSETS_URL"
PROGRESS_FILE = ".yolojax-download"


class DownloadError(OSError):
    """A download that failed (unreachable, refused, interrupted, truncated); nothing was kept."""


def assets_url(url: str) -> str:
    """``url`` with the Ultralytics release-assets prefix replaced by ``$YOLOJAX_ASSETS_URL`` when that is set."""
    mirror = os.environ.get(ASSETS_ENV, "").strip().rstrip("/")
    if mirror and url.startswith(ASSETS_URL + "/"):
        return mirror + url[len(ASSETS_URL):]
    return url


def _is_url(s: Any) -> bool:
    return isinstance(s, str) and s.strip().lower().startswith(("http://", "https://")) and "\n" not in s.strip()


def fetch_file(url: str, dest: str | os.PathLike, *, timeout: float = 30.0) -> pathlib.Path:
    """Stream ``url`` into ``dest`` (parent folders created) via a temporary file + atomic rename; returns ``dest``.

    Raises ``DownloadError`` (and leaves no file behind) if the server cannot be reached, answers with an HTTP
    error, drops the connection, sends fewer bytes than its Content-Length, or sends a ``.zip``/``.pt`` whose zip
    directory is unreadable (truncated without a Content-Length)."""
    dest = pathlib.Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                resp = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - http(s) checked by callers
            except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
                reason = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)  # HTTP: code too
                raise DownloadError(f"Could not download {url}: {reason}") from e
            with resp:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=f"Downloading {dest.name}", leave=False) as bar:
                    try:
                        while chunk := resp.read(_CHUNK):
                            f.write(chunk)
                            bar.update(len(chunk))
                    except (OSError, http.client.HTTPException) as e:
                        raise DownloadError(f"Download of {url} was interrupted ({e!r})") from e
            if total is not None and f.tell() != total:
                raise DownloadError(f"Download of {url} is incomplete ({f.tell()} of {total} bytes)")
        if dest.suffix.lower() in (".zip", ".pt") and not zipfile.is_zipfile(tmp):
            raise DownloadError(f"Download of {url} is not a complete zip archive (truncated, or an error page)")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


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
    if not name.lower().endswith(".zip"):
        raise DatasetError(f"{url}: only .zip archives are downloaded and extracted automatically. Download and "
                           f"extract it by hand into {dest_dir}.")
    archive = dest_dir / name
    if not archive.exists():  # only a complete download is ever renamed to this name
        source = assets_url(url)
        try:
            fetch_file(source, archive, timeout=timeout)
        except DownloadError as e:
            raise DatasetError(f"{e}. Nothing was kept. If the network looks unreachable (or the URL is wrong), "
                               f"download the file by hand and extract it into {dest_dir}, or retry when "
                               "online.") from e
    tops = safe_extract(archive, dest_dir)
    if not keep:
        archive.unlink()
    return tops


def _converter(name: Any, where: str) -> Callable[[pathlib.Path, dict[int, str]], Any]:
    """The converter named by a YAML's ``convert`` key: our own code, chosen from a fixed list."""
    if name == "voc":
        return convert_voc
    raise DatasetError(f"{where}: key 'convert' is {name!r}; the only converter is 'voc' (Pascal VOC XML to YOLO "
                       "labels). Remove the key, or convert the dataset by hand.")


def _read_progress(file: pathlib.Path) -> set[str]:
    return set(file.read_text(encoding="utf-8").split()) if file.is_file() else set()


def run_download(spec: Any, datasets_dir: str | os.PathLike, *, root: str | os.PathLike | None = None,
                 convert: Any = None, names: dict[int, str] | None = None, where: str = "The dataset YAML") -> None:
    """Execute a YAML ``download`` field if (and only if) it is URLs, then ``convert``; see module docstring.

    ``root`` is the dataset root (where the progress file lives; ``datasets_dir`` if None); ``names`` are the
    YAML's classes, passed to the converter."""
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
    converter = _converter(convert, where) if convert is not None else None
    root = pathlib.Path(root if root is not None else datasets_dir)
    root.mkdir(parents=True, exist_ok=True)
    progress = root / PROGRESS_FILE
    done = _read_progress(progress)
    progress.touch()  # present while unfinished: check_dataset resumes a dataset that has it
    for url, dest in plan:
        if url in done:
            print(f"Already extracted {url} into {dest}")
            continue
        print(f"Downloading {assets_url(url)} to {dest} ...")
        download_zip(url, dest)
        with open(progress, "a", encoding="utf-8") as f:
            f.write(url + "\n")
    if converter is not None:
        converter(root, dict(names or {}))
    progress.unlink()


def download_unfinished(root: str | os.PathLike) -> bool:
    """Whether a download into the dataset ``root`` was started and not finished (see ``run_download``)."""
    return (pathlib.Path(root) / PROGRESS_FILE).is_file()
