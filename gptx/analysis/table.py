"""Runs from anywhere: a table of runs (CSV, JSON Lines, JSON, Parquet, a DataFrame, a list of dicts).

    python -m gptx.analyze runs.csv          # report into runs-report/ beside the table
    gptx.analysis.analyze_table(df)          # the same summary dict, from Python

Each row becomes the `Run` record a run folder's result.json would give (`run_from_result`), so the
report on a table is the report on the same numbers laid out as run folders. Columns (docs/analysis.md):
`arm` or config-key columns (`train.lr`, ...), `init_seed`, optional `train_seed`, `data_seed`,
`replica`, the metric (`test_loss`, or --metric), optional `status`, `init_weights_sha256`,
`final_weights_sha256`, `test_losses` (a .npy of per-sequence losses, relative to the table) and `note`;
other columns are kept as result fields. Lines starting with `#` are comments. A bad table is one
`UserError` naming the row and the column.
"""

import csv
import json
import math
import numbers
from pathlib import Path

from gptx.analysis.runs import Run, UserError, run_from_result
from gptx.analysis.summary import MIN_EFFECT, analyze, jsonable
from gptx.files import RESULT_FILE
from gptx.result import Status

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
SEEDS = ("init_seed", "train_seed", "data_seed", "replica")
STATUSES = (Status.COMPLETED, Status.DIVERGED, Status.FAILED, Status.RUNNING, Status.INCOMPLETE)
# columns with a meaning of their own; any other column holding a dot is a config key defining the arm
RESERVED = ("arm", *SEEDS, "status", "init_weights_sha256", "final_weights_sha256", "test_losses", "note",
            "included", "reason")


def is_table(path: Path) -> bool:
    """Whether a command-line PATH is a table of runs: a file other than a run's result.json."""
    return Path(path).is_file() and Path(path).name != RESULT_FILE


def report_dir(path: Path) -> Path:
    """Where the report on a table goes by default: `<stem>-report/` beside it (never over the table)."""
    return Path(path).parent / f"{Path(path).stem}-report"


def _lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line that is neither blank nor a `#` comment."""
    return [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip() and not _comment(line)]


def _comment(line: str) -> bool:
    """Whether a line is a `#` comment."""
    return line.lstrip().startswith("#")


def read_rows(path: Path) -> tuple[list[tuple[str, dict]], list[str], str]:
    """The rows of a table file as (where, row) pairs, its `#` comment lines, and its format."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{path}: unknown table format {path.suffix or '(no suffix)'!r}; use "
                        f"{', '.join(FORMATS)} (or a sweep folder holding result.json files)")
    if fmt == "parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise UserError(f"{path}: reading Parquet needs pyarrow: pip install 'gptx[parquet]'") from e
        try:
            records = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises its own error types for a damaged file
            raise UserError(f"{path}: not a readable Parquet file: {e}") from e
        return [(f"{path.name} row {i}", r) for i, r in enumerate(records, 1)], [], fmt
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the table: {e}") from e
    if not text.strip():
        raise UserError(f"{path}: the table is empty")
    comments = [line.lstrip()[1:].strip() for line in text.splitlines() if _comment(line)]
    if fmt == "csv":
        return _csv_rows(path, text), comments, fmt
    if fmt == "json":
        try:
            records = json.loads(text)
        except ValueError as e:
            raise UserError(f"{path}: not JSON ({e}); a .json table is one array of objects") from e
        if not isinstance(records, list):
            raise UserError(f"{path}: a .json table is one array of objects, one a run")
        return [(f"{path.name} row {i}", r) for i, r in enumerate(records, 1)], [], fmt
    rows = []
    for n, line in _lines(text):
        try:
            rows.append((f"{path.name} line {n}", json.loads(line)))
        except ValueError as e:
            raise UserError(f"{path.name} line {n}: not a JSON object ({e})") from e
    return rows, comments, fmt


def _csv_rows(path: Path, text: str) -> list[tuple[str, dict]]:
    """CSV rows keyed by the header; a row with more or fewer cells than the header is an error."""
    numbered = _lines(text)
    if not numbered:
        raise UserError(f"{path}: the table has no header line (only comments)")
    cells = list(csv.reader([line for _, line in numbered]))
    header = [h.strip() for h in cells[0]]
    if len(set(header)) != len(header) or "" in header:
        dup = next((h for h in header if header.count(h) > 1), "")
        raise UserError(f"{path.name} line {numbered[0][0]}: the header " + (f"names column {dup!r} twice" if dup
                        else "has an empty column name"))
    rows = []
    for (n, _), row in zip(numbered[1:], cells[1:]):
        if len(row) != len(header):
            raise UserError(f"{path.name} line {n}: {len(row)} cells, the header has {len(header)}")
        rows.append((f"{path.name} line {n}", dict(zip(header, row))))
    return rows


