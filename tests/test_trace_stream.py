"""A TRACE-format stream from a YAML file, one task per metric, end to end on the tiny model.

TRACE ships each task as `train.json`, `eval.json` and `test.json`, JSON lists of
`{"prompt", "answer"}`; a user runs such data with a stream file that names the right metric
per task. The files here are crafted, a few examples each, so the run takes seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from retain.config import load_config
from retain.train.loop import run

TINY = [
    "model.name_or_path=tiny-random", "eval.figures=false",
    "data.max_length=192",
    "data.valid_per_task=4",
    "data.max_test_per_task=4",
    "train.steps_per_task=2",
    "train.batch_size=4",
    "train.lr=5e-3",
    "train.progress=false",
    "eval.batch_size=8",
]

WORDS = ["amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heath"]


def _records(task: str, i: int) -> dict[str, str]:
    """One crafted TRACE record of `task` (answers in the shape its metric scores)."""
    w, v = WORDS[i % 8], WORDS[(i * 3 + 1) % 8]
    prompts = {
        "C-STANCE": (f"Stance of: '{w} is good'? A. for B. against C. neutral\nAnswer:", "A"),
        "FOMC": (f"Is '{w} rates rise' hawkish?\nAnswer:", "yes" if i % 2 else "no"),
        "ScienceQA": (f"Which is a tree? A. {w} B. rock\nAnswer:", "A. because it grows."),
        "NumGLUE-cm": (f"Solve the following math problem.\n{i} + {i}\nAnswer:", str(2 * i)),
        "MeetingBank": (
            f"Write a summary of the following meeting transcripts.\nThe {w} board met. "
            f"They chose {v}.\nAnswer:",
            f"The {w} board chose {v}.",
        ),
        "Py150": (f"def {w}():\n    return", f" {v}_value"),
        "QA-F1": (f"Which word follows {w}?\nAnswer:", f"the word {v}"),
        "QA-contains": (f"Name a word like {w}.\nAnswer:", v),
        "Translate": (f"Say in code words: {w}\nAnswer:", f"{v} {w} {v}"),
        "Exact": (f"Repeat: {w}\nAnswer:", w),
        "20Minuten": (
            "Provide a simplified version of the following paragraph in German.\n\n"
            f"Der {w} ist heute sehr, sehr gross geworden.\nAnswer:",
            f"Der {w} ist gross.",
        ),
    }
    prompt, answer = prompts[task]
    return {"prompt": prompt, "answer": answer}


METRICS = {
    "C-STANCE": "choice_letter",
    "FOMC": "accuracy",
    "ScienceQA": "choice_letter",
    "NumGLUE-cm": "math_exact",
    "MeetingBank": "rouge_l",
    "Py150": "edit_similarity",
    "QA-F1": "token_f1",
    "QA-contains": "contains",
    "Translate": "bleu",
    "Exact": "exact_match",
    "20Minuten": "sari",
}


def write_trace_stream(root: Path, tasks: list[str], extra: dict[str, dict] | None = None) -> Path:
    """TRACE folders (train/eval/test.json) under root/TRACE and a stream file in root/cfg."""
    specs = []
    for task in tasks:
        folder = root / "TRACE" / task
        folder.mkdir(parents=True)
        for split, start in (("train", 0), ("eval", 8), ("test", 12)):
            records = [_records(task, i) for i in range(start, start + (8 if start == 0 else 4))]
            (folder / f"{split}.json").write_text(json.dumps(records, ensure_ascii=False))
        spec: dict[str, object] = {
            "name": task,
            "format": "prompt_answer",
            "train": f"../TRACE/{task}/train.json",
            "valid": f"../TRACE/{task}/eval.json",
            "test": f"../TRACE/{task}/test.json",
            "max_new_tokens": 8,
            "stop": ["\n"],
        }
        metric = METRICS[task]
        if metric == "accuracy":
            spec["labels"] = ["yes", "no"]
        else:
            spec["metric"] = metric
        if metric == "sari":
            spec["context_pattern"] = "in German\\.\n\n(?P<context>.*)\nAnswer:"
        spec.update((extra or {}).get(task, {}))
        specs.append(spec)
    (root / "cfg").mkdir()
    path = root / "cfg" / "trace.yaml"
    path.write_text(json.dumps({"name": "trace-crafted", "tasks": specs}, indent=1))  # YAML ⊃ JSON
    return path


def _scores(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_trace_format_stream_with_a_metric_per_task_runs_end_to_end(tmp_path: Path) -> None:
    tasks = [t for t in METRICS if METRICS[t] != "sari"]
    stream = write_trace_stream(tmp_path, tasks)
    config = load_config(None, [*TINY, f"data.stream={stream}", f"output_dir={tmp_path}/runs",
                                "name=trace"])
    result = run(config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    types = {name: s["score_type"] for name, s in metrics["scoring"].items()}
    expected = {t: ("accuracy_norm" if METRICS[t] == "accuracy" else METRICS[t]) for t in tasks}
    assert types == expected
    rows = _scores(result.run_dir)
    assert len(rows) == len(tasks) + 1
    for task in tasks:
        values = [float(r[task]) for r in rows if r[task] != ""]
        assert values and all(0.0 <= v <= 100.0 for v in values), task
    assert metrics["n_per_task"] == {t: 4 for t in tasks}
    decoding = metrics["scoring"]["MeetingBank"]["decoding"]
    assert decoding == {"scoring": "greedy", "max_new_tokens": 8, "metric": "rouge_l",
                        "stop": ["\n"]}


def test_trace_simplification_task_scores_sari_end_to_end(tmp_path: Path) -> None:
    stream = write_trace_stream(tmp_path, ["20Minuten", "Exact"])
    config = load_config(None, [*TINY, f"data.stream={stream}", f"output_dir={tmp_path}/runs",
                                "name=sari"])
    result = run(config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["scoring"]["20Minuten"]["score_type"] == "sari"
    values = [float(r["20Minuten"]) for r in _scores(result.run_dir) if r["20Minuten"]]
    assert values and all(0.0 < v <= 100.0 for v in values)  # keeping words scores above 0


def test_per_task_budgets_are_honoured_in_the_log(tmp_path: Path) -> None:
    extra = {"Exact": {"steps": 3, "lr": 1e-3}, "QA-F1": {"epochs": 2}}
    stream = write_trace_stream(tmp_path, ["Exact", "QA-F1", "QA-contains"], extra)
    config = load_config(None, [*TINY, f"data.stream={stream}", f"output_dir={tmp_path}/runs",
                                "name=budgets"])
    result = run(config)
    log = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if r["type"] == "step"]
    per_task = [sum(1 for r in steps if r["task"] == t) for t in range(3)]
    assert per_task == [3, 4, 2]  # own steps; 2 epochs of 8 examples at batch 4; the run's 2
    lr = {t: max(r["lr"] for r in steps if r["task"] == t) for t in range(3)}
    assert lr[0] <= 1e-3 < lr[2]  # the task's own learning rate, then the run's 5e-3
    ends = {r["name"]: r["steps"] for r in log if r["type"] == "task_end"}
    assert ends == {"Exact": 3, "QA-F1": 4, "QA-contains": 2}
