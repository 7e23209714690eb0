"""The names requests carry, each checked one way everywhere: run ids and deployment names."""

from __future__ import annotations

import re

from p2m.common.errors import InvalidInput

MAX_RUN_ID_CHARS = 64
# A deployment names an InferenceService, whose derived names (predictor, revisions) must stay
# DNS-1123 labels of at most 63 characters: hence 45, starting with a letter.
MAX_DEPLOYMENT_NAME_CHARS = 45
DEPLOYMENT_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_run_id(run_id: str, field_path: str = "run_id") -> str:
    """Return ``run_id`` when it is at most ``MAX_RUN_ID_CHARS`` long (it may be empty).

    Raises:
        InvalidInput: It is longer (``field_path`` names the field).
    """
    if len(run_id) > MAX_RUN_ID_CHARS:
        raise InvalidInput(field_path, f"at most {MAX_RUN_ID_CHARS} characters")
    return run_id


def check_deployment_name(name: str, field_path: str = "name") -> str:
    """Return ``name`` when it can name a deployment.

    That is a DNS-1123 label of 1 to 45 characters that starts with a letter.

    Raises:
        InvalidInput: It cannot (``field_path`` names the field).
    """
    if not name:
        raise InvalidInput(field_path, "is empty")
    if len(name) > MAX_DEPLOYMENT_NAME_CHARS:
        raise InvalidInput(
            field_path, f"at most {MAX_DEPLOYMENT_NAME_CHARS} characters, got {len(name)}"
        )
    if not DEPLOYMENT_NAME.match(name):
        raise InvalidInput(
            field_path,
            "must be a DNS-1123 label: lowercase letters, digits and '-', starting with a "
            f"letter and ending with a letter or digit; got {name[:60]!r}",
        )
    return name


def is_deployment_name(name: str) -> bool:
    """True when ``name`` could name a deployment (see ``check_deployment_name``)."""
    return 0 < len(name) <= MAX_DEPLOYMENT_NAME_CHARS and bool(DEPLOYMENT_NAME.match(name))
