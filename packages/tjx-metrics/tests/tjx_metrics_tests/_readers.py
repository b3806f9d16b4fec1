"""Readers for the tests: TensorBoard event files (TFRecord framing + tensorboardX's protos) and
W&B's offline ``.wandb`` file (a LevelDB-style log of ``wandb_internal_pb2.Record`` protos)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any


def read_tb_events(path: Path) -> list[Any]:
    """All ``Event`` protos of one event file, checking both CRCs of every record."""
    from tensorboardX.proto import event_pb2  # lazy: an optional package
    from tensorboardX.record_writer import masked_crc32c

    data = Path(path).read_bytes()
    pos, events = 0, []
    while pos < len(data):
        header = data[pos : pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        assert header_crc == masked_crc32c(header), "corrupt record header"
        payload = data[pos + 12 : pos + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        assert payload_crc == masked_crc32c(payload), "corrupt record payload"
        events.append(event_pb2.Event.FromString(payload))
        pos += 16 + length
    return events


def tb_values(log_dir: Path) -> dict[str, list[tuple[int, Any]]]:
    """``{tag: [(step, value)]}`` over every event file under ``log_dir``: scalars as floats,
    histograms as ``HistogramProto``, text as ``str``."""
    out: dict[str, list[tuple[int, Any]]] = {}
    files = sorted(Path(log_dir).rglob("events.out.tfevents.*"))
    assert files, f"no event files under {log_dir}"
    for file in files:
        for event in read_tb_events(file):
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    item: Any = value.simple_value
                elif kind == "histo":
                    item = value.histo
                elif kind == "tensor" and value.tensor.string_val:
                    item = value.tensor.string_val[0].decode("utf-8")
                else:
                    continue
                out.setdefault(value.tag, []).append((event.step, item))
    return out


_BLOCK = 32768
_HEADER = 7  # crc32 (4) + length (2) + type (1)


def read_wandb_records(path: Path) -> list[Any]:
    """All ``Record`` protos of a ``run-*.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    pos, chunks, buf = 7, [], b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, rtype = struct.unpack("<IHB", data[pos : pos + _HEADER])
        pos += _HEADER
        if pos + length > len(data):
            break  # a record still being written
        chunk = data[pos : pos + length]
        pos += length
        if rtype == 1:  # FULL
            chunks.append(chunk)
        elif rtype == 2:  # FIRST
            buf = chunk
        elif rtype == 3:  # MIDDLE
            buf += chunk
        elif rtype == 4:  # LAST
            chunks.append(buf + chunk)
            buf = b""
        else:
            break  # zero padding at the end of the file
    records = []
    for chunk in chunks:
        record = pb.Record()  # type: ignore[attr-defined]
        record.ParseFromString(chunk)
        records.append(record)
    return records


def wandb_history(records: list[Any]) -> list[dict[str, Any]]:
    """History rows as ``{key: json text}`` (``_step`` included)."""
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {(i.key or "/".join(i.nested_key)): i.value_json for i in record.history.item}
            )
    return rows
