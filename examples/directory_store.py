"""A stockstore backend over a directory of files: the example of docs/extending.md.

Every unit is a file under ``<path>/<namespace>/<family>/units/``; a lock file
per family keeps writers apart, in this process and in any other that opens
the same path.  POSIX only (``fcntl.flock``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stockstore.backends.base import BaseStore, Family


class DirectoryStore(BaseStore):
    """Records as files: ``DirectoryStore("/var/lib/myapp/records")``.

    Processes that open the same path share the records.  Every other option
    (``namespace``, ``lifetime``, ``clock``) goes to `BaseStore`.
    """

    def __init__(self, path: str | os.PathLike[str], **options: Any) -> None:
        super().__init__(**options)
        self.root = Path(path) / _folder_name(self.namespace)

    def __repr__(self) -> str:
        return f"<DirectoryStore {str(self.root)!r}>"

    def _units(self, family: Family) -> Path:
        folder = self.root / _folder_name(family.name) / "units"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    # The four primitives: BaseStore builds every read, write, fill and listing on them.

    def _load(self, family: Family, names: Sequence[str]) -> list[bytes | None]:
        folder = self._units(family)
        units: list[bytes | None] = []
        for name in names:
            try:
                units.append((folder / name).read_bytes())
            except FileNotFoundError:
                units.append(None)
        return units

    def _save(self, family: Family, changes: Mapping[str, bytes | None]) -> None:
        folder = self._units(family)
        for name, unit in changes.items():
            path = folder / name
            if unit is None:
                path.unlink(missing_ok=True)
                continue
            temporary = folder / f"{name}.tmp"
            temporary.write_bytes(unit)
            os.replace(temporary, path)  # a reader sees the old unit or the new one, never half of one

    @contextlib.contextmanager
    def _locked(self, family: Family) -> Iterator[None]:
        # flock excludes every other open of the file: other processes and other threads alike.
        with open(self._units(family).parent / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def _names(self, family: Family) -> Iterator[str]:
        for path in self._units(family).iterdir():
            if path.suffix != ".tmp":  # unit names hold no dot
                yield path.name


def _folder_name(text: str) -> str:
    """A digest of a namespace or family name: a valid folder name whatever the name holds."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
