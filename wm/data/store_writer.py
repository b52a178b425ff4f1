"""Writing an episode store: its layout (schema, chunking), creating it, appending whole episodes, and the zarr
LocalStore that makes each write durable.

`EpisodeStore` (wm.data.store) is the only caller; its module docstring states the contract these functions keep:
every data array is written before the commit marker `meta/episode_ends`, and in durable mode every file and
every changed directory is fsynced before the marker and again after it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr
from zarr.storage import LocalStore

from wm import __version__
from wm.data.lock import StoreLock
from wm.errors import WMError
from wm.outputs import require_empty_dir

SCHEMA_VERSION = 1
CHUNK_BYTES = 1 << 20  # aim for ~1 MiB chunks: a training window reads one or two rgb chunks
LOWDIM_CHUNK_ROWS = 4096


def default_chunk_rows(frame_shape: tuple[int, ...], dtype) -> int:
    """Rows per chunk: a power of two near CHUNK_BYTES for image-like keys, LOWDIM_CHUNK_ROWS for vectors."""
    frame_bytes = int(np.prod(frame_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if frame_bytes * LOWDIM_CHUNK_ROWS <= CHUNK_BYTES:
        return LOWDIM_CHUNK_ROWS
    rows = max(1, CHUNK_BYTES // max(frame_bytes, 1))
    return 1 << (rows.bit_length() - 1)


def normalise(obj):
    """JSON round trip so that tuples/numpy scalars compare equal to what was stored."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ------------------------------------------------------------------------------------ durable storage
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DurableLocalStore(LocalStore):
    """A zarr LocalStore whose writes survive power loss once `flush()` returns.

    Every file is written to a temporary file, fsynced, then renamed into place (so a crash leaves the old
    version or the new one, each complete on disk); the directories that gained entries are remembered and
    fsynced by `flush()`.
    """

    def __init__(self, root, *, read_only: bool = False):
        super().__init__(root, read_only=read_only)
        self.dirty: set[Path] = set()

    async def _set(self, key: str, value, exclusive: bool = False) -> None:
        if not self._is_open:
            await self._open()
        self._check_writable()
        await asyncio.to_thread(self._put, self.root / key, value.as_buffer_like(), exclusive)

    def _put(self, path: Path, data, exclusive: bool) -> None:
        existing = path.parent
        while not existing.exists():
            existing = existing.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        changed = path.parent  # every directory from the file's up to the first one that existed gains an entry
        while changed != existing:
            self.dirty.add(changed)
            changed = changed.parent
        self.dirty.add(existing)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.partial")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:  # zarr's set_if_not_exists: FileExistsError if `path` is already there
                os.link(tmp, path)
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def flush(self) -> None:
        """fsync every directory whose entries changed since the last flush."""
        for path in sorted(self.dirty, key=lambda p: -len(p.parts)):  # children before parents
            _fsync_dir(path)
        self.dirty.clear()


def zarr_store(root: Path, durable: bool, read_only: bool = False) -> LocalStore:
    """The zarr store under an episode store's directory: durable (writers only) or zarr's own LocalStore."""
    return DurableLocalStore(root) if durable else LocalStore(root, read_only=read_only)


def sync(group: zarr.Group) -> None:
    """Put everything written so far on stable storage if the group is durable; nothing otherwise."""
    if isinstance(group.store, DurableLocalStore):
        group.store.flush()


