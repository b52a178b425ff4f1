"""wm-engine: world models, their data, and the CLI that wires the engine together.

Kept import-light on purpose: `import wm.errors` (used by `envs` and `planners`) must not pull in torch.

The engine's other packages have generic names (`envs`, `planners`, `policies`): a folder or module of that name
next to a user's script, or earlier on `sys.path`, would be imported instead of the engine's and fail later in a
confusing way. `import wm` checks where they would come from (without importing them) and says so in one line.
"""

import importlib.util
from pathlib import Path

__version__ = "0.1.0"
SIBLINGS = ("envs", "planners", "policies")


def _check_siblings() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in SIBLINGS:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
        if origin is not None and origin.parent.parent != root:
            raise ImportError(f"{origin.parent if origin.name == '__init__.py' else origin} shadows wm-engine's "
                              f"'{name}' package (in {root}): rename yours, or run from another directory")  # fmt: skip


_check_siblings()
