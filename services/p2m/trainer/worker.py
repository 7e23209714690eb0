"""The training function each Ray Train worker runs (``TorchTrainer(train_loop_per_worker=...)``).

Full fine-tuning or LoRA with AdamW and a linear decay, gradient clipping, a checkpoint after
every epoch (model, optimizer, scheduler, position) reported through ``ray.train.report``, and
resumption from ``ray.train.get_checkpoint()``. Rank 0 pushes progress to the TrainControl actor
and reads its stop flag, which it shares with the other ranks so that all stop at the same step.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

from p2m.common.types import Example
from p2m.trainer.checkpoints import STATE_FILE, folder_name, step_of, write_manifest
from p2m.trainer.encode import collate, encode_examples
from p2m.trainer.options import TrainOptions

MODEL_DIR = "model"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
_LOSS_WINDOW = 10


def load_base_model(base_path: str, architecture: str, options: TrainOptions,
                    resume_dir: Path | None) -> Any:  # fmt: skip
    """The model to train, in float32: the base, a checkpoint's weights, or LoRA on the base."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    loader = AutoModelForSeq2SeqLM if architecture == "encoder-decoder" else AutoModelForCausalLM
    if not options.lora:
        source = resume_dir / MODEL_DIR if resume_dir else Path(base_path)
        return loader.from_pretrained(source, dtype=torch.float32)
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    base = loader.from_pretrained(base_path, dtype=torch.float32)
    if resume_dir:
        return PeftModel.from_pretrained(base, resume_dir / MODEL_DIR, is_trainable=True)
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


