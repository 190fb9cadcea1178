"""insightface RecordIO without mxnet: the test writes a .rec/.idx pair and reads it back."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.training import identity_face
from training.data.recordio import (
    MAGIC,
    IRHeader,
    RecordIOError,
    RecordIOReader,
    RecordIOWriter,
    pack_record,
    unpack_record,
    write_insightface_set,
)
from training.data.sources import RecordIOSource


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_header_round_trip_scalar_and_vector_labels() -> None:
    header, rest = unpack_record(pack_record(IRHeader(0, 7.0, 3, 0), b"abc"))
    assert (header.flag, header.label, header.id, rest) == (0, 7.0, 3, b"abc")
    header, rest = unpack_record(pack_record(IRHeader(0, np.array([5.0, 1.0]), 9), b"xy"))
    assert header.flag == 2 and header.class_label == 5 and rest == b"xy"
    np.testing.assert_array_equal(header.label, [5.0, 1.0])


def test_part_layout_matches_mxnet(tmp_path: Path) -> None:
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with RecordIOWriter(rec, idx) as writer:
        writer.write(0, b"hello")  # 5 bytes -> padded to 8
        writer.write(1, b"1234")
    data = rec.read_bytes()
    magic, lrecord = struct.unpack_from("<II", data, 0)
    assert magic == MAGIC and lrecord >> 29 == 0 and lrecord & ((1 << 29) - 1) == 5
    assert data[8:13] == b"hello" and data[13:16] == b"\0\0\0"
    assert idx.read_text() == "0\t0\n1\t16\n"


def test_records_containing_the_magic_are_split_and_rejoined(tmp_path: Path) -> None:
    magic = struct.pack("<I", MAGIC)
    payload = b"abcd" + magic + b"efgh" + magic + b"ij"  # magic at aligned offsets 4, 12
    unaligned = b"a" + magic + b"xyz"  # not aligned: stays one part
    rec, idx = tmp_path / "m.rec", tmp_path / "m.idx"
    with RecordIOWriter(rec, idx) as writer:
        writer.write(5, payload)
        writer.write(6, unaligned)
    flags = []
    data, position = rec.read_bytes(), 0
    while position < len(data):
        _, lrecord = struct.unpack_from("<II", data, position)
        length = lrecord & ((1 << 29) - 1)
        flags.append(lrecord >> 29)
        position += 8 + length + (-length % 4)
    assert flags == [1, 2, 3, 0]
    reader = RecordIOReader(rec, idx)
    assert reader.read(5) == payload
    assert reader.read(6) == unaligned
    with pytest.raises(RecordIOError, match="no record with key 7"):
        reader.read(7)


@pytest.mark.parametrize("label_vector", [False, True])
def test_insightface_set_reads_as_a_face_source(tmp_path: Path, label_vector: bool) -> None:
    items, faces = [], []
    for identity in (3, 8, 11):  # sparse labels become 0..C-1
        for image in range(2):
            pixels = identity_face(identity, image)
            faces.append(pixels)
            items.append((identity, _jpeg(pixels)))
    rec, idx = tmp_path / "train.rec", tmp_path / "train.idx"
    assert write_insightface_set(rec, idx, items, label_vector=label_vector) == 6
    reader = RecordIOReader(rec)
    assert reader.image_keys() == [1, 2, 3, 4, 5, 6]
    header0 = reader.header(0)
    np.testing.assert_array_equal(header0.label, [7, 10])  # images 1..6, identities 7..9
    np.testing.assert_array_equal(reader.header(8).label, [3, 5])  # identity 8: images 3, 4

    source = RecordIOSource(tmp_path)  # the folder form
    assert len(source) == 6 and source.num_classes == 3
    np.testing.assert_array_equal(source.labels, [0, 0, 1, 1, 2, 2])
    assert source.class_names == ["3", "8", "11"]
    decoded = source.load(4)
    assert decoded.shape == (112, 112, 3) and decoded.dtype == np.uint8
    # exactly the JPEG of record 5 (key 5 = sample 4), decoded
    expected = np.asarray(Image.open(io.BytesIO(items[4][1])).convert("RGB"))
    np.testing.assert_array_equal(decoded, expected)
    assert np.abs(decoded.astype(int) - faces[4].astype(int)).mean() < 8.0


def test_reader_reopens_after_pickling(tmp_path: Path) -> None:
    import pickle

    rec, idx = tmp_path / "p.rec", tmp_path / "p.idx"
    write_insightface_set(rec, idx, [(0, b"x" * 10), (1, b"y" * 3)])
    reader = RecordIOReader(rec, idx)
    reader.read(1)
    clone = pickle.loads(pickle.dumps(reader))  # what a worker process receives
    assert unpack_record(clone.read(2))[1] == b"y" * 3


def test_bad_magic_is_reported(tmp_path: Path) -> None:
    rec, idx = tmp_path / "b.rec", tmp_path / "b.idx"
    rec.write_bytes(b"\0" * 16)
    idx.write_text("0\t0\n")
    with pytest.raises(RecordIOError, match="bad magic"):
        RecordIOReader(rec, idx).read(0)
