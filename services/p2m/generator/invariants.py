"""What every demonstration has in common, learned once and held against every generated example.

The demonstrations say more than the instruction. Every SQuAD input has a "Question:" before a
"Context:" and its output is a span of that context; every Temporal input starts with
"[Posted: YYYY-MM-DD]" and its output is "N/A" or holds " == "; every MCoNaLa input is one line of
Japanese and its output one line of Python. A small teacher forgets such things, so a generated
example that breaks one is dropped (and counted by rule). Rules are inferred only from at least
``MIN_DEMONSTRATIONS`` demonstrations; a person can see them and replace them
(``Invariants.from_json``).
"""

from __future__ import annotations

import ast
import datetime
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from p2m.common.closed_set import MIN_DEMONSTRATIONS, closed_set_labels, squash
from p2m.common.code_output import CODE_LANGUAGES, code_language, is_code, parses_as
from p2m.common.errors import InvalidInput
from p2m.common.types import Example, TaskSpec
from p2m.generator import key_kinds, output_items, scripts
from p2m.generator.meaning import Encoder
from p2m.generator.output_items import ItemRules
from p2m.generator.text_shape import SYMBOL, compact, shape_pieces

# A marker: a capitalised word or two right before a colon ("Question:", "Posted:").
_MARKER = re.compile(r"(?<![\w])([A-Z][A-Za-z]*(?: [A-Za-z]+)?):")
MIN_PREFIX_CHARS = 3
# Shares of the demonstrations that must agree before a rule is learned.
MIN_LITERAL_OUTPUTS = 3  # outputs (not repeated ones) a literal must be common to
RULES = (
    "input_prefix",
    "input_markers",
    "output_one_line",
    "output_in_input",
    "output_choices",
    "output_literals",
    "output_language",
    "input_one_line",
    "input_scripts",
    "output_scripts",
    "input_without_labels",
    "output_not_only_imports",
    "input_sentence_end",
    "input_starts_with",
    "calendar_dates",
    "output_fixed_alone",
    "output_not_only_prints_text",
    "output_keys_in_input",
    "output_value_shapes",
    "output_key_kinds",
    "output_from_marker",
)
# Labels a teacher puts before an answer ("input: ... output: ..." is how the generator shows
# examples); one written into a new input gives its answer away ("...\n\nOutput: Corn").
ANSWER_LABELS = ("output", "answer")
# A sentence's end: its final punctuation (. ! ?, the ellipsis, the full-width stop, exclamation
# and question marks), then any closing quotes or brackets (straight, curly, corner).
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f][\"'\u201d\u2019)\]\u300d\u300f]*$")
# A date written year first, "2013-10-25" or "2013-04", not part of a longer run of digits.
_ISO_DATE = re.compile(r"(?<![\w-])(\d{4})-(\d{2})(?:-(\d{2}))?(?![\w-])")


