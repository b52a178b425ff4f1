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

`EpisodeStore` is the public class; `wm.data.store_writer` holds the writing side (layout, create, append, the
durable LocalStore) and `wm.data.store_index` reads the commit marker back and cuts a store back to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import zarr

from wm.data.lock import StoreLock
from wm.data.store_index import cut_back, scan
from wm.data.store_writer import (
    SCHEMA_VERSION,
    add_collection,
    create_layout,
    default_chunk_rows,
    episode_arrays,
    normalise,
    sync,
    write_episode,
    zarr_store,
)
from wm.errors import WMError


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
        self.repaired_rows = 0  # frames past the last intact episode this writer removed when it opened the store
        self.dropped_episodes = 0  # episodes after a damaged index that `open(repair=True)` dropped
        self.uncommitted_rows = 0  # trailing frames past the last commit (readers: ignored; writers: removed)
        self._ends = np.zeros(0, dtype=np.int64)

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
        group, lock = create_layout(root, keys, spec, chunk_rows, durable)
        return cls(root, group, lock, writable=True)

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
                zstore = zarr_store(root, durable, read_only=mode == "r")
                group = zarr.open_group(store=zstore, mode="r" if mode == "r" else "r+", zarr_format=3)
            except Exception as e:
                raise WMError(
                    f"{root} is not a wm episode store ({type(e).__name__}); pass a path made by `wm collect`"
                ) from None
            store = cls(root, group, lock, writable=mode == "a")
            store._validate()
            index = scan(group, store.keys)
            if index.damage and not repair:
                raise WMError(
                    f"{root} is damaged: {index.damage}; `wm info --repair {root}` keeps the {len(index.ends)} "
                    f"episode(s) before the damage and drops {index.dropped} after it, or re-collect into a new path"
                )
            if mode == "a":
                cut_back(group, root, index)
                store.repaired_rows, store.dropped_episodes = index.uncommitted_rows, index.dropped
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
        arr.attrs.update(normalise({**attrs, "rows_done": 0}))
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
        """Validate one episode against the store's keys; returns it in the stored dtypes (uint8 keys take uint8
        in [0, 255] or floats in [0, 1], scaled by 255)."""
        return episode_arrays(self.keys, episode)

    def append_episode(self, episode: Mapping[str, np.ndarray]) -> int:
        """Append one whole episode `{key: (L, *frame_shape)}`; returns its index. Commit = the end marker."""
        self._require_writable()
        index = self.num_episodes
        end = write_episode(self._group, self.check_episode(episode), self.num_frames, index)
        self._ends = np.append(self._ends, end)
        return index

    def record_collection(self, record: Mapping, replace_last: bool = False) -> None:
        """Append a provenance record (who collected what, with which config) to the store's attributes, or replace
        the last one (a record that grows with its run)."""
        self._require_writable()
        add_collection(self._group, record, replace_last)

    def mark_copy_of(self, store: str, episodes: int) -> None:
        """Record that this store is a copy of `store` (as a checkpoint names it) holding its first `episodes`
        episodes, which keep their training split there (`TrainedOn.is_training_data`); `wm improve` appends to it."""
        self._require_writable()
        self._group.attrs.update({"copy_of": {"store": store, "episodes": int(episodes)}})
        sync(self._group)

    def same_spec(self, spec: Mapping, keys: Mapping) -> bool:
        return self.spec == normalise(dict(spec)) and self.keys == normalise(dict(keys))