def train_worker(config: dict[str, Any]) -> None:
    """Train on this worker's shard; see the module docstring."""
    import ray.train
    import ray.train.torch
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    from p2m.common.student import ensure_pad_token

    options = TrainOptions(**config["options"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    control = config.get("control")
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    torch.manual_seed(options.seed)

    tokenizer = AutoTokenizer.from_pretrained(config["base_path"])
    ensure_pad_token(tokenizer)
    architecture = config["architecture"]
    instruction = "" if options.omit_instruction else config["instruction"]

    def encode(pairs: list[list[str]]) -> list[dict[str, list[int]]]:
        return encode_examples(
            tokenizer, architecture, instruction, _examples(pairs),
            options.max_input_tokens, options.max_output_tokens,
        )  # fmt: skip

    train_rows = encode(config["train"])
    eval_rows = encode(config["validation"][: options.max_eval_examples])

    def pad(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        return collate(rows, tokenizer.pad_token_id)

    checkpoint = ray.train.get_checkpoint()
    position = _Position()
    optimizer_state = scheduler_state = None
    with contextlib.ExitStack() as stack:
        resume_dir = Path(stack.enter_context(checkpoint.as_directory())) if checkpoint else None
        found = config.get("resume_from")  # complete on storage, maybe unknown to Ray yet
        if found and (resume_dir is None or step_of(Path(found)) > step_of(resume_dir)):
            resume_dir = Path(found)
        if resume_dir is not None:
            position = _Position(json.loads((resume_dir / STATE_FILE).read_text()))
            optimizer_state = torch.load(resume_dir / OPTIMIZER_FILE, weights_only=True)
            scheduler_state = torch.load(resume_dir / SCHEDULER_FILE, weights_only=True)
        model = load_base_model(config["base_path"], architecture, options, resume_dir)
    model = ray.train.torch.prepare_model(model)
    loader = ray.train.torch.prepare_data_loader(
        DataLoader(
            train_rows,  # type: ignore[arg-type]
            batch_size=options.batch_size,
            shuffle=True,
            collate_fn=pad,
        )
    )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * options.epochs
    if options.max_steps:
        total_steps = min(total_steps, options.max_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, 0, max(total_steps, 1))
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        scheduler.load_state_dict(scheduler_state)

    def push(event: dict[str, Any]) -> None:
        if rank == 0 and control is not None:
            control.push.remote(event)

    def stop_requested() -> bool:
        flag = float(rank == 0 and control is not None and ray.get(control.should_stop.remote()))
        if world > 1:
            shared = torch.tensor([flag])
            torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MAX)
            flag = float(shared.item())
        return flag > 0

    push({"type": "start", "total_steps": total_steps, "resumed_from_step": position.step,
          "steps_per_epoch": steps_per_epoch, "world": world})  # fmt: skip
    losses: deque[float] = deque(maxlen=_LOSS_WINDOW)
    times: deque[tuple[float, int]] = deque(maxlen=_LOSS_WINDOW)
    reported = False
    samples_seen, busy_s = 0, 0.0
    device = ray.train.torch.get_device()
    while position.epoch < options.epochs and position.step < total_steps:
        epoch = position.epoch
        torch.manual_seed(options.seed + epoch)
        if world > 1 and hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        model.train()
        steps_done_this_epoch = position.step - epoch * steps_per_epoch
        for index, batch in enumerate(loader):
            if index < steps_done_this_epoch:  # resumed mid-epoch (a max_steps stop)
                continue
            started = time.perf_counter()
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, options.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position.step += 1
            losses.append(float(loss.item()))
            elapsed, samples = time.perf_counter() - started, len(batch["input_ids"]) * world
            times.append((elapsed, samples))
            samples_seen, busy_s = samples_seen + samples, busy_s + elapsed
            seconds = sum(t for t, _ in times)
            samples_per_s = sum(n for _, n in times) / seconds if seconds else 0.0
            eta = (total_steps - position.step) * seconds / len(times)
            position.last_loss = sum(losses) / len(losses)
            push({"type": "step", "step": position.step, "total_steps": total_steps,
                  "epoch": position.step / steps_per_epoch, "loss": position.last_loss,
                  "learning_rate": scheduler.get_last_lr()[0],
                  "samples_per_second": samples_per_s, "eta_s": eta,
                  "samples": samples_seen, "busy_s": busy_s})  # fmt: skip
            if stop_requested():
                push({"type": "stopped", "step": position.step})
                return
            if position.step >= total_steps:
                break
        if position.step - epoch * steps_per_epoch >= steps_per_epoch:
            position.epoch += 1
        position.last_eval_loss = _eval_loss(model, eval_rows, pad, options, device, rank)
        _report(model, optimizer, scheduler, position, steps_per_epoch, rank)
        reported = True
        push({"type": "checkpoint", "step": position.step, "epoch": position.step /
              steps_per_epoch, "loss": position.last_loss,
              "eval_loss": position.last_eval_loss})  # fmt: skip
    if not reported:  # a resumed run with nothing left: hand the last checkpoint back
        _report(model, optimizer, scheduler, position, steps_per_epoch, rank)


def _eval_loss(model: Any, rows: list[dict[str, list[int]]], pad: Any, options: TrainOptions,
               device: Any, rank: int) -> float | None:  # fmt: skip
    """Mean validation loss (rank 0 only; None without validation rows or on other ranks)."""
    import torch

    if rank != 0 or not rows:
        return None
    inner = getattr(model, "module", model)
    inner.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), options.batch_size):
            chunk = rows[start : start + options.batch_size]
            batch = {k: v.to(device) for k, v in pad(chunk).items()}
            total += float(inner(**batch).loss.item()) * len(chunk)
            count += len(chunk)
    inner.train()
    return total / count if count else None


def _report(model: Any, optimizer: Any, scheduler: Any, position: _Position,
            steps_per_epoch: int, rank: int) -> None:  # fmt: skip
    """Every rank reports; rank 0 attaches the checkpoint."""
    import ray.train
    import torch

    metrics = {
        "step": position.step,
        "epoch": position.step / max(steps_per_epoch, 1),
        "loss": position.last_loss if position.last_loss is not None else math.nan,
        "eval_loss": position.last_eval_loss if position.last_eval_loss is not None else math.nan,
    }
    if rank != 0:
        ray.train.report(metrics)
        return
    folder = Path(tempfile.mkdtemp(prefix="p2m-ckpt-"))
    try:
        getattr(model, "module", model).save_pretrained(folder / MODEL_DIR)
        torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
        state = {"epoch": position.epoch, "step": position.step, "loss": position.last_loss,
                 "eval_loss": position.last_eval_loss}  # fmt: skip
        (folder / STATE_FILE).write_text(json.dumps(state))
        write_manifest(folder)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(str(folder)),
            checkpoint_dir_name=folder_name(position.step),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
