"""LoRA adapters where full fine-tuning would not fit the training's memory.

Full fine-tuning holds, for every parameter, its fp32 weight, gradient and AdamW's two moments:
16 bytes (SmolLM2-135M 2.2 GB, Qwen2.5-Coder-0.5B 10 GB, a 1.5B student under the model
search's 3 GB cap 24 GB), plus activations. A student too large for that is killed by the
kernel minutes into its training. Where the request leaves the choice open (``lora_auto``) and
the memory is known, the trainer trains LoRA adapters instead (their gradients and state are a
few MB; the frozen weights stay) and says why in the report and the model card.

The memory is known where Ray is local (every worker on this machine: what it or its cgroup has
available) or where a setting gives it (``train_memory_gb``: one node's memory for its
workers, e.g. a KubeRay worker pod's limit, where a RayJob runs one worker). Elsewhere, and
for GPU training (whose memory is the GPU's), full fine-tuning stands as asked.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from p2m.trainer.freed_memory import HEADROOM_BYTES, available_memory_bytes
from p2m.trainer.options import TrainOptions

FULL_BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and AdamW's two moments
GB = 1e9


@dataclass(frozen=True)
class AdapterChoice:
    """The options to train with, and why adapters were chosen ("" where nothing changed)."""

    options: TrainOptions
    reason: str = ""


def full_fine_tuning_bytes(parameters: int) -> int:
    """Memory one worker's full fine-tuning of ``parameters`` takes, activations included."""
    return parameters * FULL_BYTES_PER_PARAMETER + HEADROOM_BYTES


def choose_adapters(
    options: TrainOptions, parameters: int, memory: int | None, workers_per_machine: int
) -> AdapterChoice:
    """``options`` with LoRA where full fine-tuning's workers would not fit ``memory``.

    ``memory`` is one machine's (None: unknown, nothing changes), shared by the
    ``workers_per_machine`` workers on it: all of a local Ray's, one per pod of a RayJob. The
    choice is made once: the options returned leave it closed (``lora_auto`` off), so a
    RayJob's entrypoint keeps it.
    """
    closed = replace(options, lora_auto=False)
    if options.lora or not options.lora_auto or memory is None or options.use_gpu:
        return AdapterChoice(closed)
    workers = max(1, workers_per_machine)
    need = full_fine_tuning_bytes(parameters) * workers
    if need <= memory:
        return AdapterChoice(closed)
    each = " per worker" if workers > 1 else ""
    reason = (
        f"full fine-tuning of {parameters / 1e6:,.0f}M parameters needs about "
        f"{need / GB:.1f} GB ({FULL_BYTES_PER_PARAMETER} bytes a parameter "
        f"and {HEADROOM_BYTES / 2**30:.0f} GiB of activations{each}), "
        f"{memory / GB:.1f} GB is available: LoRA adapters trained instead"
    )
    return AdapterChoice(replace(closed, lora=True), reason)


def training_memory(memory_gb: float, ray_is_local: bool) -> int | None:
    """The memory a training's workers on one machine have: the setting, else measured.

    ``memory_gb`` (> 0) is taken as given; otherwise the available memory of this machine
    (within its cgroup) where Ray is local, None (unknown) where the workers run elsewhere.
    """
    if memory_gb > 0:
        return int(memory_gb * GB)
    return available_memory_bytes() if ray_is_local else None
