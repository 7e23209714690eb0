"""CreateRun requests: checked field by field, defaults filled in, and hashed for idempotency."""

from __future__ import annotations

import hashlib
import re

from p2m.common.errors import InvalidInput
from p2m.common.names import check_deployment_name
from p2m.common.prompt_text import validate_prompt
from p2m.common.ranges import Within, check_ranges
from prompt2model.v1 import common_pb2, gateway_pb2

DEFAULT_SEED = 42
MAX_REQUEST_ID = 128
MAX_DATASET_PATH = 4096
MAX_BASE_MODEL_NAME = 256
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]*$")
NOT_SKIPPABLE = (common_pb2.STAGE_PARSE, common_pb2.STAGE_TRAIN)


def prompt_text(request: gateway_pb2.CreateRunRequest, max_bytes: int) -> str:
    """The prompt as text, checked as the parser checks it.

    Raises:
        InvalidInput: Missing, empty, too large, not UTF-8 or not text (field "prompt").
    """
    which = request.WhichOneof("source")
    if which is None:
        raise InvalidInput("prompt", "set prompt or prompt_bytes")
    raw = request.prompt.encode() if which == "prompt" else request.prompt_bytes
    return validate_prompt(raw, max_bytes, field=which)


def checked_options(options: gateway_pb2.RunOptions) -> gateway_pb2.RunOptions:
    """The options with the server's defaults filled in (the seed), after checking them.

    Raises:
        InvalidInput: The first bad field, named by its path.
    """
    budget = options.budget
    check_ranges(
        Within(f"options.budget.{name}", getattr(budget, name), 0, high)
        for name, high in (
            ("num_examples", 100_000),
            ("epochs", 100),
            ("llm_max_requests", 2**63 - 1),
            ("llm_max_tokens", 2**63 - 1),
        )
    )
    seen: set[int] = set()
    for stage in options.skip_stages:
        label = common_pb2.Stage.Name(stage) if stage in common_pb2.Stage.values() else str(stage)
        if stage in NOT_SKIPPABLE or stage == common_pb2.STAGE_UNSPECIFIED:
            raise InvalidInput("options.skip_stages", f"{label} cannot be skipped")
        if stage not in common_pb2.Stage.values():
            raise InvalidInput("options.skip_stages", f"unknown stage {stage}")
        if stage in seen:
            raise InvalidInput("options.skip_stages", f"{label} is listed twice")
        seen.add(stage)
    own = options.WhichOneof("own_dataset")
    if own == "dataset" and not options.dataset.name.strip():
        raise InvalidInput("options.dataset.name", "is empty")
    if own == "dataset_path" and not 0 < len(options.dataset_path) <= MAX_DATASET_PATH:
        raise InvalidInput("options.dataset_path", f"must be 1..{MAX_DATASET_PATH} characters")
    if own == "dataset_path" and not options.dataset_path.startswith("/"):
        raise InvalidInput(
            "options.dataset_path", "must be an absolute path on the services' machine"
        )
    model = options.WhichOneof("own_base_model")
    if model == "base_model" and not options.base_model.name.strip():
        raise InvalidInput("options.base_model.name", "is empty")
    if model == "base_model_name" and not (
        0 < len(options.base_model_name.strip()) <= MAX_BASE_MODEL_NAME
    ):
        raise InvalidInput(
            "options.base_model_name", f"must be 1..{MAX_BASE_MODEL_NAME} characters"
        )
    if options.mode not in gateway_pb2.InteractionMode.values():
        raise InvalidInput("options.mode", f"unknown mode {options.mode}")
    if options.deployment_name:
        check_deployment_name(options.deployment_name, "options.deployment_name")
    filled = gateway_pb2.RunOptions()
    filled.CopyFrom(options)
    if not filled.HasField("seed"):
        filled.seed = DEFAULT_SEED
    if filled.mode == gateway_pb2.INTERACTION_MODE_UNSPECIFIED:
        filled.mode = gateway_pb2.INTERACTION_MODE_UNATTENDED
    return filled


def check_request_id(request_id: str) -> None:
    """Raise InvalidInput unless the id is at most 128 printable ASCII characters."""
    if len(request_id) > MAX_REQUEST_ID or not _PRINTABLE_ASCII.match(request_id):
        raise InvalidInput("request_id", f"must be at most {MAX_REQUEST_ID} printable ASCII chars")


def request_sha(prompt: str, options: gateway_pb2.RunOptions) -> str:
    """What a repeat with the same request id must match: the prompt and the filled options."""
    digest = hashlib.sha256(prompt.encode())
    digest.update(options.SerializeToString(deterministic=True))
    return digest.hexdigest()
