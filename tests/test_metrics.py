import json

import numpy as np
import pytest

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import COST_NAMES, DEFINITIONS, METRIC_NAMES, compute_metrics, cost_summary


def _three_task() -> ScoreMatrix:
    """T=3 with general columns (a perplexity column must be left out of general metrics).

    stage   a   b   c  | mmlu  wikitext_ppl
      0    10  20  30  |  40      20
      1    80  25  35  |  39      21
      2    60  70  40  |  38      22
      3    50  65  90  |  35      25
    """
    m = ScoreMatrix(
        ["a", "b", "c"], ["mmlu", "wikitext_ppl"], score_types={"wikitext_ppl": "perplexity"}
    )
    m.R[:] = [[10, 20, 30], [80, 25, 35], [60, 70, 40], [50, 65, 90]]
    m.G[:] = [[40, 20], [39, 21], [38, 22], [35, 25]]
    return m


def _four_task() -> ScoreMatrix:
    """T=4, built so that the definitions other libraries use give different numbers.

    stage   w   x   y    z
      0     0  85  20   30     x is high on the base model (row 0 must not count in forgetting)
      1    50  15  95   30     y is high before it is learned (l < j must not count)
      2    70  60  20   35     w improves after task 2: its max is 70, not R[1,1]=50
      3    40  80  90   30     x improves after task 3: its max is 80, not R[2,2]=60
      4    30  50  60  100
    """
    m = ScoreMatrix(["w", "x", "y", "z"])
    m.R[:] = [
        [0, 85, 20, 30],
        [50, 15, 95, 30],
        [70, 60, 20, 35],
        [40, 80, 90, 30],
        [30, 50, 60, 100],
    ]
    return m


def test_three_task_matrix_by_hand():
    res = compute_metrics(_three_task(), {"ap_sequential": 50.0, "ap_multitask": 80.0})
    # ap = (50 + 65 + 90) / 3 = 68.333
    assert res["ap"] == pytest.approx(205 / 3)
    # ap_per_stage: t=1: 80; t=2: (60+70)/2 = 65; t=3: 68.333
    assert res["ap_per_stage"] == pytest.approx([80.0, 65.0, 205 / 3])
    # aia = (80 + 65 + 68.333) / 3 = 71.111
    assert res["aia"] == pytest.approx((80 + 65 + 205 / 3) / 3)
    # la = (R11 + R22 + R33) / 3 = (80 + 70 + 90) / 3 = 80
    assert res["la"] == pytest.approx(80.0)
    # bwt = ((50-80) + (65-70)) / 2 = -17.5
    assert res["bwt"] == pytest.approx(-17.5)
    # forgetting = ((max(80,60) - 50) + (70 - 65)) / 2 = 17.5
    assert res["forgetting_max"] == pytest.approx(17.5)
    # forgetting of the first task alone: max(80, 60) - 50 = 30
    assert res["forgetting_first"] == pytest.approx(30.0)
    # fwt = ((R12 - R02) + (R23 - R03)) / 2 = ((25-20) + (40-30)) / 2 = 7.5
    assert res["fwt"] == pytest.approx(7.5)
    # normalized = (50/80 + 65/70 + 90/90) / 3
    assert res["normalized_avg"] == pytest.approx((50 / 80 + 65 / 70 + 1.0) / 3)
    # general: only mmlu (the perplexity column is excluded): 35 - 40 = -5
    assert res["general_benchmarks"] == ["mmlu"]
    assert res["general_delta"] == pytest.approx(-5.0)
    # f1 = 2 * 35 * 68.333 / (35 + 68.333) = 46.290
    assert res["f1_general_ap"] == pytest.approx(2 * 35 * (205 / 3) / (35 + 205 / 3))
    # gap_closed = (68.333 - 50) / (80 - 50) = 0.6111
    assert res["gap_closed"] == pytest.approx((205 / 3 - 50) / 30)
    assert res["complete"] is True and res["last_stage"] == 3 and res["num_tasks"] == 3


