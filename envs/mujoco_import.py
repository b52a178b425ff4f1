"""Importing MuJoCo, with the one-line repair where its install is broken.

Installing a package that pins another MuJoCo next to this project can leave the `mujoco` bindings and the
`mujoco-core` library they load at different versions: `import mujoco` then fails deep in a shared-library load
(`libmujoco.so.4.0.1: cannot open shared object file`) while `pip check` is clean. Every module of the engine that
uses MuJoCo imports it through `load_mujoco`, which turns that into one line naming the versions and the repair.
"""

from __future__ import annotations

from importlib import metadata

from wm.errors import WMError


def installed(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_mujoco():
    """The `mujoco` module, or a WMError with the installed versions and the repair."""
    try:
        import mujoco
    except (ImportError, OSError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WMError(f"mujoco does not import ({reason}); installed: mujoco {installed('mujoco')}, mujoco-core "
                      f"{installed('mujoco-core')}; repair: pip uninstall -y mujoco mujoco-core && pip install "
                      "mujoco") from None  # fmt: skip
    return mujoco