@dataclass(frozen=True)
class Invariants:
    r"""Rules every generated example must keep (empty or False: no such rule).

    Attributes:
        input_prefix: A regular expression every input starts with (e.g. ``\[Posted: \d{4}``).
        input_markers: Markers every input holds, in this order (e.g. "Question:", "Context:").
        output_one_line: The output is one line.
        output_in_input: The output appears in the input (case and spacing aside).
        output_choices: The output is one of these (a closed set of labels).
        output_literals: Symbols every output holds (e.g. "=="), unless it is one of
            ``output_fixed``.
        output_fixed: Whole outputs allowed besides the ``output_literals`` form (e.g. "N/A").
        output_language: The output is code in this language ("python"): it parses, and is more
            than words that happen to parse ("Science", "Travel in Japan").
        input_one_line: The input is one line.
        input_scripts: Writing systems every input uses ("kana", "han"; see ``scripts``).
        output_scripts: Writing systems every output uses.
        input_without_labels: Words no input uses as an answer's label ("Output:", "output=";
            see ``_holds_any_label``), those of ``ANSWER_LABELS`` no demonstration's input does.
        output_not_only_imports: The output (code in ``output_language``) does more than import:
            "import os" does nothing a task asks for (no MCoNaLa dev output is one; 13 of 80
            outputs a small teacher wrote were).
        input_sentence_end: The input ends a sentence (final punctuation, then any closing
            quotes or brackets). A small teacher writing JSON ends its string at the first raw
            double quote it meant as a quotation mark, so its input stops mid-sentence ("...
            the league emphasized the"; 13 of 51 SQuAD inputs Qwen2.5-0.5B wrote).
        input_starts_with: What every input starts with: "digit" or the writing systems of
            ``scripts.START_RANGES`` ("latin", "kana", ...). Learned when every demonstration's
            input starts with a letter or digit: then digits and the letters of every writing
            system the inputs use (Japanese inputs that start with kana may start with a kanji).
            A small teacher held off the usual first words of an input by its frequency penalty
            starts it with a symbol instead ("# How do I top up", "$100.00 is your top-up
            limit": 14 of 20 banking77 inputs Qwen2.5-0.5B wrote).
        calendar_dates: Every date written year first ("2013-10-25", "2013-04") in an input or
            an output is a real one. Learned when the demonstrations write such dates, all real;
            a small teacher writes "[Posted: 2018-69-76]" and "2024-11-31" (6 to 10 of the 80
            Temporal examples Qwen2.5-0.5B wrote).
        output_not_only_prints_text: The output (code in ``output_language``) does more than
            print text written into it: ``print("銀行の情報を表示します。")`` answers "show the
            bank's details" by echoing the request (12 of the 80 MCoNaLa outputs Qwen2.5-0.5B
            wrote; none of the dev half's 105). Learned when no demonstration's output does.
        output_fixed_alone: An ``output_fixed`` output stands alone: no other output holds it
            as a part ("last year == 1988-10-30 | N/A"; 3 to 7 of those 80). Learned when no
            demonstration's other output does.
        output_item_separator: Where the output is keyed items ("key == value", the one
            ``output_literals`` symbol between), the symbol between items ("|"); "" for one item
            per output. See ``output_items``.
        output_keys_in_input: Every item's key is quoted from the input ("last year").
        output_value_shapes: Patterns one of which every item's value matches (``\d{4}-\d{2}``):
            learned when every value is digits and symbols in a few shapes.
        output_key_kinds: Every item's key is of the demonstrations' keys' kind: its highest
            cosine (the shipped sentence encoder) to one of their keys is at least this; 0.0
            for no such rule. Learned with ``GenerateOptions.key_kinds`` where the encoder is at
            hand, from at least ``key_kinds.MIN_KEYS`` distinct keys: their lowest leave-one-out
            cosine less a margin (Temporal's time expressions: 0.41; "Paris" or "Apple" as a
            key scored 0.11 to 0.39). See ``key_kinds``.
        output_from_marker: The one of ``input_markers`` whose text every output is copied
            from, no other marked text holding it as words ("Context:": a SQuAD answer is a
            span of the passage, not of the question). A small teacher's answer often repeats
            its question's words ("Which country did India play in 2013?" -> "India": 22 of the
            80 SQuAD examples Qwen2.5-Coder-0.5B wrote; 1 of the dev half's 595 breaks the rule).
            Given, never learned: learned on SQuAD, its students scored dev Exact Match 19.0 and
            12.0 at two seeds against 14.0 and 22.0 without it (the pipeline, 80 examples).
    """

    input_prefix: str = ""
    input_markers: tuple[str, ...] = ()
    output_one_line: bool = False
    output_in_input: bool = False
    output_choices: tuple[str, ...] = ()
    output_literals: tuple[str, ...] = ()
    output_fixed: tuple[str, ...] = ()
    output_language: str = ""
    input_one_line: bool = False
    input_scripts: tuple[str, ...] = ()
    output_scripts: tuple[str, ...] = ()
    input_without_labels: tuple[str, ...] = ()
    output_not_only_imports: bool = False
    input_sentence_end: bool = False
    input_starts_with: tuple[str, ...] = ()
    calendar_dates: bool = False
    output_fixed_alone: bool = False
    output_not_only_prints_text: bool = False
    output_item_separator: str = ""
    output_keys_in_input: bool = False
    output_value_shapes: tuple[str, ...] = ()
    output_key_kinds: float = 0.0
    output_from_marker: str = ""

    def input_violation(self, text: str) -> str | None:
        """The first input rule ``text`` breaks, or None."""
        if self.input_prefix and not re.match(self.input_prefix, text.strip()):
            return "input_prefix"
        if self.input_markers and not _in_order(text, self.input_markers):
            return "input_markers"
        if self.input_one_line and "\n" in text.strip():
            return "input_one_line"
        if self.input_scripts and not scripts.keeps_scripts(text, self.input_scripts):
            return "input_scripts"
        if self.input_starts_with and not _starts_with(text, self.input_starts_with):
            return "input_starts_with"
        if self.input_without_labels and _holds_any_label(text, self.input_without_labels):
            return "input_without_labels"
        if self.input_sentence_end and not ends_sentence(text):
            return "input_sentence_end"
        if self.calendar_dates and not real_dates(text):
            return "calendar_dates"
        return None

    def output_violation(self, input_text: str, output: str) -> str | None:
        """The first output rule ``output`` (the answer to ``input_text``) breaks, or None."""
        text = output.strip()
        if self.output_one_line and "\n" in text:
            return "output_one_line"
        if self.output_in_input and squash(text) not in squash(input_text):
            return "output_in_input"
        if self.output_from_marker and not copied_from_marker(
            input_text, text, self.input_markers, self.output_from_marker
        ):
            return "output_from_marker"
        if self.output_choices and squash(text) not in {squash(c) for c in self.output_choices}:
            return "output_choices"
        if (
            self.output_literals
            and text not in self.output_fixed
            and not _holds_all(text, self.output_literals)
        ):
            return "output_literals"
        if self.output_fixed_alone and holds_fixed_part(text, self.output_fixed):
            return "output_fixed_alone"
        if self.calendar_dates and not real_dates(text):
            return "calendar_dates"
        if (broken := self._item_violation(input_text, text)) is not None:
            return broken
        if self.output_language and not is_code(text, self.output_language):
            return "output_language"
        if self.output_not_only_imports and only_imports(text, self.output_language):
            return "output_not_only_imports"
        if self.output_not_only_prints_text and only_prints_text(text, self.output_language):
            return "output_not_only_prints_text"
        if self.output_scripts and not scripts.keeps_scripts(text, self.output_scripts):
            return "output_scripts"
        return None

    @property
    def item_rules(self) -> ItemRules:
        """The keyed items' rules (empty unless one literal splits key from value)."""
        if len(self.output_literals) != 1:
            return ItemRules()
        return ItemRules(
            self.output_item_separator, self.output_keys_in_input, self.output_value_shapes
        )

    def _item_violation(self, input_text: str, text: str) -> str | None:
        rules = self.item_rules
        if rules.empty or text in self.output_fixed:
            return None
        broken = output_items.violation(rules, input_text, text, self.output_literals[0])
        return f"output_{broken}" if broken else None

    def output_keys(self, output: str) -> list[str]:
        """The keys of ``output``'s items ([] where outputs are not keyed or it is a fixed one)."""
        text = output.strip()
        if len(self.output_literals) != 1 or text in self.output_fixed:
            return []
        parts = output_items.items(text, self.output_literals[0], self.output_item_separator)
        return [key for key, _ in parts or []]

    def demonstration_keys(self, demonstrations: Sequence[Example]) -> list[str]:
        """The distinct keys of the demonstrations' keyed outputs, in order."""
        keys = (key for d in demonstrations for key in self.output_keys(d.output))
        return list(dict.fromkeys(keys))

    def kept_outputs(self, input_text: str, outputs: Sequence[str]) -> list[str]:
        """The non-empty ``outputs`` (answers to ``input_text``) that break no output rule."""
        return [o for o in outputs if o and self.output_violation(input_text, o) is None]

    def violation(self, example: Example) -> str | None:
        """The first rule ``example`` breaks, or None."""
        return self.input_violation(example.input) or self.output_violation(
            example.input, example.output
        )

    @property
    def empty(self) -> bool:
        """True when there is no rule at all."""
        return self == Invariants()

    def describe(self) -> list[str]:
        """One line per rule, for people."""
        lines = []
        if self.input_prefix:
            lines.append(f"every input starts with the pattern {self.input_prefix}")
        if self.input_starts_with:
            kinds = ", ".join(self.input_starts_with)
            lines.append(f"every input starts with a character of: {kinds}")
        if self.input_markers:
            lines.append(f"every input holds {', then '.join(map(repr, self.input_markers))}")
        if self.input_one_line:
            lines.append("every input is one line")
        if self.input_sentence_end:
            lines.append("every input ends a sentence")
        if self.input_scripts:
            lines.append(f"every input is written in {scripts.describe(self.input_scripts)}")
        if self.input_without_labels:
            labels = " or ".join(map(repr, self.input_without_labels))
            lines.append(f"no input labels an answer with {labels}")
        if self.output_one_line:
            lines.append("every output is one line")
        if self.output_in_input:
            lines.append("every output is a span of its input")
        if self.output_from_marker:
            lines.append(
                f"every output is copied from the text after {self.output_from_marker!r} alone"
            )
        if self.output_choices:
            lines.append(f"every output is one of {', '.join(map(repr, self.output_choices))}")
        if self.output_literals:
            fixed = "".join(f" or is {f!r}" for f in self.output_fixed)
            lines.append(f"every output holds {', '.join(map(repr, self.output_literals))}{fixed}")
        if self.output_language:
            lines.append(f"every output is {self.output_language} code")
        if self.output_not_only_imports:
            lines.append("no output only imports")
        if self.output_not_only_prints_text:
            lines.append("no output only prints text written into it")
        if self.output_fixed_alone:
            lines.append(f"{' and '.join(map(repr, self.output_fixed))} only as a whole output")
        if not self.item_rules.empty:
            lines.extend(self._item_lines())
        if self.output_scripts:
            lines.append(f"every output is written in {scripts.describe(self.output_scripts)}")
        if self.calendar_dates:
            lines.append("every date written year first is a real one")
        return lines

    def _item_lines(self) -> list[str]:
        literal = self.output_literals[0]
        joined = f", joined by {self.output_item_separator!r}" if self.output_item_separator else ""
        lines = [f"every output is items of key {literal!r} value{joined}"]
        if self.output_keys_in_input:
            lines.append("every item's key is quoted from its input")
        if self.output_value_shapes:
            lines.append(f"every item's value matches one of {', '.join(self.output_value_shapes)}")
        if self.output_key_kinds:
            lines.append(
                "every item's key is of the demonstrations' keys' kind "
                f"(cosine at least {self.output_key_kinds:g} to one of them)"
            )
        return lines

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Any, field: str = "invariants") -> Invariants:
        """Rules from JSON as ``to_json`` writes them; unknown keys and bad values are refused.

        Raises:
            InvalidInput: A key is unknown, a value has the wrong type, or a pattern is invalid.
        """
        if not isinstance(data, dict):
            raise InvalidInput(field, "must be a JSON object")
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise InvalidInput(f"{field}.{key}", f"unknown rule; known: {', '.join(known)}")
            values[key] = _coerce(f"{field}.{key}", known[key].type, value)
        invariants = cls(**values)
        invariants.validate(field)
        return invariants

    def validate(self, field: str = "invariants") -> None:
        """Check the pattern compiles and the language is known.

        Raises:
            InvalidInput: Naming the rule.
        """
        try:
            re.compile(self.input_prefix)
        except re.error as exc:
            raise InvalidInput(
                f"{field}.input_prefix", f"not a regular expression: {exc}"
            ) from None
        unknown = set(self.input_starts_with) - scripts.START_RANGES.keys()
        if unknown:
            raise InvalidInput(
                f"{field}.input_starts_with",
                f"unknown {sorted(unknown)}; known: {', '.join(scripts.START_RANGES)}",
            )
        if self.output_language and self.output_language not in CODE_LANGUAGES:
            raise InvalidInput(
                f"{field}.output_language", f"must be one of {CODE_LANGUAGES} or empty"
            )
        for pattern in self.output_value_shapes:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise InvalidInput(
                    f"{field}.output_value_shapes",
                    f"{pattern!r} is not a regular expression: {exc}",
                ) from None
        if self.output_from_marker and self.output_from_marker not in self.input_markers:
            raise InvalidInput(
                f"{field}.output_from_marker", "must be one of input_markers (or empty)"
            )
        if not 0.0 <= self.output_key_kinds < 1.0:
            raise InvalidInput(f"{field}.output_key_kinds", "must be at least 0 and below 1")
        if (self.output_keys_in_input or self.output_value_shapes or self.output_key_kinds) and len(
            self.output_literals
        ) != 1:
            raise InvalidInput(
                f"{field}.output_literals",
                "must hold exactly one symbol (the one between key and value) where "
                "output_keys_in_input, output_value_shapes or output_key_kinds is set",
            )