def test_four_task_matrix_where_definitions_differ():
    res = compute_metrics(_four_task())
    # ap = (30 + 50 + 60 + 100) / 4 = 60
    assert res["ap"] == pytest.approx(60.0)
    # ap_per_stage: 50; (70+60)/2 = 65; (40+80+90)/3 = 70; 60
    assert res["ap_per_stage"] == pytest.approx([50.0, 65.0, 70.0, 60.0])
    assert res["aia"] == pytest.approx(61.25)  # (50+65+70+60)/4
    assert res["la"] == pytest.approx(75.0)  # (50+60+90+100)/4
    # bwt = ((30-50) + (50-60) + (60-90)) / (T-1=3) = -60/3 = -20; dividing by T gives -15
    assert res["bwt"] == pytest.approx(-20.0)
    assert res["bwt"] != pytest.approx(-15.0)
    # forgetting (max over stages j..T-1, minus last):
    #   w: max(50,70,40) - 30 = 40;  x: max(60,80) - 50 = 30;  y: max(90) - 60 = 30
    #   -> 100/3 = 33.33
    # first-minus-last (Avalanche) would be ((50-30)+(60-50)+(90-60))/3 = 20;
    # counting row 0 (x: 85) or stages before learning (y: 95 at stage 1) would give 41.67
    assert res["forgetting_max"] == pytest.approx(100 / 3)
    assert res["forgetting_max"] != pytest.approx(20.0)
    assert res["forgetting_first"] == pytest.approx(40.0)  # w's term alone, not the mean
    # fwt = ((R12-R02) + (R23-R03) + (R34-R04)) / 3 = ((15-85) + (20-20) + (30-30)) / 3
    assert res["fwt"] == pytest.approx(-70 / 3)
    # normalized: max over all stages incl. the base row: 30/70, 50/85, 60/95, 100/100
    assert res["normalized_avg"] == pytest.approx((30 / 70 + 50 / 85 + 60 / 95 + 1.0) / 4)
    # no general columns, no references
    assert res["general_delta"] is None and res["f1_general_ap"] is None
    assert res["gap_closed"] is None


def test_incomplete_matrix_scores_the_finished_prefix():
    m = _four_task()
    m.R[3:] = np.nan
    m.R[3, 0] = 40  # a half-evaluated row is ignored
    res = compute_metrics(m, {"ap_sequential": 10.0, "ap_multitask": 90.0})
    assert res["complete"] is False and res["last_stage"] == 2 and res["num_tasks"] == 4
    # prefix stream of 2 tasks: ap = (70 + 60) / 2
    assert res["ap"] == pytest.approx(65.0)
    assert res["ap_per_stage"] == pytest.approx([50.0, 65.0])
    assert res["aia"] == pytest.approx(57.5)
    assert res["la"] == pytest.approx(55.0)  # (50 + 60) / 2
    assert res["bwt"] == pytest.approx(20.0)  # (70 - 50) / 1
    assert res["forgetting_max"] == pytest.approx(-20.0)  # max over l in 1..1: 50 - 70
    assert res["forgetting_first"] == pytest.approx(-20.0)  # the one term of the prefix
    assert res["fwt"] == pytest.approx(-70.0)  # R12 - R02
    assert res["normalized_avg"] == pytest.approx((70 / 70 + 60 / 85) / 2)
    assert res["gap_closed"] is None  # references are final-stage numbers


def test_single_task_and_empty_matrices():
    m = ScoreMatrix(["only"], ["mmlu"])
    res = compute_metrics(m)
    assert all(res[name] is None for name in METRIC_NAMES if name != "ap_per_stage")
    assert res["ap_per_stage"] == [] and res["last_stage"] is None
    m.set_row(0, {"only": 20.0}, {"mmlu": 30.0})
    res = compute_metrics(m)
    assert res["ap"] is None and res["last_stage"] == 0
    m.set_row(1, {"only": 60.0}, {"mmlu": 28.0})
    res = compute_metrics(m)
    assert res["ap"] == res["la"] == res["aia"] == pytest.approx(60.0)
    assert res["bwt"] is None and res["forgetting_max"] is None and res["fwt"] is None
    assert res["forgetting_first"] is None
    assert res["general_delta"] == pytest.approx(-2.0)
    assert res["normalized_avg"] == pytest.approx(1.0)


def test_general_metrics_are_undefined_without_scores():
    m = _three_task()
    m.G[3, 0] = np.nan
    res = compute_metrics(m)
    assert res["general_delta"] is None and res["f1_general_ap"] is None
    m = _three_task()
    m.score_types = {}  # name-based fallback: "ppl" in the name is still excluded
    assert compute_metrics(m)["general_benchmarks"] == ["mmlu"]


