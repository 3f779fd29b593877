"""Trainer set-ups retain refuses before anything trains, each naming the setting and the fix:
a custom loss, a model that already carries adapters (or none while an adapter method is
asked), a collator that would cut the stream's rows, optimizer objects, best-model reloading."""

from __future__ import annotations

import pytest
from peft import LoraConfig, PromptTuningConfig, TaskType, get_peft_model
from transformers import DataCollatorWithPadding, Trainer

from retain.integrations.hf import Continual
from retain.integrations.hf_checks import TrainerSetupError
from retain.models.tiny import tiny_model_and_tokenizer
from tests.integration_hf_helpers import SETTINGS, hf_args


def _trainer(tmp_path, model=None, cls=Trainer, **kwargs):
    tiny, tokenizer = tiny_model_and_tokenizer()
    return cls(model=model or tiny, args=hf_args(tmp_path / "hf", **kwargs.pop("args", {})),
               processing_class=tokenizer, **kwargs)


def _attach(trainer, tmp_path, *extra):
    return Continual(trainer, None, [*SETTINGS, *extra, f"output_dir={tmp_path}", "name=x"])


def test_a_custom_compute_loss_is_refused_by_name(tmp_path) -> None:
    class Weighted(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    with pytest.raises(TrainerSetupError, match=r"Weighted.compute_loss overrides"):
        _attach(_trainer(tmp_path, cls=Weighted), tmp_path)


@pytest.mark.parametrize(("adapter", "method", "words"), [
    ("prompt", "procl", "PROMPT_TUNING adapter); procl builds its own adapter layers"),
    ("lora", "sequential", "LORA adapter); retain adds LoRA itself"),
])
def test_a_model_with_adapters_already_is_refused(tmp_path, adapter, method, words) -> None:
    model, _ = tiny_model_and_tokenizer()
    peft = (PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=2)
            if adapter == "prompt" else LoraConfig(task_type=TaskType.CAUSAL_LM, r=2))
    trainer = _trainer(tmp_path, model=get_peft_model(model, peft))
    with pytest.raises(TrainerSetupError) as err:
        _attach(trainer, tmp_path, f"methods=[{method}]")
    assert words in str(err.value) and "pass the base model" in str(err.value)


def test_an_adapter_method_without_lora_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"procl trains LoRA adapters and needs model.finetune"):
        _attach(_trainer(tmp_path), tmp_path, "methods=[procl]", "model.finetune=full")


def test_a_collator_that_would_cut_the_rows_is_refused_and_the_directory_stays_free(
    tmp_path,
) -> None:
    _, tokenizer = tiny_model_and_tokenizer()
    cutting = DataCollatorWithPadding(tokenizer, max_length=16)
    with pytest.raises(TrainerSetupError) as err:
        _attach(_trainer(tmp_path, data_collator=cutting), tmp_path)
    message = str(err.value)
    assert "task 'parity' train record" in message and "data_collator.max_length=16" in message
    # the run directory's lock was released: the same run attaches once the limit fits
    roomy = DataCollatorWithPadding(tokenizer, max_length=128)
    _attach(_trainer(tmp_path, data_collator=roomy), tmp_path).driver.close()


def test_optimizer_objects_and_best_model_reloading_are_refused(tmp_path) -> None:
    import torch

    model, _ = tiny_model_and_tokenizer()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TrainerSetupError, match=r"one optimizer and schedule per task"):
        _attach(_trainer(tmp_path, model=model, optimizers=(optimizer, None)), tmp_path)
    best = {"load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "steps"}
    with pytest.raises(TrainerSetupError, match=r"load_best_model_at_end=True would reload"):
        _attach(_trainer(tmp_path, args=best, eval_dataset=[{"input_ids": [1]}]), tmp_path)


def test_ddp_must_expect_unused_parameters_for_methods_that_freeze_some(tmp_path) -> None:
    from retain.integrations.hf_checks import check_ddp

    class Freezing:
        name, ddp_find_unused_parameters = "olora", True

    trainer = _trainer(tmp_path)
    check_ddp(trainer, [Freezing()], processes=1)  # one process: no DDP, nothing to expect
    with pytest.raises(TrainerSetupError, match=r"olora .*\(ddp_find_unused_parameters=True\)"):
        check_ddp(trainer, [Freezing()], processes=2)
    trainer.args.ddp_find_unused_parameters = True
    check_ddp(trainer, [Freezing()], processes=2)


def test_the_run_config_records_what_the_trainer_trains_with(tmp_path) -> None:
    from types import SimpleNamespace

    from retain.config import load_config
    from retain.integrations.hf_checks import config_from_args

    args = hf_args(tmp_path, accum=3, learning_rate=1e-4, warmup_steps=0.1, seed=7,
                   per_device_train_batch_size=5, max_grad_norm=0.0, bf16=True)
    model = SimpleNamespace(config=SimpleNamespace(_name_or_path="org/some-model"))
    cfg = config_from_args(load_config(None, SETTINGS), args, model)
    train = cfg.train
    assert (train.batch_size, train.grad_accum, train.lr, train.warmup_ratio) == (5, 3, 1e-4, 0.1)
    assert train.max_grad_norm is None and train.mixed_precision == "bf16" and cfg.seed == 7
    assert train.report_to == "none" and cfg.model.name_or_path == "org/some-model"
    nameless = SimpleNamespace(config=SimpleNamespace(_name_or_path=""))
    assert config_from_args(load_config(None, SETTINGS), args, nameless).model.name_or_path == (
        "tiny-random"
    )