def infer(task: TaskSpec, encoder: Encoder | None = None) -> Invariants:
    """The rules every demonstration of ``task`` keeps (none from fewer than two).

    With an ``encoder``, keyed outputs' keys are held to the demonstrations' kind too.
    """
    demos = [Example(d.input.strip(), d.output.strip()) for d in task.demonstrations]
    if len(demos) < MIN_DEMONSTRATIONS:
        return Invariants()
    inputs, outputs = [d.input for d in demos], [d.output for d in demos]
    literals, fixed = _literals(outputs)
    language = code_language(task, outputs)
    keyed = [(d.input, d.output) for d in demos if d.output not in fixed]
    items = output_items.learn(keyed, literals[0]) if len(literals) == 1 else ItemRules()
    rules = Invariants(
        input_prefix=_common_prefix_pattern(inputs),
        input_markers=_common_markers(inputs),
        output_one_line=all("\n" not in o for o in outputs),
        output_in_input=all(squash(d.output) in squash(d.input) for d in demos),
        output_choices=closed_set_labels(task),
        output_literals=literals,
        output_fixed=fixed,
        output_language=language,
        input_one_line=all("\n" not in i for i in inputs),
        input_scripts=scripts.common_scripts(inputs, MIN_DEMONSTRATIONS),
        output_scripts=scripts.common_scripts(outputs, MIN_DEMONSTRATIONS),
        input_without_labels=tuple(
            label
            for label in ANSWER_LABELS
            if not any(_holds_any_label(i, [label]) for i in inputs)
        ),
        output_not_only_imports=bool(language)
        and not any(only_imports(o, language) for o in outputs),
        input_sentence_end=all(ends_sentence(i) for i in inputs),
        input_starts_with=_start_kinds(inputs),
        calendar_dates=any(_ISO_DATE.search(t) for t in inputs + outputs)
        and all(real_dates(t) for t in inputs + outputs),
        output_fixed_alone=bool(fixed) and not any(holds_fixed_part(o, fixed) for o in outputs),
        output_not_only_prints_text=bool(language)
        and not any(only_prints_text(o, language) for o in outputs),
        output_item_separator="" if items.empty else items.separator,
        output_keys_in_input=items.keys_in_input,
        output_value_shapes=items.value_shapes,
    )
    if encoder is None or items.empty:
        return rules
    threshold = key_kinds.learn_threshold(encoder, rules.demonstration_keys(demos))
    return replace(rules, output_key_kinds=threshold)


