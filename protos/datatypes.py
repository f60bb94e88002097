"""The protocol's tensor datatypes and their numpy counterparts.

Shared by the server's codec and the client, so both sides agree on one table.
BYTES tensors are numpy ``object`` arrays of ``bytes``; on the wire each
element is a 4-byte little-endian length followed by the bytes.
"""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np

_LENGTH = struct.Struct("<I")

#: V2 datatype name -> numpy dtype (little-endian, as the wire format is).
NUMPY_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

_BY_NUMPY = {dt: name for name, dt in NUMPY_DTYPES.items()}

#: Triton config enum names (``TYPE_*``) -> V2 datatype names.
CONFIG_TO_V2 = {
    "TYPE_BOOL": "BOOL",
    "TYPE_UINT8": "UINT8",
    "TYPE_UINT16": "UINT16",
    "TYPE_UINT32": "UINT32",
    "TYPE_UINT64": "UINT64",
    "TYPE_INT8": "INT8",
    "TYPE_INT16": "INT16",
    "TYPE_INT32": "INT32",
    "TYPE_INT64": "INT64",
    "TYPE_FP16": "FP16",
    "TYPE_FP32": "FP32",
    "TYPE_FP64": "FP64",
    "TYPE_STRING": "BYTES",
    "TYPE_BF16": "BF16",
}
V2_TO_CONFIG = {v: k for k, v in CONFIG_TO_V2.items()}

#: Typed-contents field of ``InferTensorContents`` for each datatype; FP16 and
#: BF16 have none and must travel raw.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def numpy_dtype(datatype: str) -> np.dtype | None:
    """The numpy dtype for a V2 datatype name, or None if the name is unknown."""
    return NUMPY_DTYPES.get(datatype)


def v2_datatype(dtype: np.dtype) -> str:
    """The V2 datatype name for a numpy dtype (str and bytes arrays are BYTES)."""
    dtype = np.dtype(dtype)
    if dtype.kind in ("U", "S", "O"):
        return "BYTES"
    name = _BY_NUMPY.get(dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    if name is None:
        raise ValueError(f"numpy dtype {dtype} has no V2 datatype")
    return name


def serialize_bytes(array: np.ndarray) -> bytes:
    """Row-major BYTES elements, each with its 4-byte little-endian length."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, count: int) -> np.ndarray:
    """Split ``count`` length-prefixed elements out of ``buffer``.

    Raises ValueError when a prefix overruns the buffer or the element count
    does not use the buffer exactly.
    """
    view = memoryview(buffer)
    out = np.empty(count, dtype=object)
    offset = 0
    end = len(view)
    for i in range(count):
        if offset + 4 > end:
            raise ValueError(f"BYTES element {i}: length prefix runs past the end of the data")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise ValueError(f"BYTES element {i}: length {length} runs past the end of the data")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise ValueError(f"BYTES data has {end - offset} bytes left after {count} elements")
    return out
