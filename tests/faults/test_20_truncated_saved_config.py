"""A truncated or edited `.hydra/config.yaml` is refused by `gptx.reproduce` in one line (issue 32, item 9).

The saved config must hash to the `config_sha256` its run recorded in result.json. A file cut short
(by a full disk, a partial copy) would otherwise be filled in with today's defaults, key by key, and
reproduced as a run it never was; an edited one would be reproduced as the run. Both are refused before
anything is written, the folder byte-identical; `--allow-config-change` runs the config as it now reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import faultkit
import pytest
from faultkit import run_gptx, tree_digest

pytestmark = pytest.mark.slow

RUN = faultkit.SHORT
REFUSAL = "the saved config does not match its recorded hash (config_sha256 in result.json): truncated or edited"


completed = faultkit.completed  # a finished run of SHORT (a pytest fixture)


def truncate_at_line(text: str) -> str:
    """The first lines of a config, up to a line end near its middle: still valid YAML, dozens of keys gone."""
    return text[: text.index("\n", len(text) // 2) + 1]


@pytest.mark.parametrize("damage", ["at_a_line_end", "mid_line", "edited_value"])
def test_a_saved_config_that_does_not_hash_right_is_one_line(completed, tmp_path, damage):
    run_dir = Path(shutil.copytree(completed, tmp_path / "run"))
    config = run_dir / ".hydra" / "config.yaml"
    text = config.read_text()
    if damage == "at_a_line_end":
        config.write_text(truncate_at_line(text))
    elif damage == "mid_line":  # cut inside a number: `tokens: 307200` reads as `tokens: 307`, valid, and wrong
        config.write_text(text[: text.index("  tokens: 307200\n") + len("  tokens: 307")])
    else:
        assert "  lr: 0.0004\n" in text
        config.write_text(text.replace("  lr: 0.0004\n", "  lr: 0.0005\n"))
    before = tree_digest(run_dir)
    proc = run_gptx(str(run_dir), module="gptx.reproduce", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stdout == "", proc.stderr[-3000:]  # no warnings before it
    assert proc.stderr.startswith("gptx: error: ") and REFUSAL in proc.stderr, proc.stderr
    if damage != "edited_value":
        assert "keys missing)" in proc.stderr
    assert tree_digest(run_dir) == before and not (run_dir / "reproductions").exists()


def test_an_edited_config_runs_only_when_asked(completed, tmp_path):
    run_dir = Path(shutil.copytree(completed, tmp_path / "run"))
    config = run_dir / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("  lr: 0.0004\n", "  lr: 0.0005\n"))
    proc = run_gptx(str(run_dir), "--allow-config-change", module="gptx.reproduce", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]  # it ran, and another lr gives other weights
    assert proc.stdout.startswith("DIFFERENT\n")
    assert "does not hash to the config_sha256 in result.json" in proc.stderr


def test_the_untouched_config_still_reproduces_identical(completed, tmp_path):
    run_dir = Path(shutil.copytree(completed, tmp_path / "run"))
    proc = run_gptx(str(run_dir), module="gptx.reproduce", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("IDENTICAL\n"), proc.stderr[-3000:]