def real_dates(text: str) -> bool:
    """True when every date written year first in ``text`` ("2013-10-25", "2013-04") exists."""
    for year, month, day in _ISO_DATE.findall(text):
        try:
            datetime.date(int(year), int(month), int(day or 1))
        except ValueError:
            return False
    return True


def holds_fixed_part(text: str, fixed: Sequence[str]) -> bool:
    """True when ``text`` is not one of ``fixed`` but holds one as a part of its own."""
    text = text.strip()
    return text not in fixed and any(
        re.search(rf"(?<!\w){re.escape(f)}(?!\w)", text) for f in fixed
    )


def ends_sentence(text: str) -> bool:
    """True when ``text`` ends with a sentence's final punctuation (closing quotes aside)."""
    return _SENTENCE_END.search(text.strip()) is not None


def only_imports(text: str, language: str) -> bool:
    """True when ``text`` is code in ``language`` ("python") that imports and does nothing else."""
    return _only_statements(text, language, lambda n: isinstance(n, ast.Import | ast.ImportFrom))


def only_prints_text(text: str, language: str) -> bool:
    """True when ``text`` is code in ``language`` ("python") that prints constants and no more.

    ``print("done")`` and ``print(f"total: {3}")`` print only what is written into them;
    ``print(settings.DATABASES)`` and ``print(f"{name}")`` print a value the code looks up.
    """
    return _only_statements(text, language, _prints_constants)


