"""Scenario 9: reproduce into a new folder: identical hashes and loss; refuses the original folder;
warns or refuses on changed code/torch/device/data fingerprint unless told otherwise (and records that).

tests/test_reproduce.py covers the command line (IDENTICAL into RUN/reproductions/), --out naming the
original, a symlink to it, its parent or a folder inside it, and torch/CUDA/device changes. Here:
the original folder spelled other ways (`run/.`, `x/../run`, relative), and the data fingerprint
end to end: the corpus file changes after the run, and the reproduction says so and records it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faultkit import TINY, result, run_gptx, tree_digest, write_corpus

from gptx.tools.reproduce import main

pytestmark = pytest.mark.slow


@pytest.fixture
def original(tmp_path) -> Path:
    """A completed run (from the command line) on a corpus file of its own."""
    corpus = write_corpus(tmp_path / "corpus.txt")
    proc = run_gptx(*TINY, f"data.path={corpus}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / "run"


def test_scenario_09_the_original_folder_is_refused_however_it_is_spelled(original, capsys, monkeypatch):
    monkeypatch.chdir(original.parent)
    before = tree_digest(original)
    for out in (f"{original}/.", f"{original}/../run", "run", "./run/", str(original.parent / "." / "run")):
        assert main([str(original), "--out", out]) == 2, out
        assert "refusing to reproduce into the original folder" in capsys.readouterr().err
    assert tree_digest(original) == before  # not a byte, not an mtime
    assert not (original / "reproductions").exists()


def test_scenario_09_identical_in_a_new_folder_then_a_changed_corpus_is_reported(original, tmp_path, capsys):
    before = tree_digest(original)
    assert main([str(original), "--out", str(tmp_path / "same")]) == 0
    assert capsys.readouterr().out.startswith("IDENTICAL\n")
    want, got = result(original), result(tmp_path / "same")
    assert (got["final_weights_sha256"], got["test_loss"]) == (want["final_weights_sha256"], want["test_loss"])
    assert got["data_sha256"] == want["data_sha256"]

    write_corpus(tmp_path / "corpus.txt", part=1)  # someone replaced the data file since
    assert main([str(original), "--out", str(tmp_path / "changed")]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("DIFFERENT\n")
    assert f"warning: data_sha256 differs: original '{want['data_sha256']}'" in captured.err
    report = json.loads((tmp_path / "changed" / "reproduction.json").read_text())
    assert report["verdict"] == "DIFFERENT"
    [diff] = [d for d in report["environment_differences"] if d["field"] == "data_sha256"]
    assert diff["original"] == want["data_sha256"] != diff["now"]
    assert any("data_sha256 differs" in w for w in report["warnings"])
    assert result(tmp_path / "changed")["data_sha256"] == diff["now"]  # the new folder holds the evidence
    assert tree_digest(original) == before
