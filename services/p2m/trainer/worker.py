"""The training function each Ray Train worker runs (``TorchTrainer(train_loop_per_worker=...)``).

Full fine-tuning or LoRA with fused AdamW, a linear warmup then linear decay, gradient clipping,
bf16 autocast where the hardware has it, batches grouped by length, and the instruction's tokens
computed once per batch (``shared_prefix``). Validation (loss on the validation rows, Exact Match
and ChrF++ on a sample) every ``eval_steps`` and at each epoch's end; the best weights are kept
(``keep_best_by``: the lowest loss, or the sample's highest ChrF++; ``validation.BestSoFar``; on
disk, ``best_weights``), and
training stops early after ``early_stopping_patience`` validations without a new best. A checkpoint
after every epoch (model, the best weights when they differ, optimizer, scheduler, position and the
validations so far) is reported through ``ray.train.report`` (written straight into the run's folder
when Ray's storage is a local path, so it is written once, not written then copied), and a run
resumes from ``ray.train.get_checkpoint()``. Rank 0 pushes progress to the TrainControl actor and
reads its stop flag, which it shares with the other ranks so that all stop at the same step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2m.common.types import Example
from p2m.trainer.batching import epoch_batches, steps_per_epoch
from p2m.trainer.best_weights import BestWeights
from p2m.trainer.checkpoints import STATE_FILE, folder_name, step_of, write_manifest
from p2m.trainer.encode import collate, encode_examples
from p2m.trainer.events import (
    WorkerCheckpointed,
    WorkerEvaluated,
    WorkerEvent,
    WorkerStarted,
    WorkerStepped,
    WorkerStopped,
)
from p2m.trainer.freed_memory import memory_is_tight, return_freed_memory
from p2m.trainer.options import TrainOptions, planned_epochs, student_spec
from p2m.trainer.passes import step_backward
from p2m.trainer.precision import autocast, resolve_precision
from p2m.trainer.validation import BestSoFar, Evaluation, sample_scores, validation_loss
from p2m.trainer.wrapped import unwrapped

log = logging.getLogger(__name__)
MODEL_DIR = "model"
BEST_DIR = "best_model"  # the best weights, when they are not the checkpoint's own
BEST_WEIGHTS_DIR = "p2m-best-weights"  # rank 0's best weights between checkpoints
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
_LOSS_WINDOW = 10


def load_base_model(
    base_path: str,
    architecture: str,
    options: TrainOptions,
    resume_dir: Path | None,
    weights: str = MODEL_DIR,
) -> Any:
    """The model to train, in float32: the base, a checkpoint's weights, or LoRA on the base.

    ``weights`` names the checkpoint's folder to load (``MODEL_DIR`` or ``BEST_DIR``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    loader = AutoModelForSeq2SeqLM if architecture == "encoder-decoder" else AutoModelForCausalLM
    if not options.lora:
        source = resume_dir / weights if resume_dir else Path(base_path)
        return loader.from_pretrained(source, dtype=torch.float32)
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    base = loader.from_pretrained(base_path, dtype=torch.float32)
    if resume_dir:
        return PeftModel.from_pretrained(base, resume_dir / weights, is_trainable=True)
    task = TaskType.SEQ_2_SEQ_LM if architecture == "encoder-decoder" else TaskType.CAUSAL_LM
    config = LoraConfig(task_type=task, r=options.lora_r, lora_alpha=options.lora_alpha)
    return get_peft_model(base, config)


def _examples(pairs: list[list[str]]) -> list[Example]:
    return [Example(i, o) for i, o in pairs]


class _Position:
    """Where training stands; saved in each checkpoint."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.epoch = int(data.get("epoch", 0))  # epochs fully done
        self.step = int(data.get("step", 0))
        self.resumed_from_step = self.step
        self.last_loss = data.get("loss")
        self.last_eval_loss = data.get("eval_loss")
        self.best = BestSoFar.from_json(data.get("best"))
        self.stopped_early = bool(data.get("stopped_early", False))
        self.evaluated_at = self.best.history[-1].step if self.best.history else -1

    def to_json(self) -> dict[str, Any]:
        """The state saved in a checkpoint."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "loss": self.last_loss,
            "eval_loss": self.last_eval_loss,
            "best": self.best.to_json(),
            "stopped_early": self.stopped_early,
        }


def train_worker(config: dict[str, Any]) -> None:
    """Train on this worker's shard; see the module docstring."""
    training = _Training(config)
    training.push(
        WorkerStarted(
            total_steps=training.total_steps,
            resumed_from_step=training.position.step,
            steps_per_epoch=training.steps_per_epoch,
            world=training.world,
            precision=training.precision,
            memory_tight=training.memory_tight,
        )
    )
    training.run()


