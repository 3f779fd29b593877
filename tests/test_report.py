import json
from pathlib import Path

import matplotlib.image
import pytest
import yaml

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import compute_metrics, cost_summary
from retain.results.report import compare_runs, read_log, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    assert path.exists(), path
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).ndim == 3  # decodes as an image


def _make_run(
    root: Path, name: str, scores: list[list[float]], replay: bool = True, metrics: bool = True
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    tasks = ["boolq", "<b>sst2</b>", "gsm8k $x$ {"]
    m = ScoreMatrix(tasks, ["mmlu"])
    for t, row in enumerate(scores):
        m.set_row(t, dict(zip(tasks, row, strict=True)), {"mmlu": 40.0 - t})
    m.to_csv(run / "scores.csv")
    records = []
    step = 0
    for k, task in enumerate(tasks):
        records.append({"type": "eval", "stage": k, "seconds": 2.0})
        for _ in range(20):
            step += 1
            replayed = 2 if replay and k > 0 and step % 5 == 0 else 0
            records.append(
                {
                    "type": "step",
                    "step": step,
                    "task": k,
                    "loss": 3.0 / step**0.5,
                    "losses": {"task": 2.0 / step**0.5, "replay": 0.1 * replayed},
                    "tokens": 512,
                    "samples": 8,
                    "replayed": replayed,
                    "seconds": 0.5,
                    "tokens_per_s": 1024.0,
                    "lr": 1e-4,
                }
            )
            if replayed:
                records.append({"type": "replay_event", "step": step, "task": task, "size": 2})
        records.append(
            {
                "type": "task_end",
                "task": task,
                "seconds": 10.0 + k,
                "peak_memory_mb": 800.0 + k,
                "counters": {"extra_forward_passes": 4 * k},
            }
        )
    records.append({"type": "eval", "stage": 3, "seconds": 2.0})
    lines = [json.dumps(r) for r in records]
    (run / "log.jsonl").write_text("\n".join(lines) + '\n{"type": "st')  # torn last line
    if metrics:
        result = compute_metrics(m)
        result["cost"] = cost_summary(records)
        (run / "metrics.json").write_text(json.dumps(result))
    (run / "config.yaml").write_text(
        yaml.safe_dump({"name": name, "methods": ["mssr"], "train": {"lr": 2e-4}})
    )
    return run


SCORES_A = [[10, 20, 30], [80, 25, 35], [60, 70, 40], [50, 65, 90]]
SCORES_B = [[10, 20, 30], [70, 20, 30], [30, 75, 30], [20, 40, 85]]


def test_read_log_skips_torn_lines(tmp_path):
    run = _make_run(tmp_path, "a", SCORES_A)
    records = read_log(run / "log.jsonl")
    assert records[0] == {"type": "eval", "stage": 0, "seconds": 2.0}
    assert records[-1]["type"] == "eval"
    assert read_log(tmp_path / "missing.jsonl") == []


def test_write_report_produces_html_and_figures(tmp_path):
    run = _make_run(tmp_path, "mssr-run", SCORES_A)
    out = write_report(run)
    assert out == run / "report.html"
    for png in ("score_matrix.png", "task_curves.png", "loss_curves.png", "replay_events.png"):
        _assert_png(run / png)
        assert f'src="{png}"' in out.read_text()
    text = out.read_text()
    assert "mssr-run" in text and "boolq" in text and "gsm8k" in text
    assert "&lt;b&gt;sst2&lt;/b&gt;" in text and "<b>sst2</b>" not in text  # escaped
    assert "68.33" in text  # ap
    assert "-17.5" in text  # bwt
    assert "forgetting_max" in text and "T−1" in text  # definitions shown
    assert "extra_forward_passes" in text and "train_tokens_per_s" in text
    assert "methods:" in text  # the config
    assert not list(run.glob(".*.tmp"))


def test_report_without_metrics_file_or_replay(tmp_path):
    scores = [row[:] for row in SCORES_A[:3]] + [[float("nan")] * 3]
    run = _make_run(tmp_path, "partial", scores, replay=False, metrics=False)
    write_report(run)
    assert not (run / "replay_events.png").exists()
    _assert_png(run / "score_matrix.png")
    text = (run / "report.html").read_text()
    assert "Incomplete run" in text
    assert "65" in text  # ap of the finished prefix: (60 + 70) / 2


def test_report_of_an_empty_run_dir(tmp_path):
    out = write_report(tmp_path)
    text = out.read_text()
    assert "No cost records" in text and "No metrics yet" in text


def test_compare_runs(tmp_path):
    a = _make_run(tmp_path, "seq", SCORES_B, replay=False)
    b = _make_run(tmp_path, "mssr", SCORES_A)
    write_report(b)
    out = compare_runs([a, b], tmp_path / "cmp")
    assert out == tmp_path / "cmp" / "comparison.html"
    _assert_png(tmp_path / "cmp" / "comparison.png")
    text = out.read_text()
    assert "seq" in text and "mssr" in text
    assert "68.33" in text and "48.33" in text  # ap of both runs: 205/3 and 145/3
    assert "forgetting_max" in text and "replayed_share" in text
    assert 'href="../mssr/report.html"' in text
    with pytest.raises(ValueError):
        compare_runs([], tmp_path / "cmp")


def test_compare_runs_disambiguates_equal_names(tmp_path):
    a = _make_run(tmp_path / "x", "same", SCORES_A)
    b = _make_run(tmp_path / "y", "same", SCORES_B)
    text = compare_runs([a, b], tmp_path / "cmp").read_text()
    assert str(a) in text and str(b) in text