def test_zero_scores_do_not_divide_by_zero():
    m = ScoreMatrix(["a", "b"], ["g"])
    m.R[:] = 0.0
    m.G[:] = 0.0
    res = compute_metrics(m, {"ap_sequential": 0.0, "ap_multitask": 0.0})
    assert res["normalized_avg"] is None  # every task's max is 0
    assert res["f1_general_ap"] == 0.0
    assert res["gap_closed"] is None  # zero denominator


def test_gap_closed_needs_both_references():
    m = _three_task()
    assert compute_metrics(m, {"ap_sequential": 50.0})["gap_closed"] is None
    assert compute_metrics(m, {"ap_multitask": 80.0})["gap_closed"] is None
    # above the multitask bound gives more than 1
    assert compute_metrics(m, {"ap_sequential": 40.0, "ap_multitask": 60.0})[
        "gap_closed"
    ] == pytest.approx((205 / 3 - 40) / 20)


def test_result_is_json_ready_and_carries_definitions():
    res = compute_metrics(_three_task())
    json.dumps(res, allow_nan=False)
    assert set(METRIC_NAMES) <= set(res)
    assert set(METRIC_NAMES) <= set(res["definitions"]) and res["definitions"] == DEFINITIONS
    assert "T−1" in res["definitions"]["bwt"]
    assert "l ≥ j" in res["definitions"]["forgetting_max"]
    assert all(type(v) is float for v in res["ap_per_stage"])


def test_cost_summary():
    records = [
        {"type": "eval", "stage": 0, "seconds": 4.0},
        {
            "type": "step",
            "step": 1,
            "task": "a",
            "loss": 2.0,
            "losses": {},
            "tokens": 100,
            "samples": 8,
            "replayed": 0,
            "seconds": 1.0,
            "tokens_per_s": 100.0,
            "lr": 1e-4,
        },
        {
            "type": "step",
            "step": 2,
            "task": "a",
            "loss": 1.5,
            "losses": {},
            "tokens": 100,
            "samples": 8,
            "replayed": 0,
            "seconds": 1.0,
            "tokens_per_s": 100.0,
            "lr": 1e-4,
        },
        {
            "type": "task_end",
            "task": "a",
            "seconds": 2.5,
            "peak_memory_mb": 900.0,
            "counters": {"extra_forward_passes": 3},
        },
        {"type": "eval", "stage": 1, "seconds": 5.0},
        {
            "type": "step",
            "step": 3,
            "task": "b",
            "loss": 1.8,
            "losses": {"replay": 0.3},
            "tokens": 300,
            "samples": 8,
            "replayed": 2,
            "seconds": 3.0,
            "lr": 1e-4,
        },
        # resumed run: step 3 logged again; the later record wins
        {
            "type": "step",
            "step": 3,
            "task": "b",
            "loss": 1.8,
            "losses": {"replay": 0.3},
            "tokens": 200,
            "samples": 8,
            "replayed": 4,
            "seconds": 2.0,
            "lr": 1e-4,
        },
        {"type": "replay_event", "step": 3, "task": "b", "size": 4},
        {
            "type": "task_end",
            "task": "b",
            "seconds": 3.5,
            "peak_memory_mb": 1200.0,
            "counters": {"extra_forward_passes": 10, "probe_batches": 2},
        },
        {"type": "eval", "stage": 2, "seconds": 6.0},
    ]
    cost = cost_summary(records)
    assert set(COST_NAMES) <= set(cost)
    assert cost["optimizer_steps"] == 3
    assert cost["train_tokens"] == 400 and cost["train_samples"] == 24
    assert cost["train_tokens_per_s"] == pytest.approx(400 / 4.0)
    assert cost["replayed_samples"] == 4
    assert cost["replayed_share"] == pytest.approx(4 / 24)
    assert cost["replay_events"] == 1
    assert cost["extra_forward_passes"] == 10
    assert cost["peak_memory_mb"] == 1200.0
    assert cost["seconds_per_task"] == [2.5, 3.5]
    assert cost["train_seconds"] == pytest.approx(6.0)
    assert cost["eval_seconds"] == pytest.approx(15.0)
    assert cost["counters"] == {"extra_forward_passes": 10, "probe_batches": 2}
    json.dumps(cost, allow_nan=False)


def test_cost_summary_of_an_empty_log():
    cost = cost_summary([])
    assert cost["optimizer_steps"] == 0 and cost["train_tokens_per_s"] is None
    assert cost["replayed_share"] is None and cost["peak_memory_mb"] is None
    assert cost["general_share"] is None
    assert cost["extra_forward_passes"] == 0 and cost["seconds_per_task"] == []


