"""The bridge's wire format: one fixed-size auth frame, one JSON header frame, one raw frame per numpy array.

A message is the multipart `[auth, header, *buffers]`:
  auth     AUTH_BYTES (68) bytes, big-endian: magic (4: b"WMQ1" request, b"WMA1" reply) | client id (16 random
           bytes) | seq (uint64, per client, strictly increasing) | timestamp (float64, Unix seconds) | mac (32)
  mac      HMAC-SHA256 under the shared secret of auth[:36] | number of body frames (uint32) | for each body frame
           its length (uint64) and bytes; the secret itself never travels. A reply echoes the request's client id
           and seq, so it cannot answer another request. An unsigned reply (mac all zeros) is only ever a refusal.
  header   a JSON object; `encode({"op": "send_action", "action": np.ones(2, np.float32)})` gives the body
           [b'{"op": "send_action", "action": {"__nd__": 0, "dtype": "<f4", "shape": [2]}}', <8 raw bytes>]
Arrays may sit anywhere in nested dicts/lists; numpy scalars become JSON numbers/booleans. `decode` checks before
it trusts: a bounded header size and nesting depth, plain numeric and boolean dtypes only (never object arrays, so a
message carries no code), shapes of non-negative ints matching their frame's size, every frame referred to exactly
once. Anything else is a ValueError with one line saying what is wrong. A request is at most MAX_REQUEST_FRAMES
frames and MAX_REQUEST_BYTES bytes in all, its header at most MAX_HEADER_BYTES.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import struct
from dataclasses import dataclass

import numpy as np

ARRAY_TAG = "__nd__"
MAGIC_REQUEST, MAGIC_REPLY = b"WMQ1", b"WMA1"
CLIENT_ID_BYTES = 16
_AUTH = struct.Struct("!4s16sQd")
MAC_BYTES = hashlib.sha256().digest_size
AUTH_BYTES = _AUTH.size + MAC_BYTES
UNSIGNED = bytes(MAC_BYTES)
MAX_REQUEST_BYTES = 64 << 10  # all frames of a request together (requests are small: an action, a reset state)
MAX_REQUEST_FRAMES = 16  # auth + header + up to 14 arrays
MAX_HEADER_BYTES = 16 << 10  # the header frame of a request
MAX_DEPTH = 16  # nesting of dicts/lists in a header
MAX_NDIM = 8
MAX_DIM = 1 << 32


@dataclass(frozen=True)
class Auth:
    """A parsed auth frame."""

    magic: bytes
    client: bytes
    seq: int
    timestamp: float
    mac: bytes


def sign(secret: bytes | None, magic: bytes, client: bytes, seq: int, timestamp: float, body: list) -> bytes:
    """The auth frame for `body` (the header and buffer frames); `secret=None` leaves it unsigned (a refusal)."""
    fields = _AUTH.pack(magic, client, seq, timestamp)
    return fields + (UNSIGNED if secret is None else _mac(secret, fields, body))


def parse_auth(frame) -> Auth:
    """An auth frame -> `Auth`; ValueError unless it has exactly AUTH_BYTES bytes and a known magic."""
    raw = bytes(frame)
    if len(raw) != AUTH_BYTES:
        raise ValueError(f"the auth frame has {len(raw)} bytes, not {AUTH_BYTES}")
    magic, client, seq, timestamp = _AUTH.unpack_from(raw)
    if magic not in (MAGIC_REQUEST, MAGIC_REPLY):
        raise ValueError(f"unknown magic {magic!r}; not a wm robot message")
    return Auth(magic, client, seq, timestamp, raw[_AUTH.size :])


def verify(secret: bytes, auth: Auth, body: list) -> bool:
    """Whether `auth.mac` is the MAC of its fields and `body` under `secret` (constant-time comparison)."""
    fields = _AUTH.pack(auth.magic, auth.client, auth.seq, auth.timestamp)
    return hmac.compare_digest(_mac(secret, fields, body), auth.mac)


def _mac(secret: bytes, fields: bytes, body: list) -> bytes:
    h = hmac.new(secret, fields, hashlib.sha256)
    h.update(struct.pack("!I", len(body)))
    for frame in body:
        view = memoryview(frame)
        h.update(struct.pack("!Q", view.nbytes))
        h.update(view)
    return h.digest()


def nbytes(frames) -> int:
    """Total bytes of some frames (bytes, memoryviews or zmq frames)."""
    return sum(memoryview(f).nbytes for f in frames)


def encode(message: dict) -> list:
    """A message of JSON values and numpy arrays -> body frames `[header, *buffers]`."""
    buffers: list[np.ndarray] = []

    def pack(x):
        if isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            buffers.append(a)
            return {ARRAY_TAG: len(buffers) - 1, "dtype": a.dtype.str, "shape": list(a.shape)}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            return {str(k): pack(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [pack(v) for v in x]
        return x

    header = json.dumps(pack(message)).encode()
    return [header, *(memoryview(a).cast("B") if a.size else b"" for a in buffers)]


def decode(frames, max_header_bytes: int = MAX_HEADER_BYTES) -> dict:
    """Body frames -> the message (arrays are fresh, writable copies). Raises ValueError on any bad input."""
    if not frames:
        raise ValueError("no header frame")
    if memoryview(frames[0]).nbytes > max_header_bytes:
        raise ValueError(f"the header has {memoryview(frames[0]).nbytes} bytes, over the limit of {max_header_bytes}")
    try:
        header = json.loads(bytes(frames[0]).decode("utf-8"))
    except RecursionError:
        raise ValueError(f"the header nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # bad UTF-8, bad JSON, an integer of too many digits
        raise ValueError(f"the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    _check_depth(header)
    buffers = [memoryview(f) for f in frames[1:]]
    used: set[int] = set()

    def unpack(x):
        if isinstance(x, dict):
            if ARRAY_TAG in x:
                return _array(x, buffers, used)
            return {k: unpack(v) for k, v in x.items()}
        if isinstance(x, list):
            return [unpack(v) for v in x]
        return x

    message = unpack(header)
    if len(used) != len(buffers):
        raise ValueError(f"the message has {len(buffers)} array frames, the header refers to {len(used)}")
    return message


def _check_depth(header: dict) -> None:
    stack = [(header, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise ValueError(f"the header nests deeper than {MAX_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


def _dtype(text) -> np.dtype:
    if not isinstance(text, str) or len(text) > 8:
        raise ValueError(f"bad array dtype {text!r}; give a numpy dtype string such as '<f4'")
    try:
        dtype = np.dtype(text)
    except (TypeError, ValueError):
        raise ValueError(f"bad array dtype {text!r}; give a numpy dtype string such as '<f4'") from None
    if dtype.kind not in "biuf" or dtype.itemsize > 8 or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"array dtype {dtype} is not allowed (numbers and booleans only)")
    return dtype


def _array(desc: dict, buffers: list, used: set) -> np.ndarray:
    if set(desc) != {ARRAY_TAG, "dtype", "shape"}:
        raise ValueError(f"an array needs exactly the keys {ARRAY_TAG}, dtype and shape, got {sorted(desc)}")
    index, dtype, shape = desc[ARRAY_TAG], _dtype(desc["dtype"]), desc["shape"]
    if type(index) is not int or not 0 <= index < len(buffers) or index in used:
        raise ValueError(f"an array refers to frame {index!r}; the message has {len(buffers)}, each used once")
    ok = isinstance(shape, list) and len(shape) <= MAX_NDIM
    if not ok or not all(type(s) is int and 0 <= s < MAX_DIM for s in shape):
        raise ValueError(f"bad array shape {shape!r}")
    used.add(index)
    buf = buffers[index]
    if buf.nbytes != math.prod(shape) * dtype.itemsize:
        raise ValueError(f"an array frame has {buf.nbytes} bytes, {dtype} {shape} needs another size")
    return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()


def short(value, limit: int = 60) -> str:
    """A repr cut to one short line (for echoing what the other side sent)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
