"""The bridge's message encoding: one JSON header frame plus one raw frame per numpy array (zero-copy friendly).

`encode({"op": "send_action", "action": np.ones(2, np.float32)})` ->
    [b'{"op": "send_action", "action": {"__nd__": 0, "dtype": "<f4", "shape": [2]}}', <8 raw bytes>]
Arrays may sit anywhere in nested dicts/lists; numpy scalars become JSON numbers/booleans. Decoding accepts only
plain numeric and boolean dtypes (never object arrays), so a message can carry no code.
"""

from __future__ import annotations

import json

import numpy as np

ARRAY_TAG = "__nd__"


def encode(message: dict) -> list:
    """A message of JSON values and numpy arrays -> multipart frames `[header, *buffers]`."""
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


def decode(frames) -> dict:
    """Multipart frames -> the message (arrays are fresh, writable copies). Raises ValueError on bad input."""
    if not frames:
        raise ValueError("empty message")
    try:
        header = json.loads(bytes(frames[0]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"header is not JSON ({e})") from None
    buffers = [memoryview(f) for f in frames[1:]]

    def unpack(x):
        if isinstance(x, dict):
            if ARRAY_TAG in x:
                return _array(x, buffers)
            return {k: unpack(v) for k, v in x.items()}
        if isinstance(x, list):
            return [unpack(v) for v in x]
        return x

    message = unpack(header)
    if not isinstance(message, dict):
        raise ValueError("header is not a JSON object")
    return message


def _array(desc: dict, buffers: list) -> np.ndarray:
    index, dtype, shape = desc.get(ARRAY_TAG), np.dtype(desc.get("dtype", "V")), desc.get("shape")
    if dtype.kind not in "biuf":
        raise ValueError(f"array dtype {dtype} is not allowed (numbers and booleans only)")
    if not isinstance(index, int) or not 0 <= index < len(buffers):
        raise ValueError(f"array refers to frame {index}, the message has {len(buffers)}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise ValueError(f"bad array shape {shape!r}")
    buf = buffers[index]
    if buf.nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
        raise ValueError(f"array frame has {buf.nbytes} bytes, {dtype} {shape} needs another size")
    return np.frombuffer(buf, dtype=dtype).reshape(shape).copy()
