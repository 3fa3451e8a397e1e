"""Read back what a W&B run logged, from its ``run-<id>.wandb`` file (tests only).

W&B 0.31 writes records in the LevelDB log format behind a 7-byte ":W&B" header and no
longer ships a Python reader, so this is one: 32 KiB blocks of chunks, each with a
7-byte header (CRC32C, length, type FULL=1 FIRST=2 MIDDLE=3 LAST=4), joined into
protobuf ``Record`` messages.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
FILE_HEADER = 7
CHUNK_HEADER = 7


def records(path: str | Path) -> list:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    out, pending, position = [], b"", FILE_HEADER
    while position + CHUNK_HEADER <= len(data):
        room = BLOCK - position % BLOCK
        if room < CHUNK_HEADER:  # block trailer padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + CHUNK_HEADER])
        if kind == 0 and length == 0:
            position += room
            continue
        chunk = data[position + CHUNK_HEADER:position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def run_file(run_root: str | Path) -> Path:
    files = sorted(Path(run_root).glob("wandb/offline-run-*/run-*.wandb"))
    if len(files) != 1:
        raise AssertionError(f"expected one offline W&B run under {run_root}, found {len(files)}")
    return files[0]


def items(update) -> dict:
    """A history, config or summary update as {"a/b": value}; W&B splits "a/b" keys into parts."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in update}