# ------------------------------------------------------------------------------------ creating
def create_layout(
    root: Path, keys: Mapping[str, Mapping], spec: Mapping, chunk_rows: Mapping[str, int] | None, durable: bool
) -> tuple[zarr.Group, StoreLock]:
    """Create the empty store at `root` (absent or an empty directory): `(group, its lock, held)`."""
    require_empty_dir(root, "an episode store", "choose a new path")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WMError(f"cannot create store at {root}: {e.strerror}; choose a writable path") from e
    lock = StoreLock(root)
    lock.acquire()
    group = zarr.open_group(store=zarr_store(root, durable), mode="a", zarr_format=3)  # holds only .lock
    data = group.create_group("data")
    for key, info in keys.items():
        shape = tuple(int(s) for s in info["shape"])
        rows = (chunk_rows or {}).get(key) or default_chunk_rows(shape, info["dtype"])
        data.create_array(key, shape=(0, *shape), chunks=(rows, *shape), dtype=info["dtype"], fill_value=0)
    meta = group.create_group("meta")
    meta.create_array("episode_ends", shape=(0,), chunks=(LOWDIM_CHUNK_ROWS,), dtype="int64", fill_value=-1)
    group.attrs.update(
        normalise(
            {
                "schema_version": SCHEMA_VERSION,
                "wm_version": __version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "keys": dict(keys),
                "spec": dict(spec),
                "collections": [],
            }
        )
    )
    if isinstance(group.store, DurableLocalStore):
        group.store.dirty.add(root.resolve().parent)  # the store directory's own entry
    sync(group)
    return group, lock


# ------------------------------------------------------------------------------------ appending
def _as_uint8(key: str, a: np.ndarray) -> np.ndarray:
    """Frames for a uint8 key: integers in [0, 255] as they are, floats in [0, 1] scaled by 255; else a WMError."""
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise WMError(
                f"episode {key!r} is float with values in [{low:g}, {high:g}]; the store keeps uint8, so pass "
                "floats in [0, 1] or uint8 in [0, 255] — nothing was written"
            )
        return np.round(a * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer) and a.size and (a.min() < 0 or a.max() > 255):
        raise WMError(
            f"episode {key!r} has values in [{a.min()}, {a.max()}], outside uint8 [0, 255]; nothing was written"
        )
    return a.astype(np.uint8)


def episode_arrays(keys: Mapping[str, Mapping], episode: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate one episode `{key: (L, *frame_shape)}` against a store's `keys`; returns it in the stored dtypes
    (uint8: `_as_uint8`). Anything else is a one-line WMError."""
    missing, extra = set(keys) - set(episode), set(episode) - set(keys)
    if missing or extra:
        raise WMError(f"episode keys differ from the store's: missing {sorted(missing)}, extra {sorted(extra)}")
    out, length = {}, None
    for k, info in keys.items():
        a = np.asarray(episode[k])
        if a.shape[1:] != tuple(info["shape"]):
            raise WMError(f"episode {k!r} frames have shape {a.shape[1:]}, the store expects {info['shape']}")
        if length is None:
            length = len(a)
        if len(a) != length or length == 0:
            raise WMError(f"episode arrays must share one non-zero length; {k!r} has {len(a)}, expected {length}")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise WMError(f"episode {k!r} contains NaN or inf; nothing was written — fix the source of {k!r}")
        out[k] = _as_uint8(k, a) if np.dtype(info["dtype"]) == np.uint8 else a.astype(info["dtype"], copy=False)
    return out


def write_episode(group: zarr.Group, arrays: Mapping[str, np.ndarray], start: int, index: int) -> int:
    """Write `arrays` `{key: (L, *frame_shape)}` at rows `[start, start + L)` of every data array, then commit
    them as episode `index` (its end in `meta/episode_ends`, written last); returns that end."""
    end = start + len(next(iter(arrays.values())))
    for k, a in arrays.items():
        arr = group[f"data/{k}"]
        arr.resize((end, *arr.shape[1:]))
        arr[start:end] = a
    sync(group)  # the episode's files are on stable storage before the marker that commits them
    ends = group["meta/episode_ends"]
    ends.resize((index + 1,))
    ends[index] = end  # the commit marker: until this chunk lands the episode does not exist
    sync(group)
    return end


def add_collection(group: zarr.Group, record: Mapping, replace_last: bool = False) -> None:
    """Append a provenance record to the group's `collections` attribute (or replace its last one)."""
    collections = group.attrs.asdict().get("collections", [])
    collections = (collections[:-1] if replace_last and collections else collections) + [normalise(dict(record))]
    group.attrs.update({"collections": collections})
    sync(group)
