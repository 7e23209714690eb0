"""A prompt as the person sent it: text within a size limit, or a clear error naming the field.

The parser and the gateway both take prompts; both check them here, the same way.
"""

from __future__ import annotations

from p2m.common.errors import InvalidInput


def validate_prompt(prompt: str | bytes, max_bytes: int, field: str = "prompt") -> str:
    """Return the prompt as text, or raise InvalidInput naming what is wrong with it."""
    if isinstance(prompt, bytes):
        if len(prompt) > max_bytes:
            raise InvalidInput(field, f"is {len(prompt)} bytes; the limit is {max_bytes}")
        try:
            prompt = prompt.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(field, f"is not UTF-8 text (byte {exc.start})") from exc
    size = len(prompt.encode("utf-8", errors="surrogatepass"))
    if size > max_bytes:
        raise InvalidInput(field, f"is {size} bytes; the limit is {max_bytes}")
    if not prompt.strip():
        raise InvalidInput(field, "is empty")
    controls = sum(1 for ch in prompt if ord(ch) < 32 and ch not in "\t\n\r")
    if "\x00" in prompt or controls > max(2, len(prompt) // 100):
        raise InvalidInput(field, "is not text (it holds NUL or control characters)")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in prompt):
        raise InvalidInput(field, "is not valid Unicode text (lone surrogates)")
    return prompt