def _only_statements(text: str, language: str, kind: Callable[[ast.stmt], bool]) -> bool:
    """True when ``text`` is Python code with statements, each of them of ``kind``."""
    if language != "python" or not parses_as(text, language):
        return False
    body = ast.parse(text).body
    return bool(body) and all(kind(node) for node in body)


def _prints_constants(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Expr) or not isinstance(node.value, ast.Call):
        return False
    call = node.value
    if not isinstance(call.func, ast.Name) or call.func.id != "print":
        return False
    arguments = [*call.args, *(k.value for k in call.keywords)]
    return all(_is_constant(a) for a in arguments)


def _is_constant(node: ast.expr) -> bool:
    if isinstance(node, ast.JoinedStr):  # an f-string: constant when every part is
        return all(
            _is_constant(v.value if isinstance(v, ast.FormattedValue) else v) for v in node.values
        )
    return isinstance(node, ast.Constant)


def _holds_all(text: str, symbols: Sequence[str]) -> bool:
    found = set(SYMBOL.findall(text))
    return all(symbol in found for symbol in symbols)


def _holds_any_label(text: str, labels: Sequence[str]) -> bool:
    """True when ``text`` labels an answer with one of ``labels`` ("Output:", "answer=").

    A word followed by ":" counts when it is not all lower case or starts a line, so prose ("the
    mill's output: flour") does not count; followed by "=", as the paper's prompts write it, always.
    """
    words = "|".join(re.escape(label) for label in labels)
    for match in re.finditer(rf"(?<!\w)({words})[ \t]*([:=])", text, re.IGNORECASE):
        word, sign = match.group(1), match.group(2)
        before = text[: match.start()].rstrip(" \t")
        starts_line = before == "" or before.endswith("\n")
        if sign == "=" or not word.islower() or starts_line:
            return True
    return False


