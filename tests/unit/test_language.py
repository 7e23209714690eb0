from __future__ import annotations

import pytest

from p2m.parser.language import detect_language


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Your task is to generate an answer to a natural question.", "en"),
        ("Pythonで1行のコードを生成し、StackOverflowの日本語の質問を解決してください。", "ja"),
        ("変数`my_list`の要素を`sorted`で並べ替える", "ja"),
        ("Votre tâche consiste à traduire des phrases courtes en anglais.", "fr"),
        ("Deine Aufgabe ist es, die Stimmung einer Bewertung zu bestimmen.", "de"),
        ("Tu tarea es clasificar el sentimiento de una reseña de producto.", "es"),
        ("请把下面的句子翻译成英文。", "zh"),
        ("다음 문장을 영어로 번역하세요.", "ko"),
    ],
)
def test_detects_the_language(text: str, language: str):
    assert detect_language(text) == language


def test_unsure_short_text_defaults_to_english():
    assert detect_language("ok") == "en"
