"""Whether the Hugging Face hub may be used, as its own HF_HUB_OFFLINE switch says."""

from __future__ import annotations

import os


def hub_offline_by_env() -> bool:
    """True when HF_HUB_OFFLINE is set to anything but 0/false (the hub client's own rule)."""
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
