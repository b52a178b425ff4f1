"""An episode store's commit marker read back: which episodes are committed, what an interrupted write left, what
is damaged, and (writers only) cutting the store back to the committed episodes.

`scan` reads `meta/episode_ends` chunk by chunk, then the length of every data array. Rows past the last end,
end slots grown but never written (read back as the fill value -1) and stray `*.partial` files are the leftovers
of an interrupted write; an undecodable chunk, ends that do not increase or data shorter than the ends are damage.
`cut_back` removes the leftovers, and with damage every episode from the damage on. The contract is described in
`wm.data.store`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from wm.data.store_writer import sync

log = logging.getLogger("wm.data")


@dataclass
class StoreIndex:
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


def scan(group: zarr.Group, keys) -> StoreIndex:
    """Read the index, then the data lengths of `keys` (in that order, so that a live writer's data is never
    shorter)."""
    ends_arr = group["meta/episode_ends"]
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
    lengths = {k: group[f"data/{k}"].shape[0] for k in keys}
    shortest = min(lengths.values(), default=0)
    kept = int(np.searchsorted(read[:valid], shortest, side="right"))
    if kept < valid and damage is None:
        key = min(lengths, key=lengths.get)
        damage = f"data/{key} has {shortest} rows but episode {kept} ends at row {read[kept]}"
    dropped = int(np.count_nonzero(read[kept:] != -1)) + slots - len(read) if damage else 0
    return StoreIndex(read[:kept], slots, len(read), lengths, damage, dropped)


def cut_back(group: zarr.Group, root: Path, index: StoreIndex) -> None:
    """Cut every array of the store at `root` back to the committed prefix `index.ends` and remove stray temporary
    files (writers only; says so in the log when there was anything to remove)."""
    committed, kept = index.committed, len(index.ends)
    if index.slots > kept:  # the index first: a reader meanwhile sees extra data rows, never missing ones
        ends_arr = group["meta/episode_ends"]
        if index.damage and index.readable > kept:  # overwrite dropped ends so a later grow reads -1 there
            ends_arr[kept : index.readable] = -1
        ends_arr.resize((kept,))  # also deletes the chunks past the new end, undecodable ones included
    for k, n in index.lengths.items():
        if n > committed:
            arr = group[f"data/{k}"]
            arr.resize((committed, *arr.shape[1:]))
    partials = list(root.rglob("*.partial"))
    for partial in partials:
        partial.unlink(missing_ok=True)
    if index.damage:
        log.warning(
            "%s: repaired a damaged index (%s): kept %d episode(s), dropped %d after the damage",
            root,
            index.damage,
            kept,
            index.dropped,
        )
    elif index.uncommitted_rows or index.slots > kept or partials:
        log.warning(
            "%s: removed what an interrupted write left (%d uncommitted trailing frame(s)); "
            "%d committed episode(s) intact",
            root,
            index.uncommitted_rows,
            kept,
        )
    sync(group)
