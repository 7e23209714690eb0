"""Which examples go into each step's batch: shuffled by seed and epoch, grouped by length.

Every rank computes the same global batches (``batch_size * world`` examples each) and takes its
own slice of each, so all ranks take the same number of steps and a resumed run sees the same
batches again. Grouping sorts examples by length within megabatches of ``MEGABATCH`` global
batches before cutting them, then shuffles the batches: a batch's examples have similar
lengths, so padding (wasted computation) shrinks while the data stays shuffled across steps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

MEGABATCH = 50  # global batches sorted together (as Hugging Face's length-grouped sampler)


def steps_per_epoch(examples: int, batch_size: int, world: int) -> int:
    """Optimizer steps in one pass over ``examples`` (the last batch may be short)."""
    return math.ceil(examples / (batch_size * world)) if examples else 0


def epoch_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    world: int = 1,
    rank: int = 0,
    seed: int = 0,
    epoch: int = 0,
    group_by_length: bool = True,
) -> list[list[int]]:
    """This rank's batches (example indices) for ``epoch``, one per step.

    The last global batch is filled up from the start of the epoch's order when it holds fewer
    examples than ranks, so no rank gets an empty batch.
    """
    count = len(lengths)
    if not count:
        return []
    order = list(range(count))
    rng = random.Random(f"{seed}:{epoch}")
    rng.shuffle(order)
    step = batch_size * world
    if group_by_length:
        sorted_order: list[int] = []
        for start in range(0, count, step * MEGABATCH):
            chunk = order[start : start + step * MEGABATCH]
            sorted_order.extend(sorted(chunk, key=lambda i: -lengths[i]))
        order = sorted_order
    global_batches = [order[start : start + step] for start in range(0, count, step)]
    if len(global_batches[-1]) < world:
        global_batches[-1] += (order * world)[: world - len(global_batches[-1])]
    if group_by_length:
        rng.shuffle(global_batches)
    return [_slice(batch, world, rank) for batch in global_batches]


def _slice(batch: list[int], world: int, rank: int) -> list[int]:
    """Rank ``rank``'s contiguous share of a global batch (shares differ by one at most)."""
    size, extra = divmod(len(batch), world)
    start = rank * size + min(rank, extra)
    return batch[start : start + size + (1 if rank < extra else 0)]
