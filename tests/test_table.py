"""A table of runs: every format, the same report as run folders, the study's own numbers, bad tables."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gptx import analyze, plan
from gptx.analysis import analyze_table
from gptx.analysis.runs import UserError
from gptx.analysis.table import read_table

STUDY = Path(__file__).resolve().parents[1] / "docs" / "examples" / "study.csv"
INTERVENTIONS = ("fp32", "grad_clip", "qkv_bias", "weight_decay", "no_dropout", "lr_schedule",
                 "weight_decay_cerebras", "weight_tying")

ROWS = [  # a small paired sweep with hashes, a failed run and a second train seed
    {"arm": "baseline", "init_seed": 1, "train_seed": None, "test_loss": 3.70, "init_weights_sha256": "w1",
     "final_weights_sha256": "b1"},
    {"arm": "baseline", "init_seed": 2, "train_seed": None, "test_loss": 3.72, "init_weights_sha256": "w2",
     "final_weights_sha256": "b2"},
    {"arm": "baseline", "init_seed": 3, "train_seed": None, "test_loss": 3.69, "init_weights_sha256": "w3",
     "final_weights_sha256": "b3"},
    {"arm": "baseline", "init_seed": 1, "train_seed": 7, "test_loss": 3.702, "init_weights_sha256": "w1",
     "final_weights_sha256": "b1t"},
    {"arm": "grad_clip", "init_seed": 1, "train_seed": None, "test_loss": 3.68, "init_weights_sha256": "w1",
     "final_weights_sha256": "g1"},
    {"arm": "grad_clip", "init_seed": 2, "train_seed": None, "test_loss": 3.705, "init_weights_sha256": "w2",
     "final_weights_sha256": "g2"},
    {"arm": "grad_clip", "init_seed": 3, "train_seed": None, "test_loss": 3.671, "init_weights_sha256": "w3",
     "final_weights_sha256": "g3"},
    {"arm": "qkv_bias", "init_seed": 1, "train_seed": None, "test_loss": 3.70, "init_weights_sha256": "q1",
     "final_weights_sha256": "q1f"},
    {"arm": "qkv_bias", "init_seed": 2, "train_seed": None, "test_loss": None, "status": "failed",
     "init_weights_sha256": "q2", "final_weights_sha256": None},
]


def write_csv(path: Path, rows: list[dict], comments: tuple = ()) -> Path:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        f.writelines(f"# {c}\n" for c in comments)
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows({k: "" if r.get(k) is None else r[k] for k in columns} for r in rows)
    return path


def write_folders(root: Path, rows: list[dict]) -> Path:
    """The same runs as gptx lays them out: one folder a run holding result.json."""
    for i, r in enumerate(rows):
        folder = root / f"run{i}"
        folder.mkdir(parents=True)
        result = {"status": r.get("status") or "completed", "intervention": [r["arm"]], "data_seed": None,
                  **{k: v for k, v in r.items() if k not in ("status", "arm", "note")}}
        (folder / "result.json").write_text(json.dumps(result))
    return root


def comparable(summary: dict) -> dict:
    """A summary without what names the input: the input section and the paths of runs left out."""
    out = {k: v for k, v in summary.items() if k != "input"}
    out["excluded"] = [{k: v for k, v in e.items() if k != "path"} for e in summary["excluded"]]
    return out


def test_a_table_gives_the_report_of_the_same_runs_as_folders(tmp_path):
    from_folders = analyze.write_report([write_folders(tmp_path / "sweep", ROWS)], tmp_path / "a", plots=False)
    from_table = analyze.write_report([write_csv(tmp_path / "runs.csv", ROWS)], tmp_path / "b", plots=False)
    assert comparable(from_table) == comparable(from_folders)
    assert from_table["arms"]["grad_clip"]["pairing"] == "paired"
    # qkv_bias starts from other weights (its own hash) but shares the seeds: its own per-seed differences
    # carry its comparison, so it is paired by evidence, not by belief
    assert from_table["arms"]["qkv_bias"]["pairing"] == from_folders["arms"]["qkv_bias"]["pairing"] == "paired"
    assert from_table["excluded"] == [{"path": "runs.csv line 10", "arm": "qkv_bias",
                                       "status": "failed", "reason": "failed"}]
    assert "pairing by hash" in from_table["input"]["assumptions"][1]
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Input" in report and "9 table rows" in report and not (tmp_path / "b" / "runs.csv").exists()


def test_every_format_and_the_python_entry_give_one_summary(tmp_path):
    write_csv(tmp_path / "runs.csv", ROWS)
    (tmp_path / "runs.jsonl").write_text("# one run a line\n" + "".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "runs.json").write_text(json.dumps(ROWS))
    reference = comparable(analyze_table(tmp_path / "runs.csv"))
    for name in ("runs.jsonl", "runs.json"):
        assert comparable(analyze_table(tmp_path / name)) == reference
    assert comparable(analyze_table([dict(r) for r in ROWS])) == reference
    assert analyze.main([str(tmp_path / "runs.csv"), "--no-plots"]) == 0  # the CLI writes what the entry returns
    written = json.loads((tmp_path / "runs-report" / "summary.json").read_text())
    assert written == analyze_table(tmp_path / "runs.csv")


def test_parquet_and_a_dataframe(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    columns = list(dict.fromkeys(k for r in ROWS for k in r))  # from_pylist takes the columns of the first row
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in ROWS]), tmp_path / "runs.parquet")
    reference = comparable(analyze_table(ROWS))
    assert comparable(analyze_table(tmp_path / "runs.parquet")) == reference
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(ROWS)  # NaN for missing seeds and losses, floats for seeds: read as the same runs
    assert frame["train_seed"].dtype == float
    assert comparable(analyze_table(frame)) == reference


def test_the_studys_numbers(tmp_path, capsys):
    table = shutil.copy(STUDY, tmp_path / "study.csv")
    assert analyze.main([str(table), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "mean 3.672857, SD (n−1) 0.018974 (2 df)" in out and "pairing by seed" in out
    s = json.loads((tmp_path / "study-report" / "summary.json").read_text())
    assert (s["n_runs"], s["n_included"], s["excluded"]) == (15, 15, [])
    init, pinned = s["noise"]["init_seed"], s["noise"]["init_seed_train_pinned"]
    assert (init["mean"], init["sd"], init["sd_population"]) == pytest.approx((3.672857, 0.018974, 0.0154919),
                                                                               abs=5e-7)
    # the two derived runs give back the published train-seed-23 figures (SD quoted as sqrt(sum of squares))
    assert pinned["mean"] == pytest.approx(3.673215, abs=5e-7)
    assert pinned["sd"] * 2 ** 0.5 == pytest.approx(0.012062, abs=5e-7)
    # one run an arm measures no arm's own noise: no verdict by default, and the row says what one would assume
    assert {s["arms"][a]["verdict"] for a in INTERVENTIONS} == {"not testable"}
    assert all("--assume-equal-noise" in s["arms"][a]["why_not_testable"] for a in INTERVENTIONS)
    assert analyze.main([str(table), "--no-plots", "--assume-equal-noise", "--out", str(tmp_path / "eq")]) == 0
    e = json.loads((tmp_path / "eq" / "summary.json").read_text())
    verdicts = {a: e["arms"][a]["verdict"] for a in INTERVENTIONS}
    assert set(verdicts.values()) <= {"better", "worse", "no detectable effect"}
    assert verdicts["lr_schedule"] == "better" and verdicts["weight_tying"] == "worse"
    assert e["arms"]["qkv_bias"]["pairing"] == "unpaired" and e["arms"]["grad_clip"]["pairing"] == "paired"
    assert any("derived" in n for n in s["input"]["notes"]) and any("Derived" in c for c in s["input"]["comments"])


def test_gptx_runs_csv_reads_back_as_a_table(tmp_path):
    copies = [*ROWS, {"arm": "grad_clip", "init_seed": 1, "test_loss": 3.68, "status": "running"}]
    sweep = write_folders(tmp_path / "sweep", copies)
    (sweep / "run9" / "result.json").write_text("{}")  # a torn copy: unreadable, no seeds
    from_folders = analyze.write_report([sweep], sweep, plots=False)
    from_table = analyze_table(sweep / "runs.csv")
    assert [e["arm"] for e in from_table["excluded"]] == [e["arm"] for e in from_folders["excluded"]]
    assert {**comparable(from_table), "excluded": None} == {**comparable(from_folders), "excluded": None}


def test_the_study_table_gives_the_report_of_the_study_laid_out_as_folders(tmp_path):
    with STUDY.open() as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    folders = [{"arm": r["arm"], "init_seed": int(r["init_seed"]),
                "train_seed": int(r["train_seed"]) if r["train_seed"] else None, "test_loss": float(r["test_loss"]),
                # as gptx hashes them: one init per seed; qkv_bias draws other weights
                "init_weights_sha256": f"sha-{r['arm'] if r['arm'] == 'qkv_bias' else 'init'}-{r['init_seed']}"}
               for r in rows]
    from_folders = analyze.write_report([write_folders(tmp_path / "sweep", folders)], tmp_path / "a", plots=False)
    from_table = analyze_table(STUDY)
    for s in (from_folders, from_table):  # the noise groups are keyed by the weights' hash
        for kind in ("init_seed", "train_seed", "init_seed_train_pinned"):
            s["noise"][kind]["groups"] = sorted(s["noise"][kind]["groups"].values())
    assert comparable(from_table) == comparable(from_folders)


def test_the_committed_example_report_is_current():
    committed = json.loads((STUDY.parent / "study-report" / "summary.json").read_text())
    fresh = analyze_table(STUDY)
    assert comparable(committed) == comparable(fresh)
    assert {k: v for k, v in committed["input"].items() if k != "table"} == \
        {k: v for k, v in fresh["input"].items() if k != "table"}


def test_plan_from_a_table(tmp_path, capsys):
    table = shutil.copy(STUDY, tmp_path / "study.csv")
    assert plan.main([str(table), "--sims", "2"]) == 0
    p = json.loads((tmp_path / "study-report" / "plan.json").read_text())
    assert p["interventions"] == 8 and p["noise"]["df_train"] == pytest.approx(4.0, abs=0.05)
    assert "fixed, paired" in capsys.readouterr().out


def test_config_key_columns_define_the_arms(tmp_path):
    rows = [{"train.lr": lr, "model.dropout": d, "init_seed": s, "test_loss": 3.7 - 0.01 * k + 0.001 * s}
            for k, (lr, d) in enumerate([("4e-4", "0.1"), ("0.0014", "0.1"), ("4e-4", "0.0")]) for s in (1, 2, 3)]
    s = analyze_table(rows)
    assert set(s["arms"]) == {"baseline", "train.lr=0.0014", "model.dropout=0.0"}
    assert "the first row's configuration (model.dropout=0.1, train.lr=0.0004)" in s["input"]["assumptions"][0]
    assert s["arms"]["train.lr=0.0014"]["pairing"] == "paired"  # no hashes: pairing is what the seeds say
    assert "pairing by seed" in s["input"]["assumptions"][1]
    renamed = [{("eval.loss" if k == "test_loss" else k): v for k, v in r.items()} for r in rows]
    assert set(analyze_table(renamed, metric="eval.loss")["arms"]) == set(s["arms"])  # a metric is no config key


def test_per_sequence_losses_from_a_column(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in (1, 2, 3):
        base = rng.normal(3.7, 0.5, 64)
        for arm, x in (("baseline", base), ("grad_clip", base + rng.normal(-0.01, 0.02, 64))):
            np.save(tmp_path / f"{arm}{s}.npy", x)
            rows.append({"arm": arm, "init_seed": s, "test_loss": float(x.mean()), "test_losses": f"{arm}{s}.npy"})
    gc = analyze_table(write_csv(tmp_path / "runs.csv", rows))["arms"]["grad_clip"]
    assert gc["test_set"]["n_seeds"] == 3 and gc["test_set"]["n_sequences"] == 64


def test_failed_and_diverged_rows_are_left_out_with_their_status(tmp_path):
    rows = [*ROWS[:4], {"arm": "grad_clip", "init_seed": 1, "test_loss": "nan"},
            {"arm": "grad_clip", "init_seed": 2, "test_loss": "", "status": "diverged"}]
    s = analyze_table(write_csv(tmp_path / "runs.csv", rows))
    assert [(e["status"], e["reason"]) for e in s["excluded"]] == [("diverged", "diverged: test_loss is nan"),
                                                                   ("diverged", "diverged")]


BAD = [  # (file name, content, what the one line must say)
    ("runs.csv", "arm,test_loss\nbaseline,3.7\n", "no column 'init_seed'"),
    ("runs.csv", "arm,init_seed\nbaseline,1\n", "no column 'test_loss' (--metric)"),
    ("runs.csv", "arm,init_seed,test_loss\nbaseline,1,3.7\nbaseline,2,low\n",
     "line 3, column test_loss: 'low' is not a number"),
    ("runs.csv", "arm,init_seed,test_loss\nbaseline,1,3.7\nbaseline,1,3.8\n", "line 3 repeats"),
    ("runs.csv", "arm,init_seed,test_loss\nbaseline,forty-two,3.7\n",
     "line 2, column init_seed: 'forty-two' is not an integer seed"),
    ("runs.csv", "arm,init_seed,train_seed,test_loss\nbaseline,1,2.5,3.7\n", "line 2, column train_seed: '2.5'"),
    ("runs.csv", "arm,init_seed,test_loss\nbaseline,,3.7\n", "line 2, column init_seed: empty"),
    ("runs.csv", "arm,init_seed,test_loss\nbaseline,1,\n", "line 2, column test_loss: empty"),
    ("runs.csv", "arm,init_seed,test_loss\n,1,3.7\n", "line 2, column arm: empty"),
    ("runs.csv", "arm,init_seed,test_loss,status\nbaseline,1,3.7,ok\n", "line 2, column status: 'ok'"),
    ("runs.csv", "arm,init_seed,test_loss\nbaseline,1\n", "line 2: 2 cells, the header has 3"),
    ("runs.csv", "arm,init_seed,arm,test_loss\n", "names column 'arm' twice"),
    ("runs.csv", "# only a comment\narm,init_seed,test_loss\n", "the table has no runs"),
    ("runs.csv", "", "the table is empty"),
    ("runs.csv", "arm,init_seed,test_loss,test_losses\nbaseline,1,3.7,missing.npy\n", "column test_losses"),
    ("runs.txt", "arm,init_seed,test_loss\n", "unknown table format '.txt'"),
    ("runs.jsonl", '{"arm": "baseline", "init_seed": 1, "test_loss": 3.7}\n{"arm": \n', "line 2: not a JSON object"),
    ("runs.json", '{"arm": "baseline"}', "one array of objects"),
    ("runs.parquet", "not parquet", "not a readable Parquet file"),
]


@pytest.mark.parametrize("name, content, message", BAD, ids=[m for _, _, m in BAD])
def test_a_bad_table_is_one_line_naming_row_and_column_exit_2(tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    assert analyze.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("gptx: error: ") and name in err
    assert sorted(tmp_path.iterdir()) == [path]  # nothing written


def test_the_table_reader_never_imports_torch():
    code = "import sys, gptx.analysis.table; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_table_with_folders_needs_to_be_alone(tmp_path):
    write_folders(tmp_path / "sweep", ROWS)
    with pytest.raises(UserError, match="on its own"):
        analyze.write_report([write_csv(tmp_path / "runs.csv", ROWS), tmp_path / "sweep"], tmp_path / "out")


def test_read_table_keeps_other_columns_as_result_fields(tmp_path):
    rows = [{**r, "tokens_per_second": 1000, "model": "gpt2_small"} for r in ROWS]
    runs, info = read_table(write_csv(tmp_path / "runs.csv", rows))
    assert runs[0].result["tokens_per_second"] == 1000 and runs[0].result["model"] == "gpt2_small"
    assert info["format"] == "csv" and info["rows"] == len(ROWS)
