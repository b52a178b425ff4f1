"""The episode store: a crash-safe zarr v3 group of time-major arrays.

Layout (readable with plain `zarr.open_group`):
  data/<key>          (N_frames, *frame_shape) for every key (rgb, proprio, action, state, ...)
  meta/episode_ends   (N_episodes,) int64, cumulative: episode i is rows [ends[i-1], ends[i])
  attrs               schema_version, spec (env / observation / action), keys, collections (who wrote what)

Invariant: `len(data/<key>) >= episode_ends[-1]` for every key, equal once a writer has opened the store.
An append writes the whole episode into every data array first and `episode_ends` last (the commit marker), and
zarr's LocalStore (>= 3.1.3) writes each chunk and metadata document to a temporary file renamed into place, so a
crash can only leave uncommitted rows past the last end, an end slot that was grown but never written (read back
as the fill value -1) and stray `*.partial` temporary files.

Readers never modify a store: they take no lock and see exactly the committed episodes, ignoring anything past
the last valid end. Only a writer (`open(mode="a")`, which takes the `StoreLock` that keeps a second writer out)
removes what an interrupted write left, and says so; `wm info --repair` does the same from the command line. An
index that is damaged rather than interrupted (an undecodable `episode_ends` chunk, ends that decrease, data
shorter than the ends) is a one-line `WMError` for readers and writers alike; `open(mode="a", repair=True)` (what
`wm info --repair` runs) keeps the episodes before the damage and drops the rest.

What each write mode survives:
  default   a process crash (exception, SIGKILL, OOM kill): at most the episode being appended is lost. The data
            may still sit in the OS page cache, so a power loss or kernel crash can lose or tear recent episodes.
  durable   (`durable=True`, `wm collect --durable`) also a power loss or OS crash: every file is fsynced before
            it is renamed into place, and the directories whose entries changed are fsynced before the commit
            marker is written and again after it, so an episode is on stable storage when `append_episode`
            returns. Cost, measured for a 64-px, 101-frame PointMaze episode on ext4 over a virtual disk: ~38
            fsyncs, +100..150 ms per episode (~35..60 ms without, ~140..200 ms with), under 2% of a 10 s robot
            episode: durable is the mode for robots; the default suits simulation, where a rerun is cheap.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
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
log = logging.getLogger("wm.data")


def default_chunk_rows(frame_shape: tuple[int, ...], dtype) -> int:
    """Rows per chunk: a power of two near CHUNK_BYTES for image-like keys, LOWDIM_CHUNK_ROWS for vectors."""
    frame_bytes = int(np.prod(frame_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if frame_bytes * LOWDIM_CHUNK_ROWS <= CHUNK_BYTES:
        return LOWDIM_CHUNK_ROWS
    rows = max(1, CHUNK_BYTES // max(frame_bytes, 1))
    return 1 << (rows.bit_length() - 1)


def _normalise(obj):
    """JSON round trip so that tuples/numpy scalars compare equal to what was stored."""
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


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


@dataclass
class _Index:
    """What `meta/episode_ends` and the data arrays say: the committed prefix, leftovers and damage.

    `ends` `(N_committed,)` are the valid cumulative ends, `slots` the length of the ends array, `readable` how
    many of its slots decoded, `lengths` the rows of each data array, `damage` what is wrong beyond an
    interrupted write (None if nothing), `dropped` the index slots after the damage that were not fill values.
    """

    ends: np.ndarray
    slots: int
    readable: int
    lengths: dict[str, int]
    damage: str | None
    dropped: int

    @property
    def committed(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    @property
    def uncommitted_rows(self) -> int:
        return max([n - self.committed for n in self.lengths.values()] + [0])


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


class EpisodeStore:
    """A zarr v3 episode store. Create with `EpisodeStore.create`, open with `EpisodeStore.open`.

    `keys` maps each data key to its per-frame `{"shape": [...], "dtype": "..."}`; `spec` is free-form JSON
    describing the env, observations and actions (two stores with different specs never mix). `durable=True`
    (writers only) fsyncs every episode to stable storage before and after its commit marker.
    """

    def __init__(self, root: Path, group: zarr.Group, lock: StoreLock, writable: bool):
        self.root = root
        self._group = group
        self._lock = lock
        self.writable = writable
        store = group.store
        self._durable = store if isinstance(store, DurableLocalStore) else None
        self.repaired_rows = 0  # frames past the last intact episode this writer removed when it opened the store
        self.dropped_episodes = 0  # episodes after a damaged index that `open(repair=True)` dropped
        self.uncommitted_rows = 0  # trailing frames past the last commit (readers: ignored; writers: removed)
        self._ends = np.zeros(0, dtype=np.int64)

    @staticmethod
    def _zarr_store(root: Path, durable: bool, read_only: bool = False) -> LocalStore:
        return DurableLocalStore(root) if durable else LocalStore(root, read_only=read_only)

    # ------------------------------------------------------------------------------ open / create
    @classmethod
    def create(
        cls,
        path,
        keys: Mapping[str, Mapping],
        spec: Mapping,
        chunk_rows: Mapping[str, int] | None = None,
        durable: bool = False,
    ):
        """Create a new, empty store at `path` (which must not exist or be an empty directory) and lock it."""
        root = Path(path)
        require_empty_dir(root, "an episode store", "choose a new path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WMError(f"cannot create store at {root}: {e.strerror}; choose a writable path") from e
        lock = StoreLock(root)
        lock.acquire()
        group = zarr.open_group(store=cls._zarr_store(root, durable), mode="a", zarr_format=3)  # holds only .lock
        data = group.create_group("data")
        for key, info in keys.items():
            shape = tuple(int(s) for s in info["shape"])
            rows = (chunk_rows or {}).get(key) or default_chunk_rows(shape, info["dtype"])
            data.create_array(key, shape=(0, *shape), chunks=(rows, *shape), dtype=info["dtype"], fill_value=0)
        meta = group.create_group("meta")
        meta.create_array("episode_ends", shape=(0,), chunks=(LOWDIM_CHUNK_ROWS,), dtype="int64", fill_value=-1)
        group.attrs.update(
            _normalise(
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
        store = cls(root, group, lock, writable=True)
        if store._durable:
            store._durable.dirty.add(root.resolve().parent)  # the store directory's own entry
            store._durable.flush()
        return store

    @classmethod
    def open(cls, path, mode: str = "r", durable: bool = False, repair: bool = False) -> EpisodeStore:
        """Open an existing store.

        mode "r": read the committed episodes; takes no lock and writes nothing. mode "a": append; takes the
        lock and removes what an interrupted write left. `repair` (mode "a"): also cut a damaged index back to
        the episodes before the damage. `durable` (mode "a"): see the module docstring.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if mode == "r" and (durable or repair):
            raise ValueError("durable and repair need mode='a'")
        root = Path(path)
        if not root.is_dir():
            raise WMError(f"no episode store at {root}; create one with `wm collect --out {root}`")
        lock = StoreLock(root)
        if mode == "a":
            lock.acquire()
        try:
            try:
                zstore = cls._zarr_store(root, durable, read_only=mode == "r")
                group = zarr.open_group(store=zstore, mode="r" if mode == "r" else "r+", zarr_format=3)
            except Exception as e:
                raise WMError(
                    f"{root} is not a wm episode store ({type(e).__name__}); pass a path made by `wm collect`"
                ) from None
            store = cls(root, group, lock, writable=mode == "a")
            store._validate()
            index = store._scan()
            if index.damage and not repair:
                raise WMError(
                    f"{root} is damaged: {index.damage}; `wm info --repair {root}` keeps the {len(index.ends)} "
                    f"episode(s) before the damage and drops {index.dropped} after it, or re-collect into a new path"
                )
            if mode == "a":
                store._truncate(index)
        except BaseException:
            lock.release()
            raise
        store._ends = index.ends
        store.uncommitted_rows = 0 if mode == "a" else index.uncommitted_rows
        return store

    def close(self) -> None:
        self._lock.release()
        self.writable = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _validate(self) -> None:
        try:
            attrs = self._group.attrs.asdict()
            missing = [f"data/{k}" for k in attrs.get("keys", {}) if f"data/{k}" not in self._group]
            if "meta/episode_ends" not in self._group:
                missing.append("meta/episode_ends")
        except Exception as e:
            raise WMError(
                f"{self.root} is damaged: its zarr metadata cannot be read ({type(e).__name__}); "
                "re-collect into a new path"
            ) from None
        version = attrs.get("schema_version")
        if version is None or "keys" not in attrs:
            raise WMError(f"{self.root} is a zarr group but not a wm episode store (no schema_version/keys attrs)")
        if version > SCHEMA_VERSION:
            raise WMError(f"{self.root} has schema version {version}, newer than this wm-engine supports; upgrade")
        if missing:
            raise WMError(f"{self.root} is damaged: missing {', '.join(missing)}; re-collect into a new path")

    def _scan(self) -> _Index:
        """Read the index, then the data lengths (in that order, so that a live writer's data is never shorter)."""
        ends_arr = self._group["meta/episode_ends"]
        slots, step = ends_arr.shape[0], ends_arr.chunks[0]
        parts, damage = [], None
        for lo in range(0, slots, step):
            try:
                parts.append(np.asarray(ends_arr[lo : lo + step], dtype=np.int64))
            except Exception as e:
                damage = f"meta/episode_ends[{lo}:{min(lo + step, slots)}] cannot be decoded ({type(e).__name__})"
                break
        read = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        bad = np.flatnonzero(np.diff(read, prepend=0) <= 0)
        valid = int(bad[0]) if len(bad) else len(read)
        # slots grown but never written read as the fill value -1: an interrupted append, not damage
        if damage is None and not np.all(read[valid:] == -1):
            damage = f"meta/episode_ends does not increase at episode {valid}"
        lengths = {k: self._group[f"data/{k}"].shape[0] for k in self.keys}
        shortest = min(lengths.values(), default=0)
        kept = int(np.searchsorted(read[:valid], shortest, side="right"))
        if kept < valid and damage is None:
            key = min(lengths, key=lengths.get)
            damage = f"data/{key} has {shortest} rows but episode {kept} ends at row {read[kept]}"
        dropped = int(np.count_nonzero(read[kept:] != -1)) + slots - len(read) if damage else 0
        return _Index(read[:kept], slots, len(read), lengths, damage, dropped)

    def _truncate(self, index: _Index) -> None:
        """Cut every array back to the committed prefix `index.ends` and remove stray temporary files (writers)."""
        committed, kept = index.committed, len(index.ends)
        if index.slots > kept:  # the index first: a reader meanwhile sees extra data rows, never missing ones
            ends_arr = self._group["meta/episode_ends"]
            if index.damage and index.readable > kept:  # overwrite dropped ends so a later grow reads -1 there
                ends_arr[kept : index.readable] = -1
            ends_arr.resize((kept,))  # also deletes the chunks past the new end, undecodable ones included
        for k, n in index.lengths.items():
            if n > committed:
                arr = self._group[f"data/{k}"]
                arr.resize((committed, *arr.shape[1:]))
        partials = list(self.root.rglob("*.partial"))
        for partial in partials:
            partial.unlink(missing_ok=True)
        self.repaired_rows = index.uncommitted_rows
        self.dropped_episodes = index.dropped if index.damage else 0
        if index.damage:
            log.warning(
                "%s: repaired a damaged index (%s): kept %d episode(s), dropped %d after the damage",
                self.root,
                index.damage,
                kept,
                index.dropped,
            )
        elif index.uncommitted_rows or index.slots > kept or partials:
            log.warning(
                "%s: removed what an interrupted write left (%d uncommitted trailing frame(s)); "
                "%d committed episode(s) intact",
                self.root,
                index.uncommitted_rows,
                kept,
            )
        if self._durable:
            self._durable.flush()

    # -------------------------------------------------------------------------------- reading
    @property
    def attrs(self) -> dict:
        return self._group.attrs.asdict()

    @property
    def spec(self) -> dict:
        return self.attrs["spec"]

    @property
    def keys(self) -> dict:
        return self.attrs["keys"]

    @property
    def episode_ends(self) -> np.ndarray:
        """`(N_episodes,)` int64 cumulative committed ends."""
        return self._ends.copy()

    @property
    def num_episodes(self) -> int:
        return len(self._ends)

    @property
    def num_frames(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def episode_bounds(self, i: int) -> tuple[int, int]:
        """Row range `[start, end)` of episode `i`."""
        if not -self.num_episodes <= i < self.num_episodes:
            raise WMError(f"episode {i} does not exist; {self.root} has {self.num_episodes} episode(s)")
        i %= self.num_episodes
        return (int(self._ends[i - 1]) if i > 0 else 0), int(self._ends[i])

    def episode_lengths(self) -> np.ndarray:
        """`(N_episodes,)` frames per episode."""
        return np.diff(self._ends, prepend=0)

    def has(self, key: str) -> bool:
        """Whether `key` (a data key, or `features/<name>` for a feature cache) can be read."""
        if key.startswith("features/"):
            return key in self._group
        return key in self.keys

    def array(self, key: str) -> zarr.Array:
        """The raw zarr array `data/<key>` or `features/<name>` (may hold rows a writer has not committed)."""
        if not self.has(key):
            raise WMError(f"{self.root} has no key {key!r}; it has {sorted(self.keys)}")
        return self._group[key if key.startswith("features/") else f"data/{key}"]

    def feature_cache(self, name: str, shape: tuple[int, ...], attrs: dict) -> zarr.Array:
        """The fp16 feature array `features/<name>` `(N_frames, *shape)`, created if absent (writers only)."""
        self._require_writable()
        key = f"features/{name}"
        if key in self._group:
            arr = self._group[key]
            if tuple(arr.shape[1:]) != tuple(shape):
                raise WMError(f"{self.root}: feature cache {name} has shape {arr.shape[1:]}, expected {shape}")
            return arr
        rows = default_chunk_rows(shape, "float16")
        arr = self._group.require_group("features").create_array(
            name, shape=(0, *shape), chunks=(rows, *shape), dtype="float16", fill_value=0
        )
        arr.attrs.update(_normalise({**attrs, "rows_done": 0}))
        return arr

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows `[start, stop)` of `data/<key>`, limited to committed rows."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        try:
            return np.asarray(self.array(key)[start:stop])
        except WMError:
            raise
        except Exception as e:
            raise WMError(
                f"{self.root}: data/{key} rows {start}:{stop} cannot be read ({e}); the store is damaged"
            ) from e

    def episode(self, i: int, keys=None) -> dict[str, np.ndarray]:
        """All frames of episode `i`: `{key: (L, *frame_shape)}`."""
        start, end = self.episode_bounds(i)
        return {k: self.read(k, start, end) for k in (keys or self.keys)}

    def size_on_disk(self) -> int:
        """Bytes used by the store's files."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    # -------------------------------------------------------------------------------- writing
    def _require_writable(self) -> None:
        if not self.writable:
            raise WMError(f"{self.root} was opened read-only; open it with mode='a' to append")

    def check_episode(self, episode: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate one episode against the store's keys; returns it in the stored dtypes (uint8: `_as_uint8`)."""
        keys = self.keys
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

    def append_episode(self, episode: Mapping[str, np.ndarray]) -> int:
        """Append one whole episode `{key: (L, *frame_shape)}`; returns its index. Commit = the end marker."""
        self._require_writable()
        arrays = self.check_episode(episode)
        start = self.num_frames
        length = len(next(iter(arrays.values())))
        for k, a in arrays.items():
            arr = self._group[f"data/{k}"]
            arr.resize((start + length, *arr.shape[1:]))
            arr[start : start + length] = a
        if self._durable:
            self._durable.flush()  # the episode's files are on stable storage before the marker that commits them
        ends = self._group["meta/episode_ends"]
        n = len(self._ends)
        ends.resize((n + 1,))
        ends[n] = start + length  # the commit marker: until this chunk lands the episode does not exist
        if self._durable:
            self._durable.flush()
        self._ends = np.append(self._ends, start + length)
        return n

    def record_collection(self, record: Mapping) -> None:
        """Append a provenance record (who collected what, with which config) to the store's attributes."""
        self._require_writable()
        collections = self.attrs.get("collections", []) + [_normalise(dict(record))]
        self._group.attrs.update({"collections": collections})
        if self._durable:
            self._durable.flush()

    def same_spec(self, spec: Mapping, keys: Mapping) -> bool:
        return self.spec == _normalise(dict(spec)) and self.keys == _normalise(dict(keys))
