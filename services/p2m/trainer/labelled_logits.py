"""A decoder-only student's loss with the vocabulary projection only where the loss needs it.

The loss is over the output's tokens; the input (instruction, question, passage) carries no
labels. The model's head projects every position onto the vocabulary (SmolLM2: 49k entries,
Qwen2.5: 151k) and the loss then ignores all but the positions that predict a labelled token: on
SQuAD-length inputs that is most of the head's work, and its batch x length x vocabulary logits
(and their gradient) most of a step's memory. Here the head runs only on those positions
(``logits_to_keep`` as a boolean mask, which transformers' decoder-only models take), and the
loss is the same mean over the labelled tokens. A model whose forward takes no such mask, or a
batch without a labelled token, takes the plain path.
"""

from __future__ import annotations

import inspect
from typing import Any

from p2m.trainer.encode import IGNORE_INDEX
from p2m.trainer.wrapped import unwrapped


def takes_logits_mask(model: Any) -> bool:
    """Whether ``model`` (inside its DDP and LoRA wrappers) is a causal LM taking the mask.

    Encoder-decoder models predict each label at its own position, not the next one: never.
    """
    inner = unwrapped(model)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if getattr(getattr(base, "config", None), "is_encoder_decoder", False):
        return False
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def predicted_targets(labels: Any) -> Any:
    """Each position's next-token label (IGNORE_INDEX where none): what its logits predict."""
    import torch

    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def causal_lm_loss(model: Any, batch: dict[str, Any], **forward: Any) -> Any:
    """The mean loss over ``batch``'s labelled tokens, logits computed for those tokens only.

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``labels``; ``forward`` goes to the
    model's call as it is (a cache, position ids).
    """
    import torch

    targets = predicted_targets(batch["labels"])
    keep = targets != IGNORE_INDEX
    if not takes_logits_mask(model) or not bool(keep.any()):
        return model(**batch, **forward).loss
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, logits_to_keep=keep, **forward).logits
    if logits.dim() == 3:  # a model that projected every position after all
        logits = logits[keep]
    return torch.nn.functional.cross_entropy(logits.float(), targets[keep])
