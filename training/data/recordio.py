"""insightface RecordIO (``train.rec`` + ``train.idx``) without mxnet.

The format is MXNet's (dmlc-core) RecordIO. A ``.rec`` file is a sequence of parts::

    [uint32 magic 0xced7230a][uint32 lrecord][payload, zero-padded to 4 bytes]

``lrecord`` holds the continuation flag in its upper 3 bits and the payload length in
the lower 29. A record whose bytes contain the magic number at a 4-byte-aligned offset is
stored as several parts (flag 1 = first, 2 = middle, 3 = last) with each such magic
removed; the reader puts it back between the parts. Flag 0 is a whole record.

A record's payload is an ``IRHeader`` (``struct '<IfQQ'``: flag, label, id, id2) followed,
when ``flag > 0``, by ``flag`` float32 labels (then ``label`` is that vector), then the
encoded image (JPEG). The ``.idx`` file is text, one ``key\\toffset`` line per record.

insightface sets start with a header record (key 0, ``flag > 0``) whose label
``(a, b)`` says that images are records ``1 .. a-1`` and identity records ``a .. b-1``.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")
_LENGTH_MASK = (1 << 29) - 1


class RecordIOError(ValueError):
    """A RecordIO file is malformed or a key is missing."""


@dataclass(frozen=True)
class IRHeader:
    """The image-record header: ``label`` is a float, or a vector when ``flag > 0``."""

    flag: int
    label: float | np.ndarray
    id: int = 0
    id2: int = 0

    @property
    def class_label(self) -> int:
        """The identity: the label, or the first entry of a label vector."""
        value = self.label if np.isscalar(self.label) else np.asarray(self.label).ravel()[0]
        return int(value)  # type: ignore[arg-type]  # a scalar: float or a numpy number


def pack_record(header: IRHeader, payload: bytes) -> bytes:
    """``IRHeader`` + payload, as ``mx.recordio.pack`` lays it out."""
    if isinstance(header.label, int | float) or np.isscalar(header.label):
        return _HEADER.pack(0, float(header.label), header.id, header.id2) + payload  # type: ignore[arg-type]
    labels = np.asarray(header.label, dtype=np.float32).ravel()
    return _HEADER.pack(labels.size, 0.0, header.id, header.id2) + labels.tobytes() + payload


def unpack_record(record: bytes) -> tuple[IRHeader, bytes]:
    """Splits a record into its ``IRHeader`` and the remaining bytes (the image)."""
    if len(record) < _HEADER.size:
        raise RecordIOError(f"record of {len(record)} bytes is shorter than its header")
    flag, label, id_, id2 = _HEADER.unpack_from(record)
    rest = record[_HEADER.size :]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise RecordIOError(f"record announces {flag} labels but is too short")
        labels = np.frombuffer(rest, dtype=np.float32, count=flag).copy()
        return IRHeader(flag, labels, id_, id2), rest[4 * flag :]
    return IRHeader(0, float(label), id_, id2), rest


def _aligned_magic_positions(data: bytes) -> list[int]:
    positions: list[int] = []
    start = 0
    while True:
        found = data.find(_MAGIC_BYTES, start)
        if found < 0:
            return positions
        if found % 4 == 0:
            positions.append(found)
            start = found + 4
        else:
            start = found + 1


class RecordIOWriter:
    """Writes an indexed RecordIO pair, as ``mx.recordio.MXIndexedRecordIO`` does.

    Args:
        rec_path: the ``.rec`` file to create.
        idx_path: the ``.idx`` file to create.
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path) -> None:
        self._rec = open(rec_path, "wb")  # noqa: SIM115 - closed in close()
        self._idx = open(idx_path, "w", encoding="utf-8")  # noqa: SIM115

    def _write_part(self, flag: int, data: bytes) -> None:
        self._rec.write(_MAGIC_BYTES + struct.pack("<I", (flag << 29) | len(data)) + data)
        self._rec.write(b"\0" * (-len(data) % 4))

    def write(self, key: int, record: bytes) -> None:
        """Appends ``record`` (e.g. from :func:`pack_record`) under ``key``."""
        if len(record) > _LENGTH_MASK:
            raise RecordIOError(f"record of {len(record)} bytes exceeds the 29-bit length")
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        cuts = _aligned_magic_positions(record)
        if not cuts:
            self._write_part(0, record)
            return
        start = 0
        for number, cut in enumerate(cuts):
            self._write_part(1 if number == 0 else 2, record[start:cut])
            start = cut + 4
        self._write_part(3, record[start:])

    def close(self) -> None:
        self._rec.close()
        self._idx.close()

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_index(idx_path: str | Path) -> dict[int, int]:
    """``{key: byte offset}`` from an ``.idx`` file."""
    index: dict[int, int] = {}
    for number, line in enumerate(Path(idx_path).read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise RecordIOError(f"{idx_path}:{number}: expected 'key<TAB>offset', got {line!r}")
        index[int(fields[0])] = int(fields[1])
    return index


class RecordIOReader:
    """Random access to an indexed RecordIO file; safe to use in forked workers.

    The ``.rec`` file is memory-mapped on first use in each process (a mapping made
    before a fork is not reused after it).

    Args:
        rec_path: the ``.rec`` file.
        idx_path: its ``.idx`` (default: same stem).
    """

    def __init__(self, rec_path: str | Path, idx_path: str | Path | None = None) -> None:
        self.rec_path = Path(rec_path)
        self.idx_path = Path(idx_path) if idx_path is not None else self.rec_path.with_suffix(
            ".idx"
        )
        for path in (self.rec_path, self.idx_path):
            if not path.is_file():
                raise RecordIOError(f"RecordIO file not found: {path}")
        self.index = read_index(self.idx_path)
        self._map: mmap.mmap | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_map"], state["_pid"] = None, -1  # mappings do not pickle; reopen lazily
        return state

    @property
    def keys(self) -> list[int]:
        return sorted(self.index)

    def _mapping(self) -> mmap.mmap:
        if self._map is None or self._pid != os.getpid():
            with open(self.rec_path, "rb") as handle:
                self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._pid = os.getpid()
        return self._map

    def read_at(self, offset: int) -> bytes:
        """The record starting at byte ``offset``, multi-part records joined."""
        data = self._mapping()
        parts: list[bytes] = []
        position = offset
        while True:
            if position + 8 > len(data):
                raise RecordIOError(f"{self.rec_path}: truncated record at offset {position}")
            magic, lrecord = struct.unpack_from("<II", data, position)
            if magic != MAGIC:
                raise RecordIOError(
                    f"{self.rec_path}: bad magic {magic:#x} at offset {position}"
                )
            flag, length = lrecord >> 29, lrecord & _LENGTH_MASK
            start = position + 8
            parts.append(bytes(data[start : start + length]))
            position = start + length + (-length % 4)
            if flag in (0, 3):
                if flag == 0 and len(parts) > 1:
                    raise RecordIOError(f"{self.rec_path}: whole record inside a split one")
                return _MAGIC_BYTES.join(parts)
            if flag == 1 and len(parts) > 1:
                raise RecordIOError(f"{self.rec_path}: split record restarted at {position}")

    def read(self, key: int) -> bytes:
        """The record stored under ``key``."""
        try:
            offset = self.index[key]
        except KeyError:
            raise RecordIOError(f"{self.rec_path}: no record with key {key}") from None
        return self.read_at(offset)

    def header(self, key: int) -> IRHeader:
        """Only the header of record ``key``."""
        return unpack_record(self.read(key))[0]

    def image_keys(self) -> list[int]:
        """The keys of image records: ``1 .. a-1`` after an insightface header record,
        else every key."""
        keys = self.keys
        if 0 in self.index:
            first = self.header(0)
            if first.flag > 0:
                end = int(np.asarray(first.label).ravel()[0])
                return [k for k in keys if 1 <= k < end]
        return keys

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def write_insightface_set(
    rec_path: str | Path,
    idx_path: str | Path,
    items: Iterable[tuple[int, bytes]],
    *,
    label_vector: bool = False,
) -> int:
    """Writes ``(label, encoded image)`` items as an insightface-style set.

    Key 0 is the header record, then images (keys 1..n), then one identity record per
    label with the key range of its images, as insightface's ``im2rec`` lays them out.
    Items must be grouped by label.

    Args:
        label_vector: store labels as a 1-element vector (``flag = 1``), as some sets do.

    Returns:
        The number of images written.
    """
    items = list(items)
    ranges: dict[int, list[int]] = {}
    for key, (label, _) in enumerate(items, start=1):
        ranges.setdefault(label, [key, key + 1])[1] = key + 1
    first_identity = len(items) + 1
    end = first_identity + len(ranges)
    with RecordIOWriter(rec_path, idx_path) as writer:
        writer.write(0, pack_record(IRHeader(2, np.array([first_identity, end], np.float32)), b""))
        for key, (label, payload) in enumerate(items, start=1):
            label_value: float | np.ndarray = (
                np.array([label], np.float32) if label_vector else float(label)
            )
            writer.write(key, pack_record(IRHeader(0, label_value, key, 0), payload))
        for key, (_, (start, stop)) in enumerate(sorted(ranges.items()), start=first_identity):
            writer.write(key, pack_record(IRHeader(2, np.array([start, stop], np.float32)), b""))
    return len(items)
