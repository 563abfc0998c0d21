"""The model store: ladder models (and pretraining checkpoints used as model instances) published
where every node of a cluster can reach them, so that a trial on any node finds its model.

Each node keeps its own cache (`fsv.models.cache`, `$FSV_CACHE`); the store is a folder, `s3://`
or `gs://` URI holding the same directories under the same keys (`world-s-s0-<hash>`, or with a
`-step<N>` suffix for a checkpoint). Publishing uploads a model's files and then its marker, last,
so a reader never sees a half-published model; the marker carries the SHA-256 of every file, and a
fetch verifies every file against it before the model enters the node's cache (atomic rename), so
a damaged copy, local or published, is named and replaced, never loaded.

Rejected: a shared filesystem (NFS, EFS) mounted at `FSV_CACHE` on every node works too, but
nothing in a cluster launcher gives one by default, and the study's storage is already reachable
from every node (records and Ray Train checkpoints travel through it).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

from fsv.errors import ConfigError, FsvError
from fsv.models.cache import MARKER, mismatch, verify


class ModelStoreError(FsvError):
    """A published model that cannot be used (damaged, torn, unreadable)."""


class ModelStore:
    """Model directories under one URI (a local folder, `s3://…`, `gs://…`)."""

    def __init__(self, uri: str):
        from fsv.records import _fs

        self.uri = uri.rstrip("/") if "://" in uri else str(Path(uri).expanduser().resolve())
        self.fs, self.base = _fs(self.uri)

    def _path(self, key: str, name: str = "") -> str:
        return f"{self.base}/{key}" + (f"/{name}" if name else "")

    def marker(self, key: str) -> dict | None:
        """The published marker of `key` (None: not published, or torn)."""
        from pyarrow import fs

        if self.fs.get_file_info(self._path(key, MARKER)).type != fs.FileType.File:
            return None
        with self.fs.open_input_stream(self._path(key, MARKER)) as handle:
            try:
                return json.loads(handle.read().decode())
            except ValueError:
                return None

    def sizes_match(self, key: str, marker: dict) -> str | None:
        """A cheap check of a published copy: every file there with its marker's size."""
        for name, want in marker.get("files", {}).items():
            info = self.fs.get_file_info(self._path(key, name))
            if info.size != want["bytes"]:
                return f"{self.uri}/{key}/{name} has {info.size} bytes, its marker says {want['bytes']}"
        return None

    def publish(self, local: Path) -> None:
        """Upload a verified local model: files first, the marker last (any older marker removed first)."""
        from pyarrow import fs

        problem = verify(local)
        if problem:
            raise ModelStoreError(f"will not publish {local}: {problem}")
        key = Path(local).name
        self.fs.create_dir(self._path(key), recursive=True)
        if self.fs.get_file_info(self._path(key, MARKER)).type == fs.FileType.File:
            self.fs.delete_file(self._path(key, MARKER))
        local_fs = fs.LocalFileSystem()
        names = sorted(str(p.relative_to(local)) for p in Path(local).rglob("*") if p.is_file())
        for name in sorted(names, key=lambda n: n == MARKER):  # the marker last
            fs.copy_files(str(Path(local) / name), self._path(key, name), source_filesystem=local_fs,
                          destination_filesystem=self.fs)

    def fetch(self, key: str, dest: Path) -> Path:
        """Download `key` into `dest` (a node's cache), verified file by file against its marker."""
        from pyarrow import fs

        marker = self.marker(key)
        if marker is None or "files" not in marker:
            raise ModelStoreError(f"{self.uri}/{key} is not published (no complete {MARKER} with checksums)")
        staging = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.partial")
        staging.mkdir(parents=True)
        try:
            for name in [*marker["files"], MARKER]:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                fs.copy_files(self._path(key, name), str(staging / name), source_filesystem=self.fs,
                              destination_filesystem=fs.LocalFileSystem())
            problem = mismatch(staging, json.loads((staging / MARKER).read_text())["files"])
            if problem:
                raise ModelStoreError(f"published model {self.uri}/{key} is damaged: {problem}; "
                                      "`fsv run` re-publishes it from a good copy or pretrains it again")
            _install(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return dest

    def check_writable(self, field: str = "--models") -> None:
        """Refuse (ConfigError) a store this process cannot write: a probe file written and removed."""
        if "://" not in self.uri:  # a folder: its nearest existing ancestor must be a writable folder
            existing = next(p for p in [Path(self.uri), *Path(self.uri).parents] if p.exists())
            if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
                return
            raise ConfigError(field, self.uri, f"cannot write there ({existing} is not a writable folder); "
                              "accepted: a writable folder, or s3://BUCKET/… / gs://BUCKET/… these credentials can write")
        probe = self._path(f".fsv-write-probe-{uuid.uuid4().hex[:8]}")
        try:
            self.fs.create_dir(self.base, recursive=True)
            with self.fs.open_output_stream(probe) as out:
                out.write(b"probe")
            self.fs.delete_file(probe)
        except Exception as exc:  # noqa: BLE001 - whatever the filesystem says, it is the reason
            raise ConfigError(field, self.uri, f"cannot write there ({type(exc).__name__}: {str(exc)[:200]}); "
                              "accepted: a writable folder, or s3://BUCKET/… / gs://BUCKET/… these "
                              "credentials can write") from None


def _install(staging: Path, dest: Path) -> None:
    """Move a verified copy into place; a damaged `dest` is replaced, a good one (another trial on
    this node fetched it first) is kept."""
    if dest.exists() and verify(dest) is None:
        return
    if dest.exists():
        shutil.rmtree(dest, ignore_errors=True)
    try:
        os.rename(staging, dest)
    except OSError:
        if verify(dest) is not None:
            raise


def models_uri(storage: str, models: str | None) -> str:
    """Where a study's models are published: `--models`, else `STORAGE/_models` (beside the studies)."""
    if models:
        return models
    return f"{storage.rstrip('/')}/_models" if "://" in storage else str(Path(storage).expanduser().resolve() / "_models")


def local_model(path: Path, store_uri: str | None, label: str) -> Path:
    """The verified local copy of a model for a trial: the node's cache if it matches its marker,
    else fetched from the store; with no store, an error that names the model and what is wrong."""
    problem = verify(path)
    if problem is None:
        return path
    if store_uri is None:
        raise FsvError(f"{label} is not usable in this node's cache at {path}: {problem}; "
                       "`fsv run` pretrains it (or publishes it with --models) before the trials start")
    return ModelStore(store_uri).fetch(path.name, path)


def prepare(path: Path, store: ModelStore | None, say) -> bool:
    """Before the trials: make `path` (a model on this node) good locally and published. True when
    done; False when it must be pretrained. Damage on either side is named, then repaired."""
    problem = verify(path)
    if problem and path.exists():
        say(f"model {path.name} in this node's cache is damaged ({problem}); replacing it")
        shutil.rmtree(path, ignore_errors=True)
    if store is None:
        return problem is None
    published = store.marker(path.name)
    if problem is None:
        local = json.loads((path / MARKER).read_text())["files"]
        remote_problem = None if published is None else (
            "its checksums differ from this node's copy" if published.get("files") != local
            else store.sizes_match(path.name, published))
        if published is None or remote_problem:
            if remote_problem:
                say(f"published model {store.uri}/{path.name} is damaged ({remote_problem}); re-publishing it")
            store.publish(path)
        return True
    if published is None:
        return False
    try:
        store.fetch(path.name, path)
        return True
    except ModelStoreError as exc:
        say(str(exc))
        return False
