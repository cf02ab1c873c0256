"""Download public datasets (MovieLens) into a local folder; a clear error when offline."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from metarec.errors import DataError

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
# name -> (zip file, md5 published by GroupLens or None, folder inside the zip)
DOWNLOADS = {
    "ml-100k": ("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", "ml-100k"),
    "ml-1m": ("ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906", "ml-1m"),
    "ml-latest-small": ("ml-latest-small.zip", None, "ml-latest-small"),
    "ml-25m": ("ml-25m.zip", None, "ml-25m"),
}


def _fetch(url: str, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(
            f"cannot download {url}: {reason}. This machine may be offline; download the file "
            "elsewhere, unzip it and pass the folder with --data PATH"
        ) from e


def _safe_extract(archive: zipfile.ZipFile, dest: Path) -> None:
    root = dest.resolve()
    for member in archive.namelist():
        target = (dest / member).resolve()
        if not target.is_relative_to(root):
            raise DataError(f"refusing to extract {member!r}: it points outside {dest}")
    archive.extractall(dest)


def download(name: str, dest: Path | str, timeout: float = 30.0) -> Path:
    """Fetch dataset ``name`` into ``dest``; returns the dataset folder. Existing data is kept."""
    if name not in DOWNLOADS:
        raise DataError(f"no download known for {name!r}; known: {', '.join(DOWNLOADS)}")
    zip_name, md5, folder = DOWNLOADS[name]
    dest = Path(dest)
    target = dest / folder
    if target.is_dir() and any(target.iterdir()):
        return target
    payload = _fetch(GROUPLENS + zip_name, timeout)
    if md5 is not None and hashlib.md5(payload).hexdigest() != md5:
        raise DataError(f"{zip_name}: checksum mismatch; the download is corrupt, try again")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            _safe_extract(archive, dest)
    except zipfile.BadZipFile as e:
        raise DataError(f"{zip_name} is not a valid zip archive: {e}") from e
    return target
