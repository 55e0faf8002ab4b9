"""The docs' commands run: every `python -m gptx.…` line of a shell block in README.md and docs/*.md.

A block runs as written, in one scratch project per session (later blocks see earlier blocks' output), at
tiny size: gptx.train gets the suite's tiny model and few steps, `--sims` is cut to a few sweeps, and the
placeholders the docs use (RUN_DIR, A, B, MODEL, …) name a tiny run trained once, or synthetic sweeps for
the analysis. A block that cannot run here says so in an HTML comment on the line above it, with a reason:

    <!-- docs-test: needs gpu: … -->   <!-- docs-test: needs slurm: … -->   <!-- docs-test: needs real data: … -->
    <!-- docs-test: long: … -->        <!-- docs-test: synopsis: … -->   (flags checked against --help)

An unmarked block whose command fails fails the test. The tools run in this process (their `main(argv)`),
gptx.train in a subprocess, as users start it. A marked block is still checked for staleness: each flag
of a tool is one its --help lists, and gptx.train's overrides compose (Hydra's compose, the first job of a
sweep; not in a block that first writes its own config files).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO, TINY

pytestmark = pytest.mark.docs

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*docs-test:\s*(needs gpu|needs slurm|needs real data|long|synopsis)\s*:\s*(\S.*?)\s*-->")
COMMAND = re.compile(r"^(?:\$\s+)?(?:\w+=\S*\s+)*python -m (gptx(?:\.\w+)+)(\s.*)?$")
# What the docs' placeholders stand for in the scratch project (see `project`).
PLACEHOLDERS = {
    "RUN_DIR": "runs/a", "RUN_A": "runs/a", "RUN_B": "runs/b", "A": "runs/a", "B": "runs/b", "MODEL": "runs/a",
    "OUT_DIR": "export", "DIR": "reproduced", "NEW_DIR": "rerun_config", "…": "rerun_hydra", "$S": "1", "S": "1",
}
FEW_SIMS = "2"


@dataclass
class Block:
    """A fenced shell block of a doc, its marker, and its `python -m gptx.…` commands (continuations joined)."""

    doc: Path
    line: int
    marker: tuple[str, str] | None
    commands: list[str] = field(default_factory=list)
    writes_config: bool = False
    """Whether the block writes files (a heredoc) that its commands then use."""

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def shell_blocks(doc: Path) -> list[Block]:
    """Every shell block of `doc` holding a `python -m gptx.` command."""
    lines = doc.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = lines[i - 1] if i > 0 else ""
        marker = MARKER.search(above)
        if "docs-test" in above and marker is None:
            raise AssertionError(f"{doc.name}:{i}: a docs-test marker needs a known kind and a reason: {above}")
        if fence.group(1) in SHELL_LANGS:
            block = Block(doc, i + 1, (marker.group(1), marker.group(2)) if marker else None)
            joined = "\n".join(lines[i + 1:end]).replace("\\\n", " ")
            block.commands = [m.group(0).removeprefix("$").strip()
                              for m in map(COMMAND.match, (c.strip() for c in joined.splitlines())) if m]
            block.writes_config = "<<" in joined
            if block.commands:
                blocks.append(block)
        i = end + 1
    return blocks


BLOCKS = [block for doc in DOCS for block in shell_blocks(doc)]


def words(command: str, root: Path) -> tuple[str, list[str]]:
    """The module and its arguments, as the shell would split them, placeholders and `$(realpath …)` resolved."""
    split = shlex.split(command, comments=True)
    module, *args = split[split.index("python") + 2:]  # after any VAR=value the line sets
    out = []
    for arg in args:
        if arg.startswith("/tmp/"):  # the scratch project's own tmp/
            arg = f"{root}{arg}"
        for name, value in PLACEHOLDERS.items():
            arg = re.sub(rf"(?<![\w.]){re.escape(name)}(?![\w])", value, arg)
        arg = re.sub(r"\$\(realpath ([^)]+)\)", lambda m: str((root / m.group(1)).resolve()), arg)
        out.append(arg)
    return module, out


def tiny(module: str, args: list[str]) -> list[str]:
    """The command at the test's size: gptx.train's tiny model and steps, a few simulated sweeps."""
    if module == "gptx.train":
        return [*args, *TINY]
    if module in ("gptx.plan", "gptx.analysis.simulate"):
        args = [FEW_SIMS if i and args[i - 1] == "--sims" else a for i, a in enumerate(args)]
        return args if "--sims" in args else [*args, "--sims", FEW_SIMS]
    return args


def run_command(module: str, args: list[str], root: Path) -> tuple[int, str]:
    """Run one command in the scratch project: gptx.train as a subprocess, the tools' main(argv) here."""
    if module == "gptx.train":
        proc = subprocess.run([sys.executable, "-m", module, *args], cwd=root, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"})
        return proc.returncode, proc.stdout[-2000:] + proc.stderr[-3000:]
    main = importlib.import_module(module).main
    cwd = Path.cwd()
    os.chdir(root)
    try:
        status = main(args)
    except SystemExit as e:
        status = e.code
    finally:
        os.chdir(cwd)
    return status or 0, ""


def _sweep(folder: Path, arms: tuple[str, ...], seeds: int = 5, effect: float = -0.02) -> None:
    """A finished sweep on disk as training leaves it (result.json only): arms at paired init seeds."""
    for arm in arms:
        for seed in range(1, seeds + 1):
            loss = 3.7 + 0.02 * ((seed * 7) % 5 - 2) / 2 + (effect if arm != "baseline" else 0.0) + 0.001 * seed
            run = folder / f"intervention={arm},init_seed={seed}"
            run.mkdir(parents=True)
            (run / "result.json").write_text(json.dumps({
                "status": "completed", "intervention": [arm], "init_seed": seed, "train_seed": None,
                "data_seed": None, "test_loss": loss, "val_loss": loss, "init_weights_sha256": f"init-{seed}",
                "final_weights_sha256": f"{arm}-{seed}", "tokens_per_second": 1000.0, "tokens": 3_600_000,
                "world_size": 1, "wall_seconds": 3600.0}))


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The scratch project the docs' commands run in: docs/examples, a tiny run (runs/a, copied to runs/b),
    the sweeps the analysis docs name, and their table as runs.parquet."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(REPO / "docs" / "examples", root / "docs" / "examples")
    (root / "tmp").mkdir()
    proc = subprocess.run([sys.executable, "-m", "gptx.train", *TINY, "hydra.run.dir=runs/a"], cwd=root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    shutil.copytree(root / "runs" / "a", root / "runs" / "b")
    for sweep in ("multirun_outputs/2025-01-01/12-00-00", "cluster_a", "sweep", "multirun_outputs/pilot"):
        _sweep(root / sweep, ("baseline", "lr_schedule", "grad_clip"))
    _sweep(root / "cluster_b", ("baseline", "qkv_bias"))
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(p.read_text()) for p in sorted((root / "sweep").glob("*/result.json"))]
    pq.write_table(pyarrow.table({
        "arm": [r["intervention"][0] for r in rows], "init_seed": [r["init_seed"] for r in rows],
        "test_loss": [r["test_loss"] for r in rows], "val_loss": [r["val_loss"] for r in rows]}),
        root / "runs.parquet")
    return root


def test_the_docs_have_blocks_and_every_marker_names_a_kind():
    assert len(BLOCKS) > 15 and {b.doc.name for b in BLOCKS} >= {"README.md", "analysis.md", "reproducing.md"}


UNMARKED = [b for b in BLOCKS if b.marker is None]
MARKED = [b for b in BLOCKS if b.marker is not None]


@pytest.mark.parametrize("block", UNMARKED, ids=[b.name for b in UNMARKED])
def test_each_unmarked_docs_command_runs(block, project, capsys):
    for command in block.commands:
        module, args = words(command, project)
        status, output = run_command(module, tiny(module, args), project)
        assert status == 0, f"{block.name}: `{command}` exited {status}:\n{output}\n{capsys.readouterr().err[-3000:]}"


def first_job(args: list[str]) -> list[str]:
    """gptx.train's overrides as the first job of its sweep composes them (-m and `...` left out)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from gptx.config import normalize_overrides

    overrides = [a for a in args if a not in ("-m", "--multirun", "...", "…")]
    parsed = OverridesParser.create().parse_overrides(normalize_overrides(overrides))
    return [f"{o.get_key_element()}={next(o.sweep_string_iterator())}" if o.is_sweep_override() else o.input_line
            for o in parsed]


@pytest.mark.parametrize("block", MARKED, ids=[b.name for b in MARKED])
def test_each_marked_docs_command_is_current(block, tmp_path, capsys):
    from hydra import compose, initialize_config_dir

    from gptx.config import CONF_DIR

    for command in block.commands:
        module, args = words(command, tmp_path)
        if module != "gptx.train":  # every flag it shows is one the command has
            with pytest.raises(SystemExit):
                importlib.import_module(module).main(["--help"])
            shown = capsys.readouterr().out
            for flag in re.findall(r"(?<![\w-])--[\w-]+", command):
                assert flag in shown, f"{block.name}: {command}: {flag} is not in `python -m {module} --help`"
        elif not block.writes_config:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                compose(config_name="config", overrides=first_job(args), return_hydra_config=True)
