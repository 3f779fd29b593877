"""Building a run's parts, in the order they depend on each other: `build_components`.

Plugins first (they decide how DDP is set up), then the accelerator and the run directory
(locked and settled before anything is written), the model, the encoded data, the evaluator,
the log, the plugin context, and last the model as it trains (wrapped by plugins, then
prepared or sharded).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from retain.config import ConfigError, RunConfig
from retain.data.encoding import SampleStore, encode_train_example
from retain.data.task import TaskStream
from retain.eval.evaluate import model_context_length
from retain.eval.row import RowEvaluator
from retain.methods.base import Context, Plugin, overrides
from retain.methods.registry import build_plugins
from retain.models.hidden import projects_kept_positions
from retain.storage.trackers import Trackers, check_tracker
from retain.train import fsdp  # retain's own FSDP2 (train.sharding=fsdp2)
from retain.train.components import Components
from retain.train.devices import cpu_only, mixed_precision, reset_peak_memory
from retain.train.distributed import check_process_count
from retain.train.evaluation import score_examples
from retain.train.resume import open_run_dir
from retain.train.step import forward


def build_components(
    config: RunConfig,
    stream: TaskStream | None = None,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
    overwrite: bool = False,
    accelerator: Accelerator | None = None,
) -> Components:
    """A run's parts. `overwrite`: clear a run directory that holds no checkpoint of this run
    (--overwrite); without it such a directory is refused, never overwritten. `accelerator`:
    one owned by another trainer (retain.integrations.hf), which then prepares the model."""
    from retain.data.streams import load_stream
    from retain.models.adapters import prepare_for_finetuning
    from retain.models.loading import load_backbone
    from retain.storage.rundir import RunLog

    run_dir = config.run_dir
    report_to = None if config.train.report_to == "none" else config.train.report_to
    check_tracker(config.train.report_to)  # refused before the run directory is touched
    plugins: list[Plugin] = build_plugins(config)
    owned = accelerator is None
    accelerator = accelerator or _accelerator(config, plugins, report_to)
    check_process_count(accelerator)
    # locked for the life of the run; resumed, cleared or refused before anything is written
    lock = open_run_dir(config, overwrite, accelerator)
    set_seed(config.seed)
    device = accelerator.device
    peak_scope = "run" if reset_peak_memory(device) else "process"
    stream = stream if stream is not None else load_stream(config.data)
    if model is None:
        model, tokenizer = load_backbone(config.model, device)
    assert tokenizer is not None, "a tokenizer must come with a given model"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    backbone = list(model.parameters())  # held only to tell which ones stay frozen
    model = prepare_for_finetuning(model, config.model)
    store = SampleStore()
    task_samples, truncated = encode_training_data(config, stream, tokenizer, store)
    context_length = model_context_length(model)
    evaluator = RowEvaluator(config, stream, tokenizer, context_length)
    trackers = Trackers(
        accelerator, report_to is not None, config.name, config.model_dump(mode="json")
    )
    log = RunLog(run_dir / "log.jsonl", enabled=accelerator.is_main_process, sink=trackers)
    ctx = Context(
        config=config,
        stream=stream,
        store=store,
        task_samples=task_samples,
        device=device,
        tokenizer=tokenizer,
        log_event=log.write,
        autocast=accelerator.autocast,
    )
    for plugin in plugins:
        if overrides(plugin, "wrap_model"):
            model = plugin.wrap_model(ctx, model)
    model = _training_model(config, model, accelerator, plugins, owned)
    ctx.model = model
    inner = accelerator.unwrap_model(model)
    ctx.bind_model(  # the plugin context's model services (methods/services.py)
        inner, backbone, forward, int(tokenizer.pad_token_id), projects_kept_positions(model)
    )
    del backbone
    hidden_source = None
    if any(p.needs_hidden_states for p in plugins):
        from retain.models.hidden import decoder_module

        hidden_source = decoder_module(inner)
    parts = Components(
        config=config,
        accelerator=accelerator,
        lock=lock,
        stream=stream,
        tokenizer=tokenizer,
        model=model,
        plugins=plugins,
        ctx=ctx,
        store=store,
        evaluator=evaluator,
        log=log,
        trackers=trackers,
        truncated_train=truncated,
        context_length=context_length,
        full_logits=any(p.needs_logits for p in plugins) or not projects_kept_positions(model),
        hidden_source=hidden_source,
        peak_memory_scope=peak_scope,
    )
    ctx.score_examples = partial(score_examples, parts)
    return parts


def _accelerator(config: RunConfig, plugins: list[Plugin], report_to: str | None) -> Accelerator:
    """Accumulation is done by the loop (it knows the answer tokens of the whole step), so
    accelerate is not told about it: its backward would divide the loss a second time."""
    # adapter methods freeze some of their parameters per task: DDP must expect that
    unused = any(p.ddp_find_unused_parameters for p in plugins)
    return Accelerator(
        mixed_precision=mixed_precision(config),
        cpu=cpu_only(),
        log_with=report_to,
        project_dir=str(config.run_dir / "trackers"),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
        if unused
        else None,
    )


def _training_model(
    config: RunConfig,
    model: torch.nn.Module,
    accelerator: Accelerator,
    plugins: list[Plugin],
    owned: bool,
) -> torch.nn.Module:
    """The model as it trains: sharded by retain's FSDP2, prepared by accelerate, or as given
    when another trainer owns the accelerator (it prepares the model itself)."""
    if config.train.sharding == fsdp.FSDP_SHARDING:
        if not owned:
            raise ConfigError(
                "train.sharding=fsdp2 shards in retain's own loop; under a Trainer use its "
                "own FSDP settings (TrainingArguments.fsdp) and leave train.sharding at none"
            )
        return fsdp.shard_model(model, accelerator, plugins)
    return accelerator.prepare(model) if owned else model


def encode_training_data(
    config: RunConfig, stream: TaskStream, tokenizer: Any, store: SampleStore
) -> tuple[list[list[int]], dict[str, int]]:
    """Tokenise every training sample once into `store`: each task's ids, and the prompts cut
    to fit per task. An answer that cannot fit stops the run here, before any training."""
    pools, truncated = [], {}
    for t, task in enumerate(stream.tasks):
        ids, cut = [], 0
        for i, ex in enumerate(task.train):
            enc = encode_train_example(
                tokenizer, ex, config.data.max_length, task=task.name, index=i
            )
            cut += int(enc.truncated)
            ids.append(store.add(enc.input_ids, enc.labels, t))
        truncated[task.name] = cut
        pools.append(ids)
    return pools, truncated
