import json

import pytest

from fasterseg.cli.main import main


def _last_json(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_info_json_keys(capsys):
    assert main(["info", "fasterseg_student", "--size", "256x512", "--json"]) == 0
    d = _last_json(capsys)
    for key in ("params_total", "params_inference", "macs", "output_shape"):
        assert key in d
    assert d["output_shape"] == [1, 19, 256, 512]
    assert d["params_total"] > d["params_inference"] > 0


def test_info_bad_inputs(capsys):
    assert main(["info", "no_such_model"]) == 1
    assert "unknown model" in capsys.readouterr().err
    assert main(["info", "fasterseg_student", "--size", "100x100"]) == 1
    assert "nearest valid" in capsys.readouterr().err
    assert main(["info", "fasterseg_student", "--size", "big"]) == 2
    assert main(["info", "/nope/arch.json"]) == 1
    assert "not found" in capsys.readouterr().err


def test_no_command_is_usage_error(capsys):
    assert main([]) == 2


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    d = _last_json(capsys)
    assert d["torch"] and "cpu_count" in d


@pytest.mark.onnx
def test_export_onnx_parity(tmp_path, capsys):
    out = tmp_path / "s.onnx"
    rc = main(["export", "fasterseg_student", "-o", str(out), "--size", "128x256", "--verify",
               "--json"])
    d = _last_json(capsys)
    assert rc == 0 and out.is_file()
    assert d["verified"] and d["max_abs_diff"] < 1e-4


def test_debug_before_or_after_subcommand_shows_traceback():
    from fasterseg.errors import UserError

    for argv in (["--debug", "info", "nope"], ["info", "nope", "--debug"]):
        with pytest.raises(UserError):
            main(argv)
