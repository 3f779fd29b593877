"""What retain's Trainer integration costs per step: a Hugging Face `Trainer` with
`retain.integrations.hf` against the same `Trainer` without it, side by side.

Each round trains, on the same model, rows, batch size and optimizer:
  - `plain`: a plain `Trainer` on the second task's rows (its own collator and loss);
  - one run per method through `Continual` (sequential, fixed, mssr by default), whose
    second task is timed (the task where replay mixes earlier rows in).
A step's time is the wall-clock (`--clock cpu`: this process's CPU time) between two
consecutive `on_step_end` callbacks (loading, forward, backward, optimizer, and retain's end of
step), first step of a task left out. A
round's ratio is the method's median step time over `plain`'s; the printed ratio is the median
over rounds with a 95 % bootstrap interval over rounds. Targets: ≤ 1.05× for `fixed`, ≤ 1.10×
for `mssr`. Arms alternate inside each round, so machine load hits them alike. A second column
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

import numpy as np
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


def interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the median."""
    if len(values) < 2:
        return values[0], values[0]
    rng = np.random.default_rng(seed)
    draws = rng.choice(values, size=(4000, len(values)), replace=True)
    medians = np.median(draws, axis=1)
    return float(np.quantile(medians, 0.025)), float(np.quantile(medians, 0.975))


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    low, high = interval(values)
    return f"{statistics.median(values):.3f}× [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--methods", default="sequential,fixed,mssr")
    parser.add_argument("--rounds", type=int, default=5)
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
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for r in range(opts.rounds):
            base = statistics.median(plain_times(opts, out))
            plain_medians.append(base)
            line = [f"round {r + 1}: plain {base * 1000:.1f} ms/step"]
            medians = {}
            for method in methods:
                mine = medians[method] = statistics.median(retain_times(opts, method, out))
                ratios[method].append(mine / base)
                line.append(f"{method} {mine * 1000:.1f} ({mine / base:.3f}x)")
            if "sequential" in medians:
                for method in methods:
                    own[method].append(medians[method] / medians["sequential"])
            print(", ".join(line), flush=True)
    print(f"\n{opts.model}, batch {opts.batch}, {opts.steps} steps per arm, {opts.rounds} rounds,"
          f" {opts.clock} clock; plain Trainer median"
          f" {statistics.median(plain_medians) * 1000:.1f} ms/step")
    print("| method | time per step vs plain Trainer | vs sequential through retain | target |")
    print("|---|---|---|---|")
    for method in methods:
        target = f"≤ {TARGETS[method]:.2f}×" if method in TARGETS else ""
        print(f"| {method} | {summary(ratios[method])} | {summary(own[method])} | {target} |")
    print("(median over rounds, 95 % bootstrap interval over rounds)")


if __name__ == "__main__":
    main()
