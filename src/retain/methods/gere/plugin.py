"""`GeneralReplayPlugin`: GeRe's general-sample replay with the TM loss and its baselines.

| method    | auxiliary loss on the replay rows (besides their own LM loss)        |
|-----------|-----------------------------------------------------------------------|
| `gere`    | `general.loss` (default `tm`)                                         |
| `gere_lm` | none: label fitting only (the paper's "BaselineR")                    |
| `gere_kl` | KL(p_base ‖ p_current), T = 2                                        |
| `gere_l1` | mean |h − h⁰| of the final hidden states                             |
| `gere_l2` | mean (h − h⁰)² of the final hidden states                             |
| `gere_paper` | `tm` weighted as the reference code does (docs/methods/gere_paper.md)  |

Hook use: `on_stream_start` builds the replay set, adds its rows to the sample store
(`task_of` −1) and runs the untouched model over them once (thresholds and the compact state
cache; under full fine-tuning also the teacher cache); `task_data` adds the rows to every
task's pool (`concat`); `compose_step` puts exactly k of them into every global batch
(`per_batch`, drawn by `sampler.py`); `extra_loss` returns `w · L_aux` of the micro-batch's
replay rows, which the loop weights by their share of the step's rows
(`loss_weighting = "general_rows"`).
Decision: general replay runs from the first task on (the set needs no finished task).
Decision: the targets stay those of the base model for the whole stream (docs/methods/gere.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retain.config_base import ConfigError
from retain.config_sections import CoreConfig
from retain.data.encoding import Batch, BatchPlan
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.gere.base_pass import run_base_pass
from retain.methods.gere.config import paper_settings
from retain.methods.gere.losses import (
    feature_distance,
    kl_loss,
    kl_loss_topk,
    paper_numerator,
    tm_loss,
    token_mean,
    weighted,
)
from retain.methods.gere.replay_set import ReplaySet, build_replay_set
from retain.methods.gere.sampler import GeneralRowSampler
from retain.methods.gere.targets import StateCache
from retain.methods.gere.teacher import TeacherCache, adapter_disabled
from retain.methods.names import GENERAL_REPLAY_METHODS
from retain.methods.services import eval_mode
from retain.models.hidden import unwrap_parallel
from retain.storage.rundir import WORK_DIR

TEACHER_FILE, STATES_FILE = "gere_teacher", "gere_states"  # under the run's WORK_DIR
"""Files in the run directory: the teacher cache (full fine-tuning) and the memory-mapped
state cache (`general.cache: mmap`)."""


class GeneralReplayPlugin(Plugin):
    """General-sample replay (docs/methods/gere.md); `method` is `gere` or `gere_<loss>`."""

    loss_weighting = "general_rows"

    def __init__(self, config: CoreConfig, method: str) -> None:
        super().__init__(config)
        if method not in GENERAL_REPLAY_METHODS:
            raise ValueError(f"{method!r} is no general replay method: {GENERAL_REPLAY_METHODS}")
        self.paper = method == "gere_paper"
        cfg = paper_settings(config.general) if self.paper else config.general
        self.name = method
        self.loss = cfg.loss if method in ("gere", "gere_paper") else method.removeprefix("gere_")
        if self.paper:  # the reference's weighting: per micro-batch, not per row
            self.loss_weighting = "micro_batch"
            self.ce_per_micro_batch = True
        self.weight: float | str = 0.0 if self.loss == "lm" else cfg.weight
        self.needs_hidden_states = self.loss in ("tm", "l1", "l2")
        self.needs_logits = self.loss == "kl"
        self.teacher_cached = config.model.finetune != "lora" and self.loss in ("kl", "l1", "l2")
        self.k = cfg.per_batch_rows if cfg.mixing == "per_batch" else 0
        tc = config.train
        if self.k and self.k >= tc.batch_size * tc.grad_accum:
            raise ConfigError(
                f"general.per_batch_rows={self.k} must be below the global batch "
                f"(train.batch_size × train.grad_accum × processes = at least "
                f"{tc.batch_size * tc.grad_accum}), or no task rows would be left"
            )
        self.replay: ReplaySet | None = None
        self.store_first = -1
        self.in_store = False  # not saved: a resumed process adds the rows to its new store
        self.moments: dict[str, torch.Tensor] = {}
        self.cache: StateCache | None = None
        self.teacher: TeacherCache | None = None
        self.teacher_sha = ""
        self.sampler = GeneralRowSampler(config.seed)
        self.first_logged = False
        """Set after the first step with replay rows (on every process alike)."""
        self._logged_at = 0  # the step this process last logged (several micro-batches a step)
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    # ---------------------------------------------------------------- files of this process
    def _path(self, stem: str, suffix: str) -> Path:
        """A file of this process under the run directory's work folder (each process keeps
        its own copy; a fresh start rebuilds it, so it never marks the folder as results)."""
        folder = self.config.run_dir / WORK_DIR
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{stem}.rank{os.environ.get('RANK', '0')}{suffix}"

    # ---------------------------------------------------------------- the set and its targets
    def on_stream_start(self, ctx: Context) -> None:
        model = unwrap_parallel(ctx.model)
        self.replay = build_replay_set(self.config, ctx.tokenizer, model, ctx.device, ctx.autocast)
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        longest = max(len(r) for r in self.replay.rows)
        if isinstance(positions, int) and longest > positions:
            raise ConfigError(
                f"general.max_tokens={self.config.general.max_tokens}: replay rows of {longest} "
                f"tokens do not fit the model's {positions} positions; lower general.max_tokens"
            )
        self._add_rows(ctx)
        replay = self.replay
        ctx.count("extra_forward_passes", replay.forward_passes)
        ctx.log_event(
            {
                "type": "general_replay_set",
                "source": replay.source,
                "rows": len(replay.rows),
                "tokens": replay.tokens,
                "dropped_overlap": replay.dropped_overlap,
                "dropped_short": replay.dropped_short,
            }
        )
        if self.loss == "tm" or self.teacher_cached:
            self._base_pass(ctx)

    def _add_rows(self, ctx: Context) -> None:
        """The replay rows enter the store after the task rows, at the same ids every time."""
        if self.in_store:
            return
        assert self.replay is not None, "the replay set is built in on_stream_start"
        if self.store_first >= 0 and len(ctx.store) != self.store_first:
            raise RuntimeError(
                f"the general replay rows were saved at store id {self.store_first}, but the "
                f"store now holds {len(ctx.store)} rows; the data changed since the checkpoint"
            )
        self.store_first = len(ctx.store)
        for row in self.replay.rows:
            ctx.store.add(row, row, -1)
        self.in_store = True

    def _base_pass(self, ctx: Context) -> None:
        """Targets (and under full fine-tuning the teacher cache) from the untouched model."""
        assert self.replay is not None
        model = unwrap_parallel(ctx.model)
        cfg = self.config.general

        def forward(ids: list[int]) -> tuple[Batch, torch.Tensor | None, torch.Tensor]:
            batch = ctx.rows(ids)
            with torch.no_grad(), eval_mode(model):
                out = ctx.forward(batch, model, logits=True, hidden=self.needs_hidden_states)
            assert out.logits is not None
            return batch, out.final_hidden, out.logits

        out = run_base_pass(
            forward,
            self.store_first,
            self.replay.offsets(),
            cfg.target_batch_size or self.config.train.batch_size,
            states=self.loss == "tm",
            teacher_loss=self.loss if self.teacher_cached else None,
            topk=cfg.teacher_topk,
        )
        ctx.count("extra_forward_passes", out.forward_passes)
        tokens = self.replay.tokens
        if out.cache is not None:
            self.moments, self._on_device = out.moments, {}
            self._set_cache(out.cache)
            ctx.log_event(
                {
                    "type": "general_replay_targets",
                    "tokens": tokens,
                    "dim": out.cache.dim,
                    "cache_bytes": out.cache.nbytes,
                    "fp32_bytes": tokens * out.cache.dim * 4,
                    "cache": cfg.cache,
                }
            )
        if out.teacher is not None:
            self.teacher = out.teacher
            path = self._path(TEACHER_FILE, ".safetensors")
            self.teacher_sha = self.teacher.save(path)
            ctx.log_event(
                {"type": "general_replay_teacher_cache", "loss": self.loss,
                 "bytes": self.teacher.nbytes, "file": str(path)}
            )

    def _thresholds_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on_device:
            m = self.moments
            self._on_device[key] = (m["tau_pos"].to(device), m["tau_neg"].to(device))
        return self._on_device[key]

    def _set_cache(self, cache: StateCache) -> None:
        if self.config.general.cache == "mmap":
            cache = cache.to_file(self._path(STATES_FILE, ".u8"))
        self.cache = cache

    # ---------------------------------------------------------------- batches
    def _general_ids(self) -> list[int]:
        assert self.replay is not None
        return list(range(self.store_first, self.store_first + len(self.replay.rows)))

    def task_data(self, ctx: Context, task_index: int, sample_ids: list[int]) -> list[int]:
        self._add_rows(ctx)
        if self.k:
            return sample_ids
        return list(sample_ids) + self._general_ids()  # concat: the pool grows, epochs count it

    def reserved_rows(self, ctx: Context) -> int:
        return self.k

    def compose_step(self, ctx: Context, plan: BatchPlan, rows: int) -> BatchPlan:
        """per_batch: k replay rows inserted among the step's B − k task rows (`sampler.py`)."""
        assert self.replay is not None
        return self.sampler.compose(plan, rows, len(self.replay.rows), self.store_first)

    # ---------------------------------------------------------------- the loss
    def extra_loss(
        self, ctx: Context, batch: Batch, outputs: StepOutputs
    ) -> dict[str, torch.Tensor]:
        if self.loss == "lm":
            return {}
        name = f"general_{self.loss}"
        general = batch.task_ids < 0
        if not bool(general.any()):  # the name stays, so every rank logs the same losses
            return {name: torch.zeros((), device=batch.input_ids.device)}
        rows = (batch.sample_ids[general] - self.store_first).tolist()
        mask = batch.attention_mask[general].bool()
        counts = outputs.answer_tokens[general]
        ce = (outputs.per_sample_loss[general] * counts).sum() / counts.sum().clamp(min=1)
        aux, violations = self._aux(ctx, batch, outputs, general, rows, mask)
        numerator = ce  # dy's; in paper mode the micro-batch's CE, its task rows' included
        if self.paper:
            task_ce = token_mean(outputs.per_sample_loss, outputs.answer_tokens, ~general)
            numerator = paper_numerator(ce, task_ce)
        value, w = weighted(aux, numerator, self.weight)
        self._log(ctx, aux, w, ce, violations)
        return {name: value}

    def _aux(
        self,
        ctx: Context,
        batch: Batch,
        outputs: StepOutputs,
        general: torch.Tensor,
        rows: list[int],
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = batch.input_ids.device
        if self.loss == "tm":
            assert outputs.final_hidden is not None and self.cache is not None
            states = self.cache.states(rows, device)
            h = outputs.final_hidden[general][mask]
            return tm_loss(h, states, *self._thresholds_on(device))
        if self.teacher is not None:  # full fine-tuning: the cached base outputs
            cached = self.teacher.rows(rows, device)
            if self.loss == "kl":
                assert outputs.logits is not None
                student = outputs.logits[general][mask]
                return kl_loss_topk(student, cached["log_probs"], cached["ids"]), None
            assert outputs.final_hidden is not None
            h = outputs.final_hidden[general][mask]
            return feature_distance(h, cached["hidden"], 1 if self.loss == "l1" else 2), None
        return self._adapter_teacher_loss(ctx, batch, outputs, general, mask), None

    def _adapter_teacher_loss(
        self,
        ctx: Context,
        batch: Batch,
        outputs: StepOutputs,
        general: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """The base model is the trained model with its adapter disabled: one no-grad forward
        on the replay rows only (cut to their longest row), nothing stored; through the plugin
        context's forward, so under the training step's autocast."""
        model = unwrap_parallel(ctx.model)
        width = int(mask.sum(1).max())
        sub = Batch(*(t[general][:, :width] if t.dim() == 2 else t[general]
                      for t in batch.__dict__.values()))
        with torch.no_grad(), eval_mode(model), adapter_disabled(model):
            base = ctx.forward(sub, model, logits=True, hidden=self.needs_hidden_states)
        hidden0, logits0 = base.final_hidden, base.logits
        assert logits0 is not None
        ctx.count("extra_forward_passes", 1)
        inner = mask[:, :width]
        if self.loss == "kl":
            assert outputs.logits is not None
            return kl_loss(outputs.logits[general][mask], logits0[inner])
        assert outputs.final_hidden is not None and hidden0 is not None
        h = outputs.final_hidden[general][mask]
        return feature_distance(h, hidden0[inner], 1 if self.loss == "l1" else 2)

    def _log(
        self,
        ctx: Context,
        aux: torch.Tensor,
        w: float,
        ce: torch.Tensor,
        violations: torch.Tensor | None,
    ) -> None:
        """The auxiliary loss unweighted: at the first step with replay rows (TM must be 0 there)
        and every `train.log_every` steps, at the step's first micro-batch with replay rows.
        Under several processes only the main one writes the log: it shows its own rows."""
        step = ctx.global_step + 1
        first = not self.first_logged
        if step == self._logged_at or (not first and step % self.config.train.log_every):
            return
        record: dict[str, Any] = {
            "type": "general_replay_first_step" if first else "general_replay",
            "task": ctx.task_index,
            "step": step,
            "loss": self.loss,
            "value": float(aux.detach()),
            "w": w,
            "ce_general": float(ce.detach()),
        }
        if violations is not None:
            record["violations"] = int(violations)
        ctx.log_event(record)
        self._logged_at = step

    def after_step(self, ctx: Context, batch: Batch, outputs: StepOutputs) -> None:
        """Sees the global batch, so every process agrees on when replay rows were first seen."""
        if not self.first_logged and bool((batch.task_ids < 0).any()):
            self.first_logged = True

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "method": self.name,
            "loss": self.loss,
            "store_first": self.store_first,
            "sampler": self.sampler.state_dict(),
            "first_logged": self.first_logged,
        }
        if self.replay is not None:
            state["set"] = self.replay.state_dict()
        if self.moments:
            state["thresholds"] = {k: v.numpy() for k, v in self.moments.items()}
        if self.cache is not None:
            state["cache"] = self.cache.state_dict()
        if self.teacher is not None:
            state["teacher"] = {"sha256": self.teacher_sha, "bytes": self.teacher.nbytes}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.name or state.get("loss") != self.loss:
            raise ValueError(
                f"checkpoint of {state.get('method')!r} ({state.get('loss')}) cannot resume "
                f"{self.name!r} ({self.loss})"
            )
        self.store_first = int(state["store_first"])
        self.in_store = False
        self.sampler.load_state_dict(state["sampler"])
        self.first_logged = bool(state["first_logged"])
        self.replay = ReplaySet.from_state(state["set"]) if "set" in state else None
        if "thresholds" in state:
            t = state["thresholds"]
            self.moments = {k: torch.from_numpy(np.array(v)) for k, v in t.items()}
            self._on_device = {}
        if "cache" in state:
            self._set_cache(StateCache.from_state(state["cache"]))
        if "teacher" in state:
            self.teacher_sha = str(state["teacher"]["sha256"])
            path = self._path(TEACHER_FILE, ".safetensors")
            self.teacher = TeacherCache.load(path, self.teacher_sha)


__all__ = ["GeneralReplayPlugin"]
