"""sha256 of an export's tables: a file's bytes, or a folder's files by relative path.

One scheme for both sides: `Export.sha256` is written with it and reward training's
`data_sha256` is read with it, so a run names the export it consumed, `hf` folders included.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_HASH_BLOCK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """sha256 of a folder: over the sorted lines `<relative path> <sha256 of file>`."""
    root = Path(path)
    lines = [
        f"{p.relative_to(root).as_posix()} {sha256_file(p)}\n"
        for p in sorted(root.rglob("*"))
        if p.is_file()
    ]
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or the tree hash of a folder (the `hf` format)."""
    return sha256_tree(path) if Path(path).is_dir() else sha256_file(path)
