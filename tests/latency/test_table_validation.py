"""A latency table with NaN / infinite / negative entries is refused on load (one line, the entry
named); ``latency check`` of a table this machine cannot time says so in one line; and
``check_table_matches`` lists the mismatches between a table and the run that uses it."""

import json
import logging

import pytest
import torch

from fasterseg.cli.main import main
from fasterseg.errors import UserError
from fasterseg.latency.table import LatencyTable


def _write_with(tmp_path, table, key, token):
    """Save ``table`` with ``key`` set to the raw JSON text ``token`` (e.g. NaN, -1.5)."""
    path = table.save(tmp_path / "lut.json")
    raw = json.loads(path.read_text())
    raw["entries"][key] = "@@"
    path.write_text(json.dumps(raw).replace('"@@"', token))
    return path


@pytest.mark.parametrize("token,shown", [
    ("NaN", "nan ms"), ("Infinity", "inf ms"), ("-Infinity", "-inf ms"), ("-0.5", "-0.5 ms"),
])  # fmt: skip
def test_non_finite_or_negative_entry_is_refused(tmp_path, tiny_table, token, shown):
    key = sorted(tiny_table.entries)[3]
    path = _write_with(tmp_path, tiny_table, key, token)
    with pytest.raises(UserError) as e:
        LatencyTable.load(path)
    msg = str(e.value)
    assert f"entry {key!r} is {shown}" in msg and "finite and >= 0" in msg and "\n" not in msg


def test_non_numeric_entry_is_refused(tmp_path, tiny_table):
    key = sorted(tiny_table.entries)[0]
    path = _write_with(tmp_path, tiny_table, key, '"fast"')
    with pytest.raises(UserError, match="not a number of milliseconds"):
        LatencyTable.load(path)


def test_zero_entry_is_fine(tmp_path, tiny_table):
    key = sorted(tiny_table.entries)[0]
    assert LatencyTable.load(_write_with(tmp_path, tiny_table, key, "0")).entries[key] == 0.0


def test_bad_pending_timing_and_input_size_are_refused(tmp_path, tiny_table):
    tiny_table.pending = {"conv/x": [1.0, float("nan")]}
    d = json.loads(json.dumps(tiny_table.to_dict(), allow_nan=True))
    with pytest.raises(UserError, match="pending timing of 'conv/x' is nan ms"):
        LatencyTable.from_dict(d)
    d["pending"] = {}
    d["meta"]["input_size"] = [64]
    with pytest.raises(UserError, match=r"meta.input_size must be \[H, W\]"):
        LatencyTable.from_dict(d)


def test_estimate_cli_names_the_entry(tmp_path, tiny_table, capsys):
    key = sorted(tiny_table.entries)[0]
    path = _write_with(tmp_path, tiny_table, key, "NaN")
    assert main(["latency", "estimate", "fasterseg_student", "--lut", str(path)]) == 1
    err = capsys.readouterr().err
    assert key in err and "nan ms" in err and "total" not in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_check_of_a_cuda_table_without_cuda_is_one_line(tmp_path, tiny_table, capsys):
    tiny_table.meta.update(device="cuda:0", device_name="NVIDIA H200")
    path = tiny_table.save(tmp_path / "gpu.json")
    assert main(["latency", "check", "--lut", str(path), "--samples", "2"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "AssertionError" not in err and "measured on cuda:0 (NVIDIA H200)" in err
    assert "no CUDA device" in err


def test_check_of_a_missing_cuda_index_is_one_line(tmp_path, tiny_table, capsys):
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    tiny_table.meta.update(device=f"cuda:{n + 3}")
    path = tiny_table.save(tmp_path / "gpu.json")
    assert main(["latency", "check", "--lut", str(path), "--samples", "2"]) == 1
    err = capsys.readouterr().err
    assert "cannot be checked here" in err or "does not exist here" in err
    assert "Traceback" not in err and "Error:" not in err


def test_check_table_matches(tiny_table, caplog):
    from fasterseg.latency.backends import device_name
    from fasterseg.latency.table import check_table_matches

    tiny_table.meta.update(device="cpu", device_name=device_name("cpu"), backend="torch",
                           dtype="fp32", threads=1)
    with caplog.at_level(logging.WARNING):
        assert check_table_matches(tiny_table, "cpu", "torch", "fp32", 1) == []
        assert check_table_matches(tiny_table) == []  # None skips every setting
        issues = check_table_matches(tiny_table, device="cuda:1", backend="onnxruntime",
                                     dtype="fp16")
    assert not caplog.records  # it reports, the caller decides how to warn or refuse
    assert issues == ["measured on device 'cpu', used for 'cuda'",
                      "measured with backend 'torch', used with 'onnxruntime'",
                      "measured with dtype 'fp32', used with 'fp16'"]
    tiny_table.meta["device_name"] = "Some Other CPU"
    assert check_table_matches(tiny_table, device="cpu") == [
        f"measured on 'Some Other CPU', this machine has {device_name('cpu')!r}"]


def test_number_too_long_to_parse_is_one_line(tmp_path, tiny_table):
    key = sorted(tiny_table.entries)[0]
    path = _write_with(tmp_path, tiny_table, key, "9" * 5000)
    with pytest.raises(UserError, match="holds an unreadable value"):
        LatencyTable.load(path)