def marked_parts(text: str, markers: Sequence[str]) -> list[str] | None:
    """The text after each of ``markers`` up to the next one (first occurrences, in order).

    One text a marker, stripped; None where ``text`` does not hold them in that order.
    """
    starts: list[tuple[int, int]] = []
    position = 0
    for marker in markers:
        found = text.find(marker, position)
        if found < 0:
            return None
        starts.append((found, found + len(marker)))
        position = found + len(marker)
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return [text[body:end].strip() for (_, body), end in zip(starts, ends, strict=True)]


def copied_from_marker(input_text: str, output: str, markers: Sequence[str], source: str) -> bool:
    """True when ``output`` is copied from the text after ``source`` and from no other part.

    "Other part" counts whole words ("5" is not in "Super Bowl 50"); the text before the first
    marker is a part too.
    """
    parts = marked_parts(input_text, markers)
    if parts is None or source not in markers:
        return False
    own = list(markers).index(source)
    if squash(output) not in squash(parts[own]):
        return False
    words = _words(output)
    first = input_text.find(markers[0]) if markers else 0
    others = [input_text[:first], *(text for i, text in enumerate(parts) if i != own)]
    return bool(words) and not any(_holds_run(_words(other), words) for other in others)


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def _holds_run(words: Sequence[str], run: Sequence[str]) -> bool:
    """True when ``run`` is a contiguous run of ``words``."""
    size = len(run)
    return any(list(words[i : i + size]) == list(run) for i in range(len(words) - size + 1))


