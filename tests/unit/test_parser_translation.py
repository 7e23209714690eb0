"""The parser's translation: a second, sampled attempt when a small model loops."""

from __future__ import annotations

from p2m.common.errors import LLMOutputError
from p2m.common.llm import ChatResult
from p2m.parser.core import PromptParser
from p2m.parser.translation import MAX_PIECE_CHARS, pieces

PROMPT = '英語に翻訳してください。\ninput="猫"\noutput="cat"'


class _LoopingOnceLLM:
    """Loops on the first (greedy) request, answers the next."""

    def __init__(self, loops: int) -> None:
        self.loops = loops
        self.temperatures: list[float] = []

    async def chat_json(self, messages, schema, *, name, max_tokens, temperature, seed):
        self.temperatures.append(temperature)
        result = ChatResult("REC:1.1.1.REC:1.1.1.", "length", 50, max_tokens, 0.1, 1)
        if len(self.temperatures) <= self.loops:
            error = LLMOutputError("LLM answer is not JSON")
            error.result = result
            raise error
        return {"english": "Translate into English."}, result


async def test_a_looping_first_answer_gets_a_sampled_second_attempt():
    llm = _LoopingOnceLLM(loops=1)

    async def source():
        return llm

    parsed = await PromptParser(source).parse(PROMPT)
    assert parsed.task.instruction == "Translate into English."
    assert parsed.task.original_instruction == "英語に翻訳してください。"
    assert llm.temperatures[0] == 0.0 and llm.temperatures[1] > 0
    assert parsed.usage.requests == 2  # the failed attempt is counted too


async def test_two_failed_attempts_keep_the_instruction_as_written_with_a_warning():
    llm = _LoopingOnceLLM(loops=2)

    async def source():
        return llm

    parsed = await PromptParser(source).parse(PROMPT)
    assert parsed.task.instruction == "英語に翻訳してください。"
    assert any("translation failed" in warning for warning in parsed.task.warnings)
    assert len(llm.temperatures) == 2
    assert parsed.usage.requests == 2  # the failed attempts are counted too


def test_each_paragraph_is_translated_on_its_own_and_long_ones_cut_at_sentence_ends():
    long = "これは文です。" * 100
    cut = pieces(long)
    assert len(cut) > 1 and "".join(cut) == long
    assert all(len(piece) <= MAX_PIECE_CHARS for piece in cut)
    assert all(piece.endswith("。") for piece in cut)
    assert pieces("One. Two! Three?") == ["One. Two! Three?"]
