"""What retain's Trainer integration costs per step: a Hugging Face `Trainer` with
`retain.integrations.hf` against the same `Trainer` without it, side by side.

Each round trains, on the same model, rows, batch size and optimizer:
  - `plain`: a plain `Trainer` on the second task's rows (its own collator and loss);
  - one run per method through `Continual` (sequential, fixed, mssr by default), whose
    second task is timed (the task where replay mixes earlier rows in).
A step's time is the wall-clock (`--clock cpu`: this process's CPU time) between two
consecutive `on_step_end` callbacks (loading, forward, backward, optimizer, and retain's end of
step), first step of a task left out. A round's ratio is the method's median step time over
`plain`'s; the printed ratio is the median over rounds with the order-statistic interval over
rounds and a verdict (`benchmarks/rounds.py`; ≥ 6 rounds for a 95 % interval). Targets: ≤ 1.05×
for `fixed`, ≤ 1.10× for `mssr`. The arms run back to back in each round, their order
alternating between rounds, so machine load hits them alike. A second column
compares with `sequential` through the integration: the method's own cost, apart from retain's
loss path (which projects only answer positions onto the vocabulary, so it can be cheaper
than the Trainer's own loss).

    python benchmarks/hf_integration.py                         # tiny model, seconds
    python benchmarks/hf_integration.py --model smollm2-135m --steps 12 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rounds import Goal, ratio_lines
from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

from retain.config import ModelConfig, load_config
from retain.data.encoding import encode_train_example
from retain.data.streams import load_stream
from retain.integrations.hf import Continual
from retain.models.adapters import prepare_for_finetuning
from retain.models.loading import load_backbone

TARGETS = {"fixed": 1.05, "mssr": 1.10}


class StepClock(TrainerCallback):
    """Time between consecutive optimizer steps of one `train()` call: wall-clock, or this
    process's CPU time (`--clock cpu`, which other jobs on a shared machine hardly change)."""

    clock = staticmethod(time.perf_counter)

    def __init__(self) -> None:
        self.times: list[float] = []
        self._last: float | None = None

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        self._last = None
        self.times = []

    def on_step_end(self, args, state, control, **kwargs) -> None:
        now = self.clock()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def settings(opts: argparse.Namespace, method: str, out: Path) -> list[str]:
    return [
        f"model.name_or_path={opts.model}",
        "data.stream=builtin",
        "data.num_tasks=2",  # the second task is timed: replay mixes the first one's rows in
        f"data.max_train_per_task={opts.rows}",
        "data.max_test_per_task=4",
        "data.valid_per_task=4",
        "data.max_length=256",
        f"train.steps_per_task={opts.steps}",
        f"train.batch_size={opts.batch}",
        "train.progress=false",
        "eval.batch_size=8",
        f"methods=[{method}]",
        f"output_dir={out}",
        f"name={method}",
    ]


def args_for(out: Path, opts: argparse.Namespace) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=opts.batch, learning_rate=5e-4,
        lr_scheduler_type="cosine", optim="adamw_torch", save_strategy="no", report_to=[],
        logging_steps=10_000, disable_tqdm=True, use_cpu=opts.cpu, seed=42,
    )


def plain_times(opts: argparse.Namespace, out: Path) -> list[float]:
    """The Trainer without retain: the timed task's rows, padded by its usual collator."""
    cfg = load_config(None, settings(opts, "sequential", out))
    model, tokenizer = load_backbone(ModelConfig(name_or_path=opts.model))
    model = prepare_for_finetuning(model, cfg.model)
    task = load_stream(cfg.data).tasks[-1]
    rows = []
    for i, ex in enumerate(task.train):
        enc = encode_train_example(tokenizer, ex, cfg.data.max_length, task=task.name, index=i)
        rows.append({"input_ids": enc.input_ids, "labels": enc.labels})
    args = args_for(out / "plain", opts)
    args.max_steps = opts.steps
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                      data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
                      callbacks=[clock])
    trainer.train()
    return clock.times


def retain_times(opts: argparse.Namespace, method: str, out: Path) -> list[float]:
    """The same Trainer through `Continual`; the last task's steps."""
    model, tokenizer = load_backbone(ModelConfig(name_or_path=opts.model))
    clock = StepClock()
    trainer = Trainer(model=model, args=args_for(out / f"hf-{method}", opts),
                      processing_class=tokenizer, callbacks=[clock])
    Continual(trainer, None, settings(opts, method, out), overwrite=True).train()
    return clock.times  # reset at each task's train(): the last task's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--methods", default="sequential,fixed,mssr")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rows", type=int, default=64, help="train rows per task")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even with a GPU")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    opts = parser.parse_args()
    if opts.clock == "cpu":
        StepClock.clock = staticmethod(time.process_time)
    methods = opts.methods.split(",")
    ratios: dict[str, list[float]] = {m: [] for m in methods}
    own: dict[str, list[float]] = {m: [] for m in methods}  # vs sequential through retain
    plain_medians: list[float] = []
    arms = ["plain", *methods]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for r in range(opts.rounds):
            medians: dict[str, float] = {}
            for arm in arms if r % 2 == 0 else arms[::-1]:  # the order alternates by round
                times = plain_times(opts, out) if arm == "plain" else retain_times(opts, arm, out)
                medians[arm] = statistics.median(times)
            base = medians["plain"]
            plain_medians.append(base)
            line = [f"round {r + 1}: plain {base * 1000:.1f} ms/step"]
            for method in methods:
                ratios[method].append(medians[method] / base)
                mine = medians[method]
                line.append(f"{method} {mine * 1000:.1f} ({mine / base:.3f}x)")
                if "sequential" in medians:
                    own[method].append(medians[method] / medians["sequential"])
            print(", ".join(line), flush=True)
    print(f"\n{opts.model}, batch {opts.batch}, {opts.steps} steps per arm, {opts.rounds} rounds,"
          f" {opts.clock} clock; plain Trainer median"
          f" {statistics.median(plain_medians) * 1000:.1f} ms/step")
    for method in methods:
        goal = Goal(TARGETS[method]) if method in TARGETS else None
        for line in ratio_lines(f"{method} / plain Trainer, time per step",
                                {f"{opts.clock} clock": ratios[method]}, goal):
            print(line)
        if method != "sequential" and own[method]:
            for line in ratio_lines(f"{method} / sequential through retain, time per step",
                                    {f"{opts.clock} clock": own[method]}, None):
                print(line)


if __name__ == "__main__":
    main()
