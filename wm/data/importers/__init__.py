"""Importers: other projects' trajectory datasets into an episode store (`wm import FORMAT SRC --out STORE`).

One module per format (lerobot, minari, replay_buffer for `zarr`); each opens and checks SRC, returning a
`Source` whose episodes are already in the store's keys (rgb uint8, proprio float32, action float32) and
alignment (action[t] applied at frame t, action 0 at the last frame). Each module's docstring says how its
source's alignment maps onto that contract.
"""

from __future__ import annotations

import importlib

from wm.data.importers.source import ImportOptions, Source
from wm.errors import WMError

FORMATS = {
    "lerobot": ("wm.data.importers.lerobot", "open_lerobot", "pyarrow and av"),
    "minari": ("wm.data.importers.minari", "open_minari", "minari"),
    "zarr": ("wm.data.importers.replay_buffer", "open_replay_buffer", "zarr"),
}


def open_source(fmt: str, src: str, opts: ImportOptions) -> Source:
    """The dataset at `src` in format `fmt` (a key of FORMATS), opened and checked; nothing is read beyond that."""
    if fmt not in FORMATS:
        raise WMError(f"unknown import format {fmt!r}; use one of {', '.join(FORMATS)}")
    module, opener, needs = FORMATS[fmt]
    try:
        open_fn = getattr(importlib.import_module(module), opener)
        return open_fn(src, opts)
    except ModuleNotFoundError as e:
        raise WMError(
            f"importing {fmt} needs {needs} ({e.name} is not installed): pip install 'wm-engine[import]'"
        ) from None
