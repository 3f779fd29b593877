"""retain's methods inside TRL's SFTTrainer: the examples stream, task by task, on the bundled
SmolLM2-135M-Instruct, with retain's evaluation after every task and retain's run directory.

    pip install 'retain[trl]'
    python examples/sft_trainer.py                        # mssr replay, ~minutes on a CPU
    python examples/sft_trainer.py --methods sequential   # the baseline, to compare with
    python examples/sft_trainer.py --model tiny-random train.steps_per_task=2   # seconds

Everything but the `Continual` lines is an ordinary SFTTrainer script; the test suite runs it
on the tiny model (tests/test_integration_hf_trl.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from trl import SFTConfig, SFTTrainer

from retain.config import ModelConfig
from retain.integrations.hf import Continual, stream_dataset
from retain.models.loading import load_backbone
from retain.train.loop import RunResult

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> tuple[RunResult, SFTTrainer]:
    """Train the stream; the run's result and the SFTTrainer (its log history holds its own
    evaluation of `eval_dataset`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="bundled name, path or hub id")
    parser.add_argument("--methods", default="mssr", help="retain methods, e.g. mssr or ewc")
    parser.add_argument("--output", default="runs", help="retain's output_dir")
    parser.add_argument("overrides", nargs="*", help="retain config key=value")
    opts = parser.parse_args(argv)
    # any causal LM and its tokenizer (AutoModelForCausalLM.from_pretrained works the same)
    model, tokenizer = load_backbone(ModelConfig(name_or_path=opts.model))

    config = HERE / "run.yaml"
    settings = [
        f"model.name_or_path={opts.model}",
        f"methods=[{opts.methods}]",
        f"output_dir={opts.output}",
        f"name=sft-{opts.methods.replace(',', '+')}",
        *opts.overrides,
    ]
    args = SFTConfig(
        output_dir=str(Path(opts.output) / "sft-checkpoints"),
        per_device_train_batch_size=4,
        learning_rate=5e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        optim="adamw_torch",
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        use_cpu=not torch.cuda.is_available(),
        max_length=256,
        eval_strategy="epoch",  # the Trainer's own eval loss, on the stream's validation rows
        per_device_eval_batch_size=8,
        save_strategy="no",
        report_to="none",
        logging_steps=10,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=stream_dataset(config, settings),  # SFTTrainer wants one; retain trains
        eval_dataset=stream_dataset(config, settings, split="valid"),  # from its own stream
        processing_class=tokenizer,
    )
    # the lines retain adds: its stream, methods, evaluation and run directory
    continual = Continual(trainer, config, settings)
    result = continual.train()
    print(f"ap {result.metrics['ap']:.1f}, bwt {result.metrics['bwt']:.1f}: {result.run_dir}")
    return result, trainer


if __name__ == "__main__":
    main()