def _blank(v) -> bool:
    """An empty cell: None, blank text, or NaN where a DataFrame has no value."""
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, float) and math.isnan(v))


def _seed(v, where: str, column: str) -> int | None:
    """A seed cell as an int (None when empty or 'none'); text that is not a whole number is an error."""
    if _blank(v) or (isinstance(v, str) and v.strip().lower() in ("none", "null")):
        return None
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    try:
        x = float(v) if isinstance(v, (str, numbers.Real)) and not isinstance(v, bool) else None
    except ValueError:
        x = None
    if x is not None and x.is_integer():
        return int(x)
    raise UserError(f"{where}, column {column}: {v!r} is not an integer seed")


def _number(v, where: str, column: str) -> float | None:
    """A metric cell as a float (NaN and inf allowed: a diverged run), None when empty."""
    if _blank(v) and not isinstance(v, float):
        return None
    if isinstance(v, numbers.Real) and not isinstance(v, bool):
        return float(v)
    try:
        return float(v.strip())
    except (AttributeError, ValueError):
        raise UserError(f"{where}, column {column}: {v!r} is not a number") from None


def _value(v):
    """A config-key or extra cell: a number when it reads as one, else stripped text; None when empty."""
    if _blank(v):
        return None
    if not isinstance(v, str):
        return v
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v.strip()


def _text(v) -> str | None:
    """A text cell, stripped; None when empty."""
    return None if _blank(v) else str(v).strip()


def _arms(rows: list[tuple[str, dict]], columns: list[str], metric: str) -> tuple[list[str], str]:
    """Each row's arm, and how arms were found: the `arm` column, the config keys, or none (all baseline)."""
    if "arm" in columns:
        arms = []
        for where, row in rows:
            if _blank(row.get("arm")):
                raise UserError(f"{where}, column arm: empty; every run needs its arm (baseline for the baseline)")
            arms.append(str(row["arm"]).strip())
        return arms, "arms from the `arm` column"
    keys = [c for c in columns if "." in c and c not in (*RESERVED, metric)]
    if not keys:
        return ["baseline"] * len(rows), "no `arm` column and no config-key column: every run is the baseline"
    configs = [{k: _value(row.get(k)) for k in keys} for _, row in rows]
    base = configs[0]

    def name(c: dict) -> str:
        diff = [f"{k}={'none' if c[k] is None else c[k]}" for k in sorted(keys) if c[k] != base[k]]
        return "+".join(diff) or "baseline"

    shown = ", ".join(f"{k}={'none' if base[k] is None else base[k]}" for k in sorted(keys))
    return [name(c) for c in configs], (f"arms from the config keys {', '.join(sorted(keys))}: the baseline is "
                                        f"the first row's configuration ({shown}), each other arm named by the "
                                        "keys where it differs")


def runs_from_rows(rows: list[tuple[str, dict]], metric: str = "test_loss", source: str = "table",
                   base_dir: Path | None = None) -> tuple[list[Run], dict]:
    """`Run` records from (where, row) pairs, and what the report says about the input and its assumptions."""
    if not rows:
        raise UserError(f"{source}: the table has no runs")
    for where, row in rows:
        if not isinstance(row, dict):
            raise UserError(f"{where}: not an object with named columns")
    columns = list(dict.fromkeys(k for _, row in rows for k in row))
    for need in ("init_seed", metric):
        if need not in columns:
            raise UserError(f"{source}: no column {need!r}" + (" (--metric)" if need == metric else "")
                            + f"; the columns are {', '.join(columns)}")
    arms, arms_how = _arms(rows, columns, metric)
    runs, seen, notes = [], {}, []
    for (where, row), arm in zip(rows, arms):
        seeds = {k: _seed(row.get(k), where, k) for k in SEEDS}
        status = (_text(row.get("status")) or Status.COMPLETED).lower()
        if status not in STATUSES:
            raise UserError(f"{where}, column status: {row.get('status')!r}; use one of {', '.join(STATUSES)}")
        # gptx's own runs.csv reads as a table: its rows marked included=False stay out (duplicate copies)
        left_out = (_text(row.get("included")) or "").lower() in ("false", "0", "no")
        counted = status == Status.COMPLETED and not left_out
        if seeds["init_seed"] is None and counted:
            raise UserError(f"{where}, column init_seed: empty; every run needs the seed its weights were drawn from")
        value = _number(row.get(metric), where, metric)
        if value is None and counted:
            raise UserError(f"{where}, column {metric}: empty; give the loss, or a status (failed, diverged) "
                            "for a run without one")
        key = (arm, *seeds.values())
        if key in seen and counted:
            raise UserError(f"{where} repeats {seen[key]} (arm {arm}, "
                            + ", ".join(f"{k} {v}" for k, v in seeds.items() if v is not None)
                            + "): a repeat of one configuration needs its own `replica` number")
        if counted:
            seen[key] = where
        folder = Path(where)
        losses = _text(row.get("test_losses"))
        if losses:
            folder = (Path(base_dir or ".") / losses)
            if folder.suffix != ".npy" or not folder.is_file():
                raise UserError(f"{where}, column test_losses: {losses!r} is not a .npy file (paths are "
                                "relative to the table)")
        extra = {k: _value(v) for k, v in row.items() if k not in RESERVED and k != metric and "." not in k}
        init_hash = _text(row.get("init_weights_sha256"))
        seeded = seeds["init_seed"] is not None
        result = {**extra, "arm": arm, "status": Status.RUNNING if status == Status.INCOMPLETE else status, **seeds,
                  metric: value,
                  # no hash: the seed says which initial weights (the pairing assumption the report states)
                  "init_weights_sha256": init_hash or (f"init_seed={seeds['init_seed']}" if seeded else None),
                  "final_weights_sha256": _text(row.get("final_weights_sha256"))}
        runs.append(run_from_result(result, folder, metric))
        if left_out and runs[-1].reason is None:
            runs[-1].reason = _text(row.get("reason")) or "left out in the table (included is false)"
        if not _blank(row.get("note")):
            seeds_text = ", ".join(f"{k} {v}" for k, v in seeds.items() if v is not None)
            notes.append(f"{where} ({arm}, {seeds_text}): {str(row['note']).strip()}")
    return runs, {"table": source, "rows": len(rows), "columns": columns,
                  "assumptions": _assumptions(rows, columns, arms_how), "notes": notes}


