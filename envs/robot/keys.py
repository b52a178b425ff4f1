"""CurveZMQ keys for the bridge: `wm robot keygen --out DIR` makes them, the server and its clients load them.

DIR/public.key  the server's public key (Z85 text, 40 characters): give it to clients (`wm validate --server-key`)
DIR/secret.key  the server's secret key (Z85 text, mode 0600): stays on the robot machine (`wm robot serve
                --curve-key`); a secret key file that others may read is refused, as ssh does
Curve encrypts the link and proves the server to the client; clients prove themselves with the shared secret
(the HMAC of every request), so one key pair serves any number of clients.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import zmq
from zmq.utils import z85

from wm.errors import WMError

PUBLIC_NAME, SECRET_NAME = "public.key", "secret.key"
Z85_KEY_CHARS = 40


def require_curve() -> None:
    """A one-line WMError unless this pyzmq/libzmq was built with CurveZMQ (libsodium)."""
    if not zmq.has("curve"):
        raise WMError(
            "this pyzmq/libzmq has no CurveZMQ support (zmq.has('curve') is False); install a pyzmq wheel "
            "built with libsodium, or serve on loopback without encryption"
        )


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name or a wildcard such as `*`: reachable from elsewhere
        return False


def keygen(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write a new server key pair into `out_dir` (made if missing); returns (public, secret) paths.

    Refuses to overwrite existing key files."""
    require_curve()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise WMError(f"{out} is a file, not a folder for the keys; pass another --out directory")
    public_path, secret_path = out / PUBLIC_NAME, out / SECRET_NAME
    existing = [str(p) for p in (public_path, secret_path) if p.exists()]
    if existing:
        raise WMError(f"{' and '.join(existing)} already exist; pass another --out (keys are never overwritten)")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    public, secret = zmq.curve_keypair()
    _write_new(secret_path, secret, 0o600)
    _write_new(public_path, public, 0o644)
    return public_path, secret_path


def _write_new(path: Path, key: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise WMError(f"{path} already exists; pass another --out (keys are never overwritten)") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    os.chmod(path, mode)  # the umask may have narrowed the mode of the public key


def load_public_key(path: str | os.PathLike) -> bytes:
    """The Z85 server public key in `path` (DIR/public.key from `wm robot keygen`)."""
    return _read_key(Path(path), "public")


def load_secret_key(path: str | os.PathLike) -> bytes:
    """The Z85 server secret key in `path` (DIR/secret.key); refused if group or others may read it."""
    path = Path(path)
    key = _read_key(path, "secret")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise WMError(f"secret key file {path} is readable by others (mode {mode:04o}); run `chmod 600 {path}`")
    return key


def _read_key(path: Path, kind: str) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as e:
        raise WMError(
            f"cannot read the {kind} key file {path} ({e.strerror}); make keys with `wm robot keygen`"
        ) from None
    try:
        valid = len(key) == Z85_KEY_CHARS and len(z85.decode(key)) == 32
    except (ValueError, KeyError):
        valid = False
    if not valid:
        raise WMError(f"{path} is not a Curve {kind} key (40 Z85 characters); make keys with `wm robot keygen`")
    return key