class _Training:
    """One worker's training: set up (restored from a checkpoint when there is one), run."""

    def __init__(self, config: dict[str, Any]) -> None:
        """Read ``config``; load the tokenizer, data, model, optimizer and where it stood."""
        import ray.train
        import ray.train.torch
        import torch

        self.options = options = TrainOptions(**config["options"])
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.workers_here = context.get_local_world_size()
        self.control = config.get("control")
        torch.set_num_threads(max(1, int(config.get("threads", 1))))
        torch.manual_seed(options.seed)
        self.spec = student_spec(options, config["architecture"], config["instruction"])
        self._encode_rows(config)
        self.model = ray.train.torch.prepare_model(self._restore(config))
        self.device = ray.train.torch.get_device()
        self.precision = resolve_precision(options.precision, self.device.type)
        self._prepare_optimization()
        self.losses: deque[float] = deque(maxlen=_LOSS_WINDOW)
        self.times: deque[tuple[float, int]] = deque(maxlen=_LOSS_WINDOW)
        self.samples_seen, self.busy_s = 0, 0.0

    def _encode_rows(self, config: dict[str, Any]) -> None:
        from transformers import AutoTokenizer

        from p2m.common.student import ensure_pad_token

        options = self.options
        self.tokenizer = AutoTokenizer.from_pretrained(config["base_path"])
        ensure_pad_token(self.tokenizer)
        spec = self.spec

        def encode(pairs: list[list[str]]) -> list[dict[str, list[int]]]:
            return encode_examples(
                self.tokenizer,
                spec.architecture,
                spec.instruction,
                _examples(pairs),
                spec.max_input_tokens,
                spec.max_output_tokens,
                spec.max_instruction_tokens,
            )

        self.train_rows = encode(config["train"])
        self.eval_rows = encode(config["validation"][: options.max_eval_examples])
        self.eval_sample = _examples(config["validation"][: options.eval_metric_examples])

    def pad(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        """A padded batch of encoded rows."""
        return collate(rows, self.tokenizer.pad_token_id)

    def _restore(self, config: dict[str, Any]) -> Any:
        """The model, and where training stood: from the newest complete checkpoint, if any."""
        import ray.train
        import torch

        checkpoint = ray.train.get_checkpoint()
        self.position = _Position()
        self.optimizer_state = self.scheduler_state = None
        self.best_weights = (
            _best_weights_folder() if self.rank == 0 and self.options.keep_best else None
        )
        with contextlib.ExitStack() as stack:
            resume_dir = (
                Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
            )
            found = config.get("resume_from")  # complete on storage, maybe unknown to Ray yet
            if found and (resume_dir is None or step_of(Path(found)) > step_of(resume_dir)):
                resume_dir = Path(found)
            if resume_dir is not None:
                self.position = _Position(json.loads((resume_dir / STATE_FILE).read_text()))
                self.optimizer_state = torch.load(resume_dir / OPTIMIZER_FILE, weights_only=True)
                self.scheduler_state = torch.load(resume_dir / SCHEDULER_FILE, weights_only=True)
            model = load_base_model(
                config["base_path"], self.spec.architecture, self.options, resume_dir
            )
            best, found = self.best_weights, self.position.best
            if resume_dir is not None and best is not None and found.eval_loss is not None:
                apart = (resume_dir / BEST_DIR).is_dir()  # else the checkpoint's own weights
                best.adopt(resume_dir / (BEST_DIR if apart else MODEL_DIR), found.step)
            return model

    def _prepare_optimization(self) -> None:
        """Step counts, AdamW and its linear decay (restored when resuming).

        The epochs are ``planned_epochs``: more than asked where that reaches ``min_steps`` and
        validation keeps the best weights.
        """
        import torch
        from transformers import get_linear_schedule_with_warmup

        options = self.options
        self.lengths = [len(row["input_ids"]) for row in self.train_rows]
        self.steps_per_epoch = steps_per_epoch(len(self.train_rows), options.batch_size, self.world)
        self.epochs = planned_epochs(options, self.steps_per_epoch, bool(self.eval_rows))
        self.total_steps = self.steps_per_epoch * self.epochs
        if options.max_steps:
            self.total_steps = min(self.total_steps, options.max_steps)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.memory_tight = memory_is_tight(
            sum(p.numel() for p in self.trainable), self.workers_here
        )
        if self.memory_tight:
            return_freed_memory()
            log.warning(
                "memory is tight for this training: freed memory goes back to the system at "
                "once (a lower peak, slower steps: freed_memory)"
            )
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=options.learning_rate, fused=_fused_adamw(self.device.type)
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer,
            round(options.warmup_ratio * self.total_steps),
            max(self.total_steps, 1),
        )
        if self.optimizer_state is not None:
            self.optimizer.load_state_dict(self.optimizer_state)
            self.scheduler.load_state_dict(self.scheduler_state)

    def push(self, event: WorkerEvent) -> None:
        """Tell the driver (rank 0 only)."""
        if self.rank == 0 and self.control is not None:
            self.control.push.remote(event)

    def stop_requested(self) -> bool:
        """Whether a stop was asked for, agreed by every rank (so all stop at one step)."""
        import ray

        asked = False
        if self.rank == 0 and self.control is not None:
            asked = bool(ray.get(self.control.should_stop.remote()))
        return self._agree(asked)

    def _agree(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        import torch

        if self.world == 1:
            return flag
        shared = torch.tensor([float(flag)])
        torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
        return bool(shared.item() > 0)

    def run(self) -> None:
        """Epochs until done, stopped or stopped early, each ending with a checkpoint.

        A resumed run with nothing left reports its last checkpoint again, to hand it back.
        """
        try:
            self._run()
        finally:
            if self.best_weights is not None:
                self.best_weights.discard()

    def _run(self) -> None:
        position, reported = self.position, False
        while (
            position.epoch < self.epochs
            and position.step < self.total_steps
            and not position.stopped_early
        ):
            if not self._epoch():
                self.push(WorkerStopped(position.step))
                return
            self._checkpoint()
            reported = True
        if not reported:
            self._report()

    def _epoch(self) -> bool:
        """The rest of the current epoch; False when a stop was asked for."""
        import torch

        position, options = self.position, self.options
        epoch = position.epoch
        torch.manual_seed(options.seed + epoch)
        batches = epoch_batches(
            self.lengths,
            options.batch_size,
            world=self.world,
            rank=self.rank,
            seed=options.seed,
            epoch=epoch,
            group_by_length=options.group_by_length,
        )
        self.model.train()
        steps_done_this_epoch = position.step - epoch * self.steps_per_epoch
        for indices in batches[steps_done_this_epoch:]:  # resumed mid-epoch: a max_steps stop
            self._step([self.train_rows[i] for i in indices])
            if self.stop_requested():
                return False
            if position.step >= self.total_steps:
                break
            if options.eval_steps and position.step % options.eval_steps == 0:
                self._evaluate()
                if position.stopped_early:
                    break
        if position.step - epoch * self.steps_per_epoch >= self.steps_per_epoch:
            position.epoch += 1
        return True

    def _step(self, rows: list[dict[str, list[int]]]) -> None:
        """One optimizer step, and its progress event."""
        import torch

        position = self.position
        started = time.perf_counter()
        step = step_backward(
            self.model,
            rows,
            self.pad,
            self.device,
            max_tokens_per_pass=self.options.max_tokens_per_pass,
            precision=self.precision,
            encoder_decoder=self.spec.architecture != "decoder-only",
        )
        torch.nn.utils.clip_grad_norm_(self.trainable, self.options.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        position.step += 1
        self.losses.append(step.loss)
        elapsed, samples = time.perf_counter() - started, len(rows) * self.world
        self.times.append((elapsed, samples))
        self.samples_seen, self.busy_s = self.samples_seen + samples, self.busy_s + elapsed
        seconds = sum(t for t, _ in self.times)
        position.last_loss = sum(self.losses) / len(self.losses)
        self.push(
            WorkerStepped(
                step=position.step,
                total_steps=self.total_steps,
                epoch=position.step / self.steps_per_epoch,
                loss=position.last_loss,
                learning_rate=self.scheduler.get_last_lr()[0],
                samples_per_second=sum(n for _, n in self.times) / seconds if seconds else 0.0,
                eta_s=(self.total_steps - position.step) * seconds / len(self.times),
                samples=self.samples_seen,
                busy_s=self.busy_s,
            )
        )

    def _evaluate(self) -> None:
        """Validate (rank 0), keep the best weights so far, agree on stopping early; once a step."""
        position, options = self.position, self.options
        if position.evaluated_at == position.step:
            return
        position.evaluated_at = position.step
        if self.rank == 0:
            with autocast(self.precision, self.device.type):
                position.last_eval_loss = validation_loss(
                    self.model, self.eval_rows, self.pad, options.batch_size, self.device
                )
                exact, chrf = sample_scores(
                    self.model,
                    self.tokenizer,
                    self.spec,
                    self.eval_sample,
                    options.batch_size,
                    self.device,
                )
            evaluation = Evaluation(
                step=position.step,
                epoch=position.step / self.steps_per_epoch,
                loss=position.last_loss,
                eval_loss=position.last_eval_loss,
                exact_match=exact,
                chrf=chrf,
                examples_seen=self.samples_seen,
            )
            improved = position.best.record(
                evaluation, options.keep_best_tolerance, options.keep_best_by
            )
            if improved and self.best_weights is not None:
                self.best_weights.save(self.model, position.step)
            if evaluation.eval_loss is not None:
                self.push(WorkerEvaluated(evaluation, best_step=position.best.step))
        exhausted = position.best.exhausted(options.early_stopping_patience)
        position.stopped_early = self._agree(exhausted)

    def _report(self) -> None:
        best = self.best_weights if self.position.best.step != self.position.step else None
        _report(
            self.model,
            self.optimizer,
            self.scheduler,
            self.position,
            self.steps_per_epoch,
            self.rank,
            best if best is not None and best.folder is not None else None,
        )

    def _checkpoint(self) -> None:
        """Validation, then a checkpoint reported to Ray Train, then its event."""
        position = self.position
        self._evaluate()
        self._report()
        self.push(
            WorkerCheckpointed(
                step=position.step,
                epoch=position.step / self.steps_per_epoch,
                loss=position.last_loss,
                eval_loss=position.last_eval_loss,
            )
        )


def _fused_adamw(device_type: str) -> bool | None:
    """Fused AdamW (one kernel for all parameters: 6x faster steps on CPU) where torch has it."""
    return True if device_type in ("cpu", "cuda") else None


def _best_weights_folder() -> BestWeights:
    """Where rank 0 keeps the best weights: beside the run's checkpoints, else a temporary folder.

    Beside them where Ray's storage is this machine's filesystem: a checkpoint then links them.
    """
    import ray.train

    storage = ray.train.get_context().get_storage()
    if _is_local(storage.storage_filesystem):
        return BestWeights(Path(storage.build_checkpoint_path_from_name(BEST_WEIGHTS_DIR)))
    return BestWeights(Path(tempfile.mkdtemp(prefix="p2m-best-")))


def _report(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    position: _Position,
    steps_per_epoch: int,
    rank: int,
    best: BestWeights | None,
) -> None:
    """Every rank reports; rank 0 attaches the checkpoint (with the best weights when given)."""
    import ray.train
    import torch

    metrics = {
        "step": position.step,
        "epoch": position.step / max(steps_per_epoch, 1),
        "loss": position.last_loss if position.last_loss is not None else math.nan,
        "eval_loss": position.last_eval_loss if position.last_eval_loss is not None else math.nan,
        "best_eval_loss": position.best.eval_loss
        if position.best.eval_loss is not None
        else math.nan,
    }
    if rank != 0:
        ray.train.report(metrics)
        return
    name = folder_name(position.step)
    storage = ray.train.get_context().get_storage()
    in_place = _is_local(storage.storage_filesystem)
    if in_place:  # the checkpoint's own folder in the run: Ray need not copy it there
        folder = Path(storage.build_checkpoint_path_from_name(name))
        shutil.rmtree(folder, ignore_errors=True)  # a copy cut short by a crash
        folder.mkdir(parents=True)
    else:  # remote storage: written here, uploaded by Ray
        folder = Path(tempfile.mkdtemp(prefix="p2m-ckpt-"))
    try:
        unwrapped(model).save_pretrained(folder / MODEL_DIR)
        if best is not None:
            best.link_into(folder / BEST_DIR)
        torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
        (folder / STATE_FILE).write_text(json.dumps(position.to_json()))
        write_manifest(folder)
        upload = ray.train.CheckpointUploadMode
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint(str(folder), storage.storage_filesystem)
            if in_place
            else ray.train.Checkpoint.from_directory(str(folder)),
            checkpoint_dir_name=name,
            checkpoint_upload_mode=upload.NO_UPLOAD if in_place else upload.SYNC,
        )
    finally:
        if not in_place:
            shutil.rmtree(folder, ignore_errors=True)


def _is_local(filesystem: Any) -> bool:
    """Whether Ray Train's storage is this machine's filesystem (a local or mounted path)."""
    import pyarrow.fs

    return isinstance(filesystem, pyarrow.fs.LocalFileSystem)