def _assumptions(rows: list[tuple[str, dict]], columns: list[str], arms_how: str) -> list[str]:
    """What the report had to assume because the table does not say it: pairing, repeats, status, arms."""
    out = [arms_how]
    unhashed = sum(_blank(row.get("init_weights_sha256")) for _, row in rows)
    if unhashed == len(rows):
        out.append("pairing by seed: no run has an init_weights_sha256, so runs at the same init_seed are "
                   "taken to have started from the same initial weights, and every arm pairs with the baseline "
                   "at the init seeds both ran; an arm that changes the initial weights needs its own value in "
                   "that column (any label), or its verdict rests on a pairing that is not there")
    elif unhashed:
        out.append(f"pairing by seed for {unhashed} of {len(rows)} runs: without an init_weights_sha256 a run is "
                   "taken to share its initial weights with the other unhashed runs at its init_seed; runs with "
                   "a value pair by that value, as weights hashes do")
    else:
        out.append("pairing by hash: every run has an init_weights_sha256; runs pair when the values match")
    if all(_blank(row.get("final_weights_sha256")) for _, row in rows):
        out.append("no final_weights_sha256: an arm identical to the baseline, and bitwise-identical repeats, "
                   "cannot be recognised")
    missing = [c for c in ("train_seed", "data_seed") if c not in columns]
    if missing:
        out.append(f"no {' or '.join(missing)} column: every run has it unset (null), as a run that never re-seeds")
    if "status" not in columns:
        out.append("no status column: every row is a completed run")
    return out


def read_table(path: Path, metric: str = "test_loss") -> tuple[list[Run], dict]:
    """The runs of a table file and its input description (format, columns, assumptions, notes, comments)."""
    rows, comments, fmt = read_rows(path)
    runs, info = runs_from_rows(rows, metric, str(path), Path(path).parent)
    return runs, {**info, "format": fmt, "comments": comments}


def summarize(runs: list[Run], info: dict, baseline: str = "baseline", metric: str = "test_loss", seed: int = 0,
              min_effect: float = MIN_EFFECT, equal_noise: bool = False) -> dict:
    """The report's summary (the content of summary.json) on a table's runs, with the input described."""
    return jsonable({**analyze(runs, baseline, metric, seed, min_effect, equal_noise=equal_noise), "input": info})


def analyze_table(table, baseline: str = "baseline", metric: str = "test_loss", seed: int = 0,
                  min_effect: float = MIN_EFFECT) -> dict:
    """The summary `gptx.analyze` writes, from a pandas DataFrame, a list of dicts, or a table file's path."""
    if isinstance(table, (str, Path)):
        runs, info = read_table(Path(table), metric)
    else:
        if hasattr(table, "to_dict"):  # a pandas DataFrame, without importing pandas
            records, fmt = table.to_dict(orient="records"), "DataFrame"
        elif isinstance(table, list):
            records, fmt = table, "list of dicts"
        else:
            raise UserError(f"a table is a pandas DataFrame, a list of dicts or a file path, not "
                            f"{type(table).__name__}")
        runs, info = runs_from_rows([(f"row {i}", r) for i, r in enumerate(records)], metric, fmt)
        info = {**info, "format": fmt, "comments": []}
    return summarize(runs, info, baseline, metric, seed, min_effect)
