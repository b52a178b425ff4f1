"""What an importer hands over: a `Source` (the layout it found at SRC, checked before anything is written) whose
`episodes()` yields episodes already in the store's keys and alignment, and the helpers every importer shares to
get there (choosing a key among candidates, actions aligned to the store's contract)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from wm.errors import WMError

Episode = dict[str, np.ndarray]


@dataclass
class ImportOptions:
    """Which source keys become rgb / proprio / action (None: auto-detect) and the stored square image size."""

    rgb_key: str | None = None
    proprio_key: str | None = None
    action_key: str | None = None
    image_size: int = 64

    def validate(self) -> None:
        if not 16 <= self.image_size <= 1024:
            raise WMError(f"--image-size must be in [16, 1024], got {self.image_size}")


@dataclass
class Source:
    """A dataset an importer has opened and checked.

    `episodes()` yields `{"rgb": (L, S, S, 3) uint8, "proprio": (L, P) float32, "action": (L, A) float32}` in the
    store's alignment (action[t] applied at frame t, action 0 at the last frame), S = the requested image size.
    `action_bounds` are `(low, high)` per dimension, `bounds_from` where they come from ("action space" where the
    source declares them, else "data": the range of its actions). `episode_steps` is the longest episode's steps
    (frames - 1) where the source says so cheaply, `keys` names the source key behind each store key, `names` the
    per-dimension names the source gives (proprio / action, None where it has none), `alignment` how the source's
    alignment was mapped, `metadata` anything else worth keeping (JSON-ready).
    """

    format: str
    version: str
    path: str
    env_id: str
    fps: float | None
    num_episodes: int
    proprio_dim: int
    action_dim: int
    action_bounds: tuple[list[float], list[float]]
    bounds_from: str
    keys: dict[str, str]
    alignment: str
    episodes: Callable[[], Iterator[Episode]]
    episode_steps: int | None = None
    names: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def pick_key(what: str, candidates: Mapping[str, tuple], given: str | None, preferred: tuple[str, ...], flag: str):
    """The source key for `what` among `candidates` (key -> per-frame shape): `given` if it is one, else the first
    of `preferred` present, else the only candidate; otherwise a one-line WMError naming the choices."""
    if given is not None:
        if given not in candidates:
            raise WMError(f"{flag} {given!r} is not a usable {what} key here; the candidates are {sorted(candidates)}")
        return given
    for name in preferred:
        if name in candidates:
            return name
    if len(candidates) == 1:
        return next(iter(candidates))
    if not candidates:
        raise WMError(
            f"no {what} found (nothing of the right shape); the store needs {what}, so this layout is unusable"
        )
    raise WMError(f"several {what} candidates {sorted(candidates)}; choose one with {flag} KEY")


def aligned_actions(actions: np.ndarray, frames: int) -> np.ndarray:
    """`(frames, A)` float32 actions in the store's contract from `actions` `(frames, A)` (one per frame: the last,
    which nothing follows, becomes 0) or `(frames - 1, A)` (one per transition: a 0 row is appended)."""
    actions = np.asarray(actions, dtype=np.float32)
    if actions.ndim != 2 or len(actions) not in (frames, frames - 1):
        raise WMError(f"an episode has {frames} frames but actions of shape {actions.shape}; expected one per frame")
    out = np.zeros((frames, actions.shape[1]), np.float32)
    out[: frames - 1] = actions[: frames - 1]
    return out


def data_bounds(actions: np.ndarray) -> tuple[list[float], list[float]]:
    """`(low, high)` per action dimension over `actions` `(N, A)`: the bounds a source that declares none implies."""
    actions = np.asarray(actions, dtype=np.float64)
    if not len(actions):
        raise WMError("the source holds no actions; nothing to import")
    return actions.min(0).tolist(), actions.max(0).tolist()
