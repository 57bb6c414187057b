"""Fetch the public corpora, verified by git blob id (the servers' sha256 cannot be known offline).

`python -m rnnexp.data` (what `make data` runs) calls `main`: it puts the tutorial's reddit CSV
into the data directory and says where to get the Penn Treebank, which has no single download URL.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from rnnexp.errors import UserError

DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class RemoteFile:
    """A public file the loaders know by name, where it comes from, and its git blob id."""

    filename: str
    url: str | None  # None: no single file to fetch; `where` says what to do instead
    git_blob: str
    where: str  # for error messages: where a person gets the file


REDDIT_URL = "https://raw.githubusercontent.com/dennybritz/rnn-tutorial-rnnlm/master/data/reddit-comments-2015-08.csv"
REDDIT = RemoteFile(
    "reddit-comments-2015-08.csv",
    REDDIT_URL,
    "5c116635bce430ed464bcfadc8cc202c26f0b8a5",
    REDDIT_URL,
)
PTB_WHERE = (
    "data/ptb.*.txt inside Mikolov's simple-examples.tgz "
    "(http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz, mirrored in many GitHub "
    "repositories)"
)
PTB = {
    "train": RemoteFile("ptb.train.txt", None, "04d78dc94771b5c04adc40b3be08bd8c82942e7f", PTB_WHERE),
    "valid": RemoteFile("ptb.valid.txt", None, "7b3d9d9fd705825715695328b2de872ffbc14a84", PTB_WHERE),
    "test": RemoteFile("ptb.test.txt", None, "8079cdf342f8d103e5647e1160a8fe3b58a213d5", PTB_WHERE),
}


def git_blob_id(data: bytes) -> str:
    """What `git hash-object` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fetch(remote: RemoteFile, destination: Path) -> Path:
    """Download `remote` to `destination`, refusing bytes whose git blob id differs."""
    if remote.url is None:
        raise UserError(f"{remote.filename} cannot be downloaded automatically; get it from {remote.where}.")
    try:
        with urlopen(remote.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read()
    except OSError as error:
        raise UserError(
            f"{remote.filename} is not at {destination} and downloading it failed ({error}); "
            f"download {remote.where} and put it at {destination}, or set dataset.path."
        ) from None
    blob = git_blob_id(data)
    if blob != remote.git_blob:
        raise UserError(
            f"The download of {remote.url} has git blob id {blob}, not the expected "
            f"{remote.git_blob}; download it yourself from {remote.where} and put it at {destination}."
        )
    write_atomically(destination, data)
    return destination
