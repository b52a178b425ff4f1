"""Where results go: a job writes into a new or empty folder and never over what is already on disk."""

from __future__ import annotations

from pathlib import Path

from wm.errors import WMError


def require_empty_dir(path, what: str = "results", fix: str = "pass a new --out directory") -> Path:
    """`path` as a Path if it is absent or an empty directory; otherwise a WMError naming what it holds."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WMError(f"{path} already exists and is a file, not a folder for {what}; {fix}")
    if path.exists() and any(path.iterdir()):
        raise WMError(f"{path} already exists and is not empty (it would mix old and new {what}); {fix}")
    return path


def require_new_file(path, suffix: str | None = None) -> Path:
    """`path` as a Path if nothing is there yet (and it ends in `suffix`, when given); else a WMError."""
    path = Path(path)
    if path.exists():
        raise WMError(f"{path} already exists; pass a new --out file")
    if suffix is not None and path.suffix.lower() != suffix:
        raise WMError(f"--out must be a {suffix} file, got {path.name}")
    return path


def require_run_dir(path) -> Path:
    """`path` as a Path if it can hold a resumable run (`wm train`, `wm bc`, `wm refine`): absent, or a folder, and
    not inside a checkpoint (a folder with `model.safetensors` holds one model); otherwise a WMError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WMError(f"{path} already exists and is a file, not a run folder; pass a new --out directory")
    inside = next((p for p in (path, *path.resolve().parents) if (p / "model.safetensors").is_file()), None)
    if inside is not None:
        raise WMError(f"--out {path} is inside the checkpoint {inside}; pass an --out outside it (it holds one model)")
    return path