def _in_order(text: str, markers: Sequence[str]) -> bool:
    return marked_parts(text, markers) is not None


def _common_markers(inputs: Sequence[str]) -> tuple[str, ...]:
    """Markers in every input, in the order of the first input's first occurrences."""
    first = [m + ":" for m in dict.fromkeys(_MARKER.findall(inputs[0]))]
    common = [m for m in first if all(m in text for text in inputs[1:])]
    while common and not all(_in_order(text, common) for text in inputs):
        common.pop()  # keep the longest ordered run that every input agrees on
    return tuple(common)


def _common_prefix_pattern(inputs: Sequence[str]) -> str:
    """The longest shared start (digits as any digit), up to a symbol, as a pattern; or ""."""
    shapes = [shape_pieces(text) for text in inputs]
    length = 0
    while all(len(s) > length for s in shapes) and len({s[length] for s in shapes}) == 1:
        length += 1
    pieces = shapes[0][:length]
    # End after the last symbol: a shared "The " is chance, a shared "[Posted: dddd-dd-dd]" is not.
    ends = [i + 1 for i, piece in enumerate(pieces) if _is_symbol_piece(piece)]
    if not ends or ends[-1] < MIN_PREFIX_CHARS:
        return ""
    return compact("".join(pieces[: ends[-1]]))


def _is_symbol_piece(piece: str) -> bool:
    char = piece[-1]
    return piece != r"\d" and not char.isalnum() and not char.isspace() and char != "_"


def _literals(outputs: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Symbols every output holds except the repeated ones ("N/A"), and those repeated ones."""
    counts = Counter(outputs)
    fixed = tuple(o for o in counts if counts[o] > 1)
    rest = [o for o in outputs if o not in fixed]
    if len(rest) < MIN_LITERAL_OUTPUTS:
        return (), ()
    symbols = [set(SYMBOL.findall(o)) for o in rest]
    common = sorted(set.intersection(*symbols)) if symbols else []
    return (tuple(common), fixed) if common else ((), ())


def _coerce(field: str, kind: Any, value: Any) -> Any:
    kind = kind if isinstance(kind, str) else str(kind)
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidInput(field, "must be true or false")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(field, "must be a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise InvalidInput(field, "must be a string")
        return value
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(field, "must be a list of strings")
    return tuple(value)


def _starts_with(text: str, kinds: tuple[str, ...]) -> bool:
    stripped = text.strip()
    return bool(stripped) and scripts.start_kind(stripped[0]) in kinds


def _start_kinds(inputs: Sequence[str]) -> tuple[str, ...]:
    """What inputs may start with, when every one starts with a letter or digit; or ().

    A digit always may ("2つのリストを結合する": 5 of MCoNaLa's 105 dev inputs, none of its
    prompt's demonstrations): it belongs to no writing system.
    """
    kinds = {"digit"}
    for text in inputs:
        first = scripts.start_kind(text[:1])
        if not first:
            return ()
        kinds.add(first)
        kinds.update(scripts.script_of(ch) for ch in text if ch.isalpha())
    if not kinds <= scripts.START_RANGES.keys():
        return ()  # a writing system without ranges: no rule rather than a wrong one
    return tuple(k for k in scripts.START_RANGES if k in kinds)
