"""Whether a task's outputs are code, and in which language.

Shared by the generator (its invariants hold generated outputs to the language) and by the model
search (a code task prefers a code model for its student).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence

from p2m.common.types import TaskSpec

CODE_LANGUAGES = ("python",)
CODE_SHARE = 0.6  # outputs that parse, when the instruction names the language
# Words and spaces only: English that may parse as Python ("Travel in Japan") but is no code.
_WORDS = re.compile(r"[^\W\d][\w ]*")


def parses_as(text: str, language: str) -> bool:
    """True when ``text`` is valid code in ``language`` (only "python" is known)."""
    if language != "python":
        return True
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def is_code(text: str, language: str) -> bool:
    """True when ``text`` parses in ``language`` and is not bare words that happen to parse.

    "Science" and "Travel in Japan" parse as Python (a name; a comparison of names) but are
    English; "import json" and "pass" are words only and code (statements, not expressions).
    """
    if not parses_as(text, language):
        return False
    if language != "python" or not _WORDS.fullmatch(text.strip()):
        return True
    return not all(isinstance(node, ast.Expr) for node in ast.parse(text).body)


def code_language(task: TaskSpec, outputs: Sequence[str] | None = None) -> str:
    """The language the instruction names when most outputs parse in it, else "".

    ``outputs`` defaults to the demonstrations' outputs.
    """
    if outputs is None:
        outputs = [d.output.strip() for d in task.demonstrations]
    if not outputs:
        return ""
    words = f"{task.instruction} {task.original_instruction}".casefold()
    for language in CODE_LANGUAGES:
        if language in words:
            parsing = sum(is_code(o, language) for o in outputs)
            if parsing >= CODE_SHARE * len(outputs):
                return language
    return ""
