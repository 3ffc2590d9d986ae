import json
import logging

import pytest

from fasterseg.errors import UserError
from fasterseg.latency.build import space_blocks
from fasterseg.latency.signature import Block, parse_key
from fasterseg.latency.table import SCHEMA_ID, LatencyTable, MissingKeyError


def test_round_trip_keeps_entries_and_metadata(tmp_path, tiny_table):
    path = tiny_table.save(tmp_path / "lut.json")
    raw = json.loads(path.read_text())
    assert raw["schema"] == SCHEMA_ID
    back = LatencyTable.load(path)
    assert back.entries == tiny_table.entries
    assert back.meta == tiny_table.meta
    assert len(back) == len(tiny_table) > 50


def test_loading_for_another_device_warns(tmp_path, tiny_table, caplog):
    tiny_table.meta.update(device="cuda:0", device_name="Fake GPU 9000")
    path = tiny_table.save(tmp_path / "gpu.json")
    with caplog.at_level(logging.WARNING, logger="fasterseg.latency.table"):
        LatencyTable.load(path, device="cpu")
    assert any("cuda" in r.getMessage() for r in caplog.records)


def test_loading_for_another_backend_or_host_warns(tmp_path, tiny_table, caplog):
    tiny_table.meta.update(device="cpu", device_name="Some Other CPU", backend="onnxruntime")
    path = tiny_table.save(tmp_path / "t.json")
    with caplog.at_level(logging.WARNING, logger="fasterseg.latency.table"):
        LatencyTable.load(path, device="cpu", backend="torch")
    msgs = " ".join(r.getMessage() for r in caplog.records)
    assert "Some Other CPU" in msgs and "onnxruntime" in msgs


def test_matching_table_loads_silently(tmp_path, tiny_table, caplog):
    from fasterseg.latency.backends import device_name

    tiny_table.meta["device_name"] = device_name("cpu")
    path = tiny_table.save(tmp_path / "t.json")
    with caplog.at_level(logging.WARNING, logger="fasterseg.latency.table"):
        LatencyTable.load(path, device="cpu", backend="torch", dtype="fp32", threads=1)
    assert not caplog.records


def test_missing_key_names_nearest_keys(tiny_table):
    present = Block("conv", 8, 16, 32, 32, stride=1).key
    assert present in tiny_table
    missing = Block("conv", 8, 16, 32, 40, stride=1).key
    with pytest.raises(MissingKeyError) as e:
        tiny_table[missing]
    msg = str(e.value)
    assert missing in msg and "nearest keys" in msg and "conv/H8xW16/Cin32/" in msg
    assert isinstance(e.value, UserError)


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        LatencyTable.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        LatencyTable.load(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "x/1", "entries": {}}))
    with pytest.raises(UserError, match="unsupported schema"):
        LatencyTable.load(tmp_path / "other.json")


def test_keys_parse_back_to_blocks(tiny_space):
    blocks = space_blocks(tiny_space, (64, 128))
    kinds = {b.kind for b in blocks}
    assert {"conv_x2", "skip", "conv_norm", "refine", "fusion", "head", "resize"} <= kinds
    for b in blocks:
        assert parse_key(b.key).key == b.key
    assert Block("conv_x2", 64, 128, 32, 64, stride=2).key == "conv_x2/H64xW128/Cin32/Cout64/s2"
    with pytest.raises(UserError):
        parse_key("conv/64x128")