def test_cost_summary_prefers_cumulative_counters():
    # with train.log_every > 1 only every n-th step is logged; the counters hold the totals
    records = [
        {
            "type": "step",
            "step": 10,
            "task": 0,
            "loss": 1.0,
            "tokens": 100,
            "samples": 8,
            "replayed": 2,
            "seconds": 0.5,
        },
        {
            "type": "step",
            "step": 20,
            "task": 0,
            "loss": 1.0,
            "tokens": 100,
            "samples": 8,
            "replayed": 2,
            "seconds": 0.5,
        },
        {
            "type": "task_end",
            "task": 0,
            "seconds": 12.0,
            "peak_memory_mb": 0.0,
            "counters": {"samples": 160.0, "replayed_rows": 40.0, "tokens": 2000.0},
        },
    ]
    cost = cost_summary(records)
    assert cost["optimizer_steps"] == 20
    assert cost["train_samples"] == 160 and cost["replayed_samples"] == 40
    assert cost["train_tokens"] == 2000
    assert cost["replayed_share"] == pytest.approx(0.25)
    assert cost["train_tokens_per_s"] == pytest.approx(200.0)  # logged tokens / logged seconds
    assert cost["peak_memory_mb"] is None  # 0 means "not measured"
    assert cost["counters"] == {"samples": 160, "replayed_rows": 40, "tokens": 2000}
    assert cost["general_share"] == 0.0  # no general rows counted


def test_cpu_seconds_add_training_and_evaluation_or_say_none():
    records = [
        {"type": "eval", "stage": 0, "seconds": 3.0, "cpu_seconds": 2.0},  # the same for all
        {"type": "task_end", "task": 0, "seconds": 9.0, "cpu_seconds": 4.0},
        {"type": "eval", "stage": 1, "seconds": 3.0, "cpu_seconds": 1.5},
    ]
    assert cost_summary(records)["cpu_seconds"] == pytest.approx(5.5)
    cached_row0 = [{**records[0], "cpu_seconds": 0.0, "cached": True}, *records[1:]]
    assert cost_summary(cached_row0)["cpu_seconds"] == pytest.approx(5.5)
    older = [*records, {"type": "eval", "stage": 2, "seconds": 3.0}]  # logged before it existed
    assert cost_summary(older)["cpu_seconds"] is None


def test_general_rows_have_their_own_share():
    """GeRe's general rows are not replayed task rows: a GeRe run used to show share 0."""
    records = [
        {"type": "step", "step": 1, "task": 0, "tokens": 50, "samples": 8, "replayed": 1,
         "general": 1, "seconds": 1.0},
        {"type": "task_end", "task": 0, "seconds": 1.0,
         "counters": {"samples": 8.0, "replayed_rows": 1.0, "general_rows": 2.0}},
    ]  # fmt: skip
    cost = cost_summary(records)
    assert cost["general_share"] == pytest.approx(2 / 8)
    assert cost["replayed_share"] == pytest.approx(1 / 8)


def test_a_task_timed_short_by_an_older_resume_leaves_its_run_untimed():
    """A task resumed in mid-way by an older retain logged only what the resumed process spent
    (task_end seconds below its own steps' seconds): the run's train and CPU time are unknown,
    not understated. A task timed in full is never flagged."""
    def log(end_seconds: float) -> list[dict]:
        steps = [{"type": "step", "step": s, "task": 0, "task_step": s, "tokens": 10,
                  "samples": 2, "seconds": 4.0} for s in (1, 2, 3)]
        return [*steps, {"type": "task_end", "task": 0, "seconds": end_seconds,
                         "cpu_seconds": end_seconds}, {"type": "eval", "stage": 1,
                                                       "seconds": 1.0, "cpu_seconds": 1.0}]

    whole = cost_summary(log(12.5))
    assert whole["tasks_timed_short"] == []
    assert whole["train_seconds"] == 12.5 and whole["cpu_seconds"] == 13.5
    short = cost_summary(log(4.5))  # resumed after step 2: only step 3 timed
    assert short["tasks_timed_short"] == [0]
    assert short["train_seconds"] is None and short["cpu_seconds"] is None
    assert short["eval_seconds"] == 1.0 and short["optimizer_steps"] == 3
