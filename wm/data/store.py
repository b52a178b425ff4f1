"""The episode store: a crash-safe zarr v3 group of time-major arrays.

Layout (readable with plain `zarr.open_group`):
  data/<key>          (N_frames, *frame_shape) for every key (rgb, proprio, action, state, ...)
  meta/episode_ends   (N_episodes,) int64, cumulative: episode i is rows [ends[i-1], ends[i])
  attrs               schema_version, spec (env / observation / action), keys, collections (who wrote what)

Invariant: `len(data/<key>) == episode_ends[-1]` for every key. An append writes the whole episode into every
data array first and `episode_ends` last (the commit marker), and zarr's LocalStore writes each chunk and
metadata document atomically, so a crash can only leave uncommitted rows past the last end (or an end slot that
was grown but never written, read back as the fill value -1). Opening a store for writing, or for reading while
no writer holds the lock, truncates those rows and says so. A `StoreLock` keeps a second writer out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr

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


class EpisodeStore:
    """A zarr v3 episode store. Create with `EpisodeStore.create`, open with `EpisodeStore.open`.

    `keys` maps each data key to its per-frame `{"shape": [...], "dtype": "..."}`; `spec` is free-form JSON
    describing the env, observations and actions (two stores with different specs never mix).
    """

    def __init__(self, root: Path, group: zarr.Group, lock: StoreLock, writable: bool):
        self.root = root
        self._group = group
        self._lock = lock
        self.writable = writable
        self.repaired_rows = 0
        self._ends = np.zeros(0, dtype=np.int64)

    # ------------------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, path, keys: Mapping[str, Mapping], spec: Mapping, chunk_rows: Mapping[str, int] | None = None):
        """Create a new, empty store at `path` (which must not exist or be an empty directory) and lock it."""
        root = Path(path)
        require_empty_dir(root, "an episode store", "choose a new path")
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise WMError(f"cannot create store at {root}: {e.strerror}; choose a writable path") from e
        lock = StoreLock(root)
        lock.acquire()
        group = zarr.open_group(store=str(root), mode="a", zarr_format=3)  # dir holds only our .lock
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
        store._ends = np.zeros(0, dtype=np.int64)
        return store

    @classmethod
    def open(cls, path, mode: str = "r") -> EpisodeStore:
        """Open an existing store. mode "r": read (repairs only if no writer is active); "a": append (locks)."""
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        root = Path(path)
        if not root.is_dir():
            raise WMError(f"no episode store at {root}; create one with `wm collect --out {root}`")
        lock = StoreLock(root)
        if mode == "a":
            lock.acquire()
            locked = True
        else:
            try:
                locked = lock.try_acquire()
            except OSError:  # read-only directory: nothing can be repaired, read the committed prefix
                locked = False
        try:
            group = zarr.open_group(store=str(root), mode="r+" if locked else "r", zarr_format=3)
        except Exception as e:
            lock.release()
            raise WMError(
                f"{root} is not a wm episode store ({type(e).__name__}); pass a path made by `wm collect`"
            ) from None
        store = cls(root, group, lock, writable=mode == "a")
        try:
            store._validate()
            store._recover(repair=locked)
        except BaseException:
            lock.release()
            raise
        if mode == "r":
            lock.release()
        return store

    def close(self) -> None:
        self._lock.release()
        self.writable = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _validate(self) -> None:
        attrs = self._group.attrs.asdict()
        version = attrs.get("schema_version")
        if version is None or "keys" not in attrs:
            raise WMError(f"{self.root} is a zarr group but not a wm episode store (no schema_version/keys attrs)")
        if version > SCHEMA_VERSION:
            raise WMError(f"{self.root} has schema version {version}, newer than this wm-engine supports; upgrade")
        missing = [f"data/{k}" for k in attrs["keys"] if f"data/{k}" not in self._group]
        if "meta/episode_ends" not in self._group:
            missing.append("meta/episode_ends")
        if missing:
            raise WMError(f"{self.root} is damaged: missing {', '.join(missing)}; re-collect into a new path")

    def _recover(self, repair: bool) -> None:
        """Find the committed prefix; if `repair`, truncate rows past it and remove stray partial files."""
        ends_arr = self._group["meta/episode_ends"]
        ends = np.asarray(ends_arr[:], dtype=np.int64)
        valid = len(ends)
        prev = 0
        for i, e in enumerate(ends):  # an end grown but never written reads as -1: uncommitted from there on
            if e <= prev:
                valid = i
                break
            prev = e
        ends = ends[:valid]
        committed = int(ends[-1]) if len(ends) else 0
        lengths = {k: self._group[f"data/{k}"].shape[0] for k in self.keys}
        short = {k: n for k, n in lengths.items() if n < committed}
        if short:
            raise WMError(
                f"{self.root} is damaged: {short} rows but episode_ends says {committed}; re-collect into a new path"
            )
        extra = max([n - committed for n in lengths.values()] + [0])
        dropped_ends = ends_arr.shape[0] - valid
        if repair and (extra or dropped_ends):
            for k, n in lengths.items():
                if n > committed:
                    arr = self._group[f"data/{k}"]
                    arr.resize((committed, *arr.shape[1:]))
            if dropped_ends:
                ends_arr.resize((valid,))
            for partial in self.root.rglob("*.partial"):
                partial.unlink(missing_ok=True)
            self.repaired_rows = extra
            log.warning(
                "%s: removed %d uncommitted trailing frame(s) left by an interrupted write; "
                "%d committed episode(s) intact",
                self.root,
                extra,
                valid,
            )
        self._ends = ends

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
        """Validate one episode against the store's keys; returns arrays cast to the stored dtypes."""
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
            out[k] = a.astype(info["dtype"], copy=False)
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
        ends = self._group["meta/episode_ends"]
        n = len(self._ends)
        ends.resize((n + 1,))
        ends[n] = start + length  # the commit marker: until this chunk lands the episode does not exist
        self._ends = np.append(self._ends, start + length)
        return n

    def record_collection(self, record: Mapping) -> None:
        """Append a provenance record (who collected what, with which config) to the store's attributes."""
        self._require_writable()
        collections = self.attrs.get("collections", []) + [_normalise(dict(record))]
        self._group.attrs.update({"collections": collections})

    def same_spec(self, spec: Mapping, keys: Mapping) -> bool:
        return self.spec == _normalise(dict(spec)) and self.keys == _normalise(dict(keys))
