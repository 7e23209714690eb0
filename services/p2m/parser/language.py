"""Detect the language an instruction is written in (ISO 639-1)."""

from __future__ import annotations

import functools
import re
from typing import Any

_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")
_CODE = re.compile(r"`[^`]*`")
_MIN_CONFIDENCE = 0.6


def detect_language(text: str) -> str:
    """Return the ISO 639-1 code of ``text``'s language; "en" when unsure.

    Scripts that name their language (kana, Hangul, Han) decide first, since a statistical
    model is unreliable on short text that mixes in code; langid decides the rest.
    """
    prose = _CODE.sub(" ", text)
    letters = len(_LETTER.findall(prose)) or 1
    kana, han, hangul = (len(p.findall(prose)) for p in (_KANA, _HAN, _HANGUL))
    if (kana + han) / letters > 0.2:
        return "ja" if kana else "zh"
    if hangul / letters > 0.2:
        return "ko"
    language, confidence = _identifier().classify(prose)
    return str(language) if confidence >= _MIN_CONFIDENCE else "en"


@functools.cache
def _identifier() -> Any:
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)
