"""Uncompressed PNG encoding, so that every image of a study has the same byte length.

A compressed PNG's size depends on its content: a reader could tell real from synthetic by the
Content-Length alone if one kind compresses better (e.g. smoother generator output). Stored
(uncompressed) deflate blocks make the file length a function of width, height and channels
only. The encoder is written out here instead of using Pillow so that the chunk list (IHDR,
IDAT, IEND; no text, time, gamma or other ancillary chunk) and the deflate block layout cannot
change with a library version.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPES = {1: 0, 3: 2}  # channels -> PNG colour type (grey, RGB)
_STORED_BLOCK = 65535  # the largest stored deflate block


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _stored_zlib(raw: bytes) -> bytes:
    """A zlib stream of stored blocks: its length depends on ``len(raw)`` only."""
    out = bytearray(b"\x78\x01")
    for start in range(0, len(raw), _STORED_BLOCK):  # never empty: each row has a filter byte
        block = raw[start : start + _STORED_BLOCK]
        final = start + _STORED_BLOCK >= len(raw)
        out += struct.pack("<BHH", int(final), len(block), len(block) ^ 0xFFFF) + block
    out += struct.pack(">I", zlib.adler32(raw))
    return bytes(out)


def encode_png(image: np.ndarray) -> bytes:
    """8-bit PNG of a uint8 (C, H, W) image with C = 1 (grey) or 3 (RGB); no filter, no compression."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in _COLOR_TYPES:
        raise ValueError(f"expected a uint8 (1|3, H, W) image, got {image.dtype} {image.shape}")
    channels, height, width = image.shape
    pixels = np.ascontiguousarray(np.moveaxis(image, 0, -1)).reshape(height, width * channels)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels], axis=1)  # filter byte 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, _COLOR_TYPES[channels], 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", _stored_zlib(rows.tobytes())) + _chunk(b"IEND", b"")
