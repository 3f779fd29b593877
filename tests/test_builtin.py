"""The built-in offline stream: deterministic, varied, test prompts unseen in training."""

from __future__ import annotations

from retain.data.builtin import builtin_stream


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a, b, c = builtin_stream(1, 50, 10), builtin_stream(1, 50, 10), builtin_stream(2, 50, 10)
    assert [t.train + t.test for t in a.tasks] == [t.train + t.test for t in b.tasks]
    assert [t.train for t in a.tasks] != [t.train for t in c.tasks]


def test_five_tasks_with_different_formats() -> None:
    stream = builtin_stream(0, 100, 20)
    assert len(stream) >= 5
    kinds = {(t.scoring, t.metric) for t in stream.tasks}
    assert {("loglik", "accuracy"), ("generate", "exact_match")} <= kinds
    for task in stream.tasks:
        assert len(task.train) == 100 and len(task.test) == 20


def test_answers_are_right() -> None:
    stream = {t.name: t for t in builtin_stream(0, 50, 10).tasks}
    for ex in stream["unit_conversion"].test:
        n = int(ex.prompt.split()[1])
        assert int(ex.answer) in (n * 10, n * 100, n * 1000)
    for ex in stream["swap_words"].test:
        words = ex.prompt.split(":")[1].split("\n")[0].split()
        assert ex.answer == f"{words[1]} {words[0]}"
    for ex in stream["largest_number"].test:
        values = {line[0]: int(line[3:]) for line in ex.prompt.splitlines()[1:5]}
        assert values[ex.answer] == max(values.values())


def test_skill_tasks_test_on_unseen_prompts() -> None:
    for task in builtin_stream(0, 100, 20).tasks:
        if task.name == "capital_lookup":  # recall of a table: test asks the learned facts
            continue
        assert not {e.prompt for e in task.test} & {e.prompt for e in task.train}
