"""Whether the disk holds a training's checkpoints, said before the training starts.

A full disk otherwise fails deep inside ``torch.save`` ("unexpected pos 4496980288") after
minutes of training: a 0.5B-parameter student's checkpoint is about 8 GB (its weights, the best
weights kept beside them, AdamW's two moments) and Ray keeps two of them.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path

from p2m.common.errors import FailedPrecondition
from p2m.trainer.checkpoints import FOLDER_GLOB

# Ray keeps two checkpoints and writes the next before it drops the oldest.
CHECKPOINTS_ON_DISK = 3
# Per parameter of a full fine-tuning's checkpoint: fp32 weights, the best weights, AdamW's two
# fp32 moments. A LoRA checkpoint holds its adapters only: counted as nothing.
CHECKPOINT_BYTES_PER_PARAMETER = 16
_HEADER_LENGTH = struct.Struct("<Q")


def parameter_count(folder: Path) -> int:
    """Parameters in a ``save_pretrained`` folder, read from its safetensors headers.

    Weights in another format count as fp32 (their bytes over four).
    """
    total = 0
    for path in sorted(folder.glob("*.safetensors")):
        with path.open("rb") as fh:
            (length,) = _HEADER_LENGTH.unpack(fh.read(_HEADER_LENGTH.size))
            header = json.loads(fh.read(length))
        total += sum(
            math.prod(tensor["shape"]) for name, tensor in header.items() if name != "__metadata__"
        )
    if total:
        return total
    return sum(p.stat().st_size for p in folder.glob("*.bin")) // 4


def needed_bytes(parameters: int, lora: bool, run_dir: Path) -> int:
    """Free bytes a run needs for its checkpoints, less those its earlier checkpoints hold."""
    if lora:
        return 0
    kept = sum(1 for p in run_dir.glob(FOLDER_GLOB) if p.is_dir()) if run_dir.is_dir() else 0
    return max(CHECKPOINTS_ON_DISK - kept, 0) * parameters * CHECKPOINT_BYTES_PER_PARAMETER


def check_free_space(parameters: int, lora: bool, run_dir: Path) -> None:
    """Raise FailedPrecondition when the disk under ``run_dir`` lacks room for the checkpoints."""
    needed = needed_bytes(parameters, lora, run_dir)
    existing = _existing_parent(run_dir)
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise FailedPrecondition(
            f"training needs about {needed / 1e9:.1f} GB free under {existing} for its "
            f"checkpoints ({parameters / 1e6:.1f}M parameters, {CHECKPOINTS_ON_DISK} checkpoints "
            f"of {parameters * CHECKPOINT_BYTES_PER_PARAMETER / 1e9:.1f} GB at most); "
            f"{free / 1e9:.1f} GB are free: free some space, or train LoRA adapters "
            "(the lora option)"
        )


def _existing_parent(path: Path) -> Path:
    """``path`` itself when it exists, else its nearest existing parent."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
