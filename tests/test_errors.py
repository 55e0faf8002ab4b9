"""Every command's usage error is one line, `gptx: error: …`, and exit status 2 (gptx.errors)."""

from __future__ import annotations

import runpy
import sys
import warnings

import pytest

from gptx.errors import GptxError, UsageError, entry_point, one_line

from conftest import TINY, run_gptx

# (module, arguments, a fragment of the one line): argparse's own errors and each tool's own refusals
TOOLS = [
    ("gptx.analyze", ["SWEEP", "--bogus"], "unrecognized arguments: --bogus (see python -m gptx.analyze --help)"),
    ("gptx.analyze", ["/no/such/sweep"], "/no/such/sweep"),
    ("gptx.plan", ["--power", "2"], "--power is out of range (2.0)"),
    ("gptx.compare", ["/no/a", "/no/b"], "/no/a"),
    ("gptx.reproduce", ["/no/such/run"], "/no/such/run is not a folder"),
    ("gptx.evaluate", ["/no/such/run"], "/no/such/run: no such file or folder"),
    ("gptx.generate", ["RUN", "--max-new-tokens", "x"], "argument --max-new-tokens: invalid int value: 'x'"),
    ("gptx.export", ["RUN"], "the following arguments are required: out_dir"),
    ("gptx.prepare", ["/no/such.txt", "--out", "OUT"], "input /no/such.txt does not exist"),
    ("gptx.bench", ["--steps", "0"], "--steps must be positive"),
]


@pytest.mark.parametrize(("module", "args", "fragment"), TOOLS, ids=[f"{m}-{a[0]}" for m, a, _ in TOOLS])
def test_each_tool_says_a_usage_error_in_one_line_and_exits_2(module, args, fragment, tmp_path, monkeypatch,
                                                             capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [module, *args])
    with warnings.catch_warnings(), pytest.raises(SystemExit) as ended:
        warnings.simplefilter("ignore", RuntimeWarning)  # runpy: the module was imported already
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    out, err = capsys.readouterr()
    assert ended.value.code == 2, err
    assert err.count("\n") == 1 and err.startswith("gptx: error: ") and fragment in err, err
    assert "Traceback" not in out + err and list(tmp_path.iterdir()) == []  # nothing written


# Hydra's composition errors and gptx's own config checks alike
TRAIN = [
    ("model=nope", "Could not find 'model/nope' Available options in 'model': gpt2_large"),
    ("init_seed=[", "cannot parse the override 'init_seed=['"),
    ("trian.lr=1", "Could not override 'trian.lr'"),
    ("train.lr=abc", "Error merging override train.lr=abc"),
    ("train.lr=-1", "train.lr=-1.0 must be > 0"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("override", "fragment"), TRAIN, ids=[o for o, _ in TRAIN])
def test_train_says_a_config_error_in_one_line_and_exits_2(override, fragment, tmp_path):
    proc = run_gptx(*TINY, override, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gptx: error: ") and fragment in proc.stderr, \
        proc.stderr
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.slow
def test_a_sweep_hydra_cannot_compose_is_one_line_and_no_runs_table(tmp_path):
    proc = run_gptx("-m", "model=nope,gpt2_tiny", "sweep=refused", *TINY, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("gptx: error: In 'config': Could not find 'model/nope'") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert "runs.csv" not in proc.stdout and not (tmp_path / "multirun_outputs" / "refused" / "runs.csv").exists()


def test_hydra_full_error_still_gives_hydras_own_trace(tmp_path):
    proc = run_gptx("model=nope", cwd=tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "MissingConfigException" in proc.stderr


def test_entry_point_prints_one_line_with_the_errors_own_status(capsys):
    class Refused(GptxError):
        pass

    @entry_point(KeyError)
    def main(argv):
        raise {"usage": UsageError("bad\n  flag"), "refused": Refused("no"), "other": KeyError("k")}[argv[0]]

    assert (main(["usage"]), main(["refused"]), main(["other"])) == (2, 1, 2)
    assert capsys.readouterr().err.splitlines() == ["gptx: error: bad flag", "gptx: error: no", "gptx: error: 'k'"]
    assert one_line("") == "gptx: error: unknown error"


def test_ctrl_c_in_a_command_is_one_line_and_130(capsys):
    @entry_point()
    def main(argv):
        raise KeyboardInterrupt

    assert main([]) == 130 and capsys.readouterr().err == "gptx: interrupted\n"
