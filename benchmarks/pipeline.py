"""End to end: a whole continual run with retain against the usual do-it-yourself pipeline.

The do-it-yourself side is what users write today: Hugging Face `Trainer` + PEFT once per task
(the same LoRA model carried from task to task), then every task evaluated after every task the
way common evaluation harnesses do at their default batch size of one: one forward pass per
prompt–option pair for option tasks, `generate` per prompt for open answers. Both sides get the
same model, stream (the first 4 built-in tasks), tokenised examples, steps, batch size, learning
rate, schedule, warm-up and LoRA config; both score the same way (options per byte, the task's
metric on generated text), so their final score rows must agree within their intervals. Data
order differs (Trainer shuffles with its own sampler), so they agree in distribution, not bit
for bit; forgetting varies with the order (unit conversion lost 68 points to the next task in
retain's seed 42 and 9 in seed 7), so the benchmark also scores retain's final adapter with the
do-it-yourself evaluation, which must match retain's own scores example by example. Each side's
wall-clock covers everything it does: model loading, tokenisation, training, evaluation
(retain: also its checkpoints, per-example files and report). Each round runs both sides back
to back, the order alternating; the speed-up is the median of the rounds' paired ratios with an
interval over rounds, in wall-clock and CPU time (this process and its waited-for children),
with a verdict on the goal (benchmarks/rounds.py). Scores and parity are from round 1.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pipeline.py [--steps 30] [--test 24] \
        [--tasks 4] [--rounds 6]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from rounds import Goal, Timing, measure, run_rounds, time_ratio_lines, timing_text

if TYPE_CHECKING:
    from retain.config import DataConfig

LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj",
                                                                  "o_proj"]}


def retain_run(args: argparse.Namespace, out: Path) -> tuple[dict[str, list[float]], Path]:
    from retain.config import load_config
    from retain.storage.examples import ExampleResults
    from retain.train.loop import run

    config = load_config(None, [
        f"model.name_or_path={args.model}", "data.stream=builtin", f"data.num_tasks={args.tasks}",
        "data.max_train_per_task=200", f"data.max_test_per_task={args.test}",
        f"data.max_length={args.max_length}", "data.valid_per_task=0",
        f"train.steps_per_task={args.steps}",
        "train.batch_size=8", f"train.lr={args.lr}", "train.warmup_ratio=0.1",
        "train.progress=false", f"output_dir={out}", "name=retain", "eval.batch_size=32",
        f"model.lora.r={LORA['r']}", f"model.lora.alpha={LORA['alpha']}",
        f"model.lora.dropout={LORA['dropout']}",
        f"model.lora.target_modules=[{','.join(LORA['target_modules'])}]",
    ])
    result = run(config)
    examples = ExampleResults.load(result.run_dir)
    final = {n: list(examples.get(args.tasks, n).scores) for n in examples.names()}
    return final, result.run_dir / "adapters" / f"task_{args.tasks}"


def diy_scores_of(args: argparse.Namespace, adapter: Path) -> dict[str, list[float]]:
    """The do-it-yourself evaluation of retain's final adapter (untimed): on the same model the
    two evaluations must agree example by example, whatever the training order did."""
    from peft import PeftModel

    from retain.config import ModelConfig
    from retain.data.streams import load_stream
    from retain.models.loading import load_backbone

    stream = load_stream(_data_config(args))
    model, tokenizer = load_backbone(ModelConfig(name_or_path=args.model), torch.device("cpu"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return _evaluate_all(PeftModel.from_pretrained(model, str(adapter)), tokenizer, stream)


def _data_config(args: argparse.Namespace) -> DataConfig:
    """The stream both sides train and test on (the first `--tasks` built-in tasks)."""
    from retain.config import DataConfig

    return DataConfig(stream="builtin", num_tasks=args.tasks, max_train_per_task=200,
                       max_test_per_task=args.test, max_length=args.max_length, valid_per_task=0)


def _naive_option_scores(model, tokenizer, ex) -> float:
    """Accuracy (per byte) from one forward pass per prompt–option pair."""
    from retain.data.encoding import encode_prompt, encode_target
    from retain.eval.scoring import choose_option, per_byte

    prompt = encode_prompt(tokenizer, ex.prompt)
    sums = []
    for option in ex.options:
        target = encode_target(tokenizer, ex.prompt, option)
        ids = torch.tensor([prompt + target])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        positions = range(len(prompt) - 1, len(prompt) + len(target) - 1)
        sums.append(float(sum(logp[p, ids[0, p + 1]] for p in positions)))
    chosen, _ = choose_option(per_byte(sums, ex.options))
    return float(ex.options[chosen] == ex.answer)


def _naive_generate(model, tokenizer, task, ex) -> float:
    from retain.data.encoding import encode_prompt
    from retain.eval.answers import cut_at_stop, score_text

    ids = torch.tensor([encode_prompt(tokenizer, ex.prompt)])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=task.max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    text = cut_at_stop(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True),
                       task.stop)
    return score_text(task.metric, text, ex.answer, source=ex.source_text)


def _evaluate_all(model, tokenizer, stream) -> dict[str, list[float]]:
    model.eval()
    row = {}
    for task in stream.tasks:
        if task.scoring == "loglik":
            row[task.name] = [_naive_option_scores(model, tokenizer, ex) for ex in task.test]
        else:
            row[task.name] = [_naive_generate(model, tokenizer, task, ex) for ex in task.test]
    model.train()
    return row


def diy_run(args: argparse.Namespace, out: Path) -> dict[str, list[float]]:
    from datasets import Dataset
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from retain.config import ModelConfig
    from retain.data.encoding import encode_train_example
    from retain.data.streams import load_stream
    from retain.models.loading import load_backbone

    stream = load_stream(_data_config(args))
    model, tokenizer = load_backbone(ModelConfig(name_or_path=args.model), torch.device("cpu"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = get_peft_model(model, LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=LORA["target_modules"], task_type=TaskType.CAUSAL_LM))
    _evaluate_all(model, tokenizer, stream)  # row 0
    final: dict[str, list[float]] = {}
    for t, task in enumerate(stream.tasks):
        encoded = [encode_train_example(tokenizer, ex, args.max_length) for ex in task.train]
        data = Dataset.from_dict({"input_ids": [e.input_ids for e in encoded],
                                  "labels": [e.labels for e in encoded]})
        targs = TrainingArguments(
            output_dir=str(out / f"diy_task{t}"), max_steps=args.steps,
            per_device_train_batch_size=8, learning_rate=args.lr, lr_scheduler_type="cosine",
            warmup_steps=int(round(0.1 * args.steps)), weight_decay=0.0, max_grad_norm=1.0,
            logging_strategy="no", save_strategy="no", report_to=[], use_cpu=True,
            disable_tqdm=True, seed=42, dataloader_num_workers=0,
        )
        collator = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        Trainer(model=model, args=targs, train_dataset=data, data_collator=collator).train()
        final = _evaluate_all(model, tokenizer, stream)  # every task after every task
    return final


def _interval(scores: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % percentile bootstrap interval over examples, in points."""
    x = np.asarray(scores)
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, len(x), size=(2000, len(x)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return 100 * x.mean(), 100 * low, 100 * high


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--test", type=int, default=24)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(tempfile.mkdtemp(prefix="pipeline-"))
    counter = itertools.count()

    def show(r: int, side: str, res: tuple[object, Timing]) -> None:
        print(f"round {r + 1} {side:<6} {timing_text(res[1])}", flush=True)

    runs = run_rounds({
        "retain": lambda: measure(lambda: retain_run(args, out / f"retain{next(counter)}")),
        "DIY": lambda: measure(lambda: diy_run(args, out / f"diy{next(counter)}")),
    }, args.rounds, show)
    (retain_row, retain_adapter), _ = runs["retain"][0]
    diy_row, _ = runs["DIY"][0]
    parity = diy_scores_of(args, retain_adapter)
    print(f"stream: builtin, first {args.tasks} tasks; {args.steps} steps x 8 rows per task; "
          f"{args.test} test examples per task; model {args.model}")
    print("\n".join(time_ratio_lines("speed-up DIY / retain", [t for _, t in runs["DIY"]],
                                     [t for _, t in runs["retain"]], Goal(3.0, at_most=False))))
    print("final score row (after the last task, round 1), 95 % bootstrap interval over test "
          "examples:")
    agree = True
    for name in retain_row:
        a, b = _interval(retain_row[name]), _interval(diy_row[name])
        overlap = a[1] <= b[2] and b[1] <= a[2]
        agree &= overlap
        print(f"  {name:<18} retain {a[0]:6.1f} [{a[1]:5.1f}, {a[2]:5.1f}]   "
              f"DIY {b[0]:6.1f} [{b[1]:5.1f}, {b[2]:5.1f}]   {'agree' if overlap else 'DIFFER'}")
    print(f"final rows agree within their intervals: {'yes' if agree else 'NO'}  (one training "
          "run each, in different data orders: the intervals cover test examples, not training)")
    same = {n: sum(a == b for a, b in zip(retain_row[n], parity[n], strict=True))
            for n in retain_row}
    print("retain's final adapter scored by the do-it-yourself evaluation, example by example: "
          + ", ".join(f"{n} {same[n]}/{len(parity[n])}" for n in retain_row)
          + f"  -> {'identical' if all(same[n] == len(parity[n]) for n in same) else 'DIFFER'}")


if __name__ == "__main__":
    main()
