"""``python -m petl_kit predict`` and ``export``."""

import pandas as pd
import soundfile as sf

from petl_kit.__main__ import main
from tests.share.conftest import tone


def test_predict_writes_a_csv(make_run, tmp_path, capsys):
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    sf.write(tmp_path / "b.wav", tone(2.0, freq=1000), 16000)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(make_run("ast", "lora")), str(tmp_path / "a.wav"),
                 str(tmp_path / "b.wav"), "--out", str(out)]) == 0  # fmt: skip
    table = pd.read_csv(out)
    assert len(table) == 2 and {"file", "label", "probability", "tone"} <= set(table.columns)
    assert "2 predictions" in capsys.readouterr().out


def test_predict_and_export_errors_are_one_line_exit_2(make_run, tmp_path, capsys):
    run = str(make_run("ast", "lora"))
    assert main(["predict", run, str(tmp_path / "missing.wav")]) == 2
    assert "audio file not found" in capsys.readouterr().err
    assert main(["export", run, str(tmp_path / "hf"), "--format", "hf"]) == 2
    assert "--format kit" in capsys.readouterr().err


def test_export_kit_then_predict_from_it(make_run, tmp_path, capsys):
    out = tmp_path / "kit"
    assert main(["export", str(make_run("ast", "lora")), str(out), "--format", "kit"]) == 0
    assert (out / "README.md").is_file()
    sf.write(tmp_path / "a.wav", tone(1.0), 16000)
    capsys.readouterr()
    assert main(["predict", str(out), str(tmp_path / "a.wav")]) == 0
    assert "a.wav" in capsys.readouterr().out
