"""Invariants learned from demonstrations, and held against examples."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from p2m.common.closed_set import closest_label
from p2m.common.code_output import is_code
from p2m.common.errors import InvalidInput
from p2m.common.types import Example, TaskSpec
from p2m.generator.invariants import Invariants, infer
from p2m.generator.labels import label_counts, label_of, quota, targets
from p2m.generator.options import GenerateOptions, generation_key
from p2m.generator.prompts import new_input_messages, rule_lines
from p2m.generator.scripts import common_scripts, describe, keeps_scripts, script_of, scripts_used
from p2m.generator.service import invariants_from_pb, invariants_to_pb

SQUAD = TaskSpec(
    "Answer the question from the context.",
    (
        Example(
            "Question: Where was it played? Context: It was played in Santa Clara.", "Santa Clara"
        ),
        Example(
            "Question: What river runs through Warsaw? Context: The Vistula River does.",
            "Vistula River",
        ),
        Example("Question: Which continent? Context: Lands in  Europe and Asia.", "europe"),
    ),
)
TEMPORAL = TaskSpec(
    "Normalise the dates.",
    (
        Example("[Posted: 1998-09-07] Revenues dropped last year.", "last year == 1997"),
        Example("[Posted: 2013-09-27] Eat!", "N/A"),
        Example("[Posted: 2022-05-17] From July 1st.", "July 1st == 2022-07-01"),
        Example("[Posted: 2014-07-11] So out of place.", "N/A"),
        Example("[Posted: 2013-03-22] In 2009-2010.", "2009 == 2009 | 2010 == 2010"),
    ),
)
SENTIMENT = TaskSpec(
    'Answer "positive" or "negative".',
    (
        Example("Great battery.", "positive"),
        Example("Broke in a week.", "negative"),
        Example("Works flawlessly.", "positive"),
        Example("A waste of money.", "negative"),
    ),
)
CODE = TaskSpec(
    "Write one line of Python.",
    original_instruction="Pythonで1行のコードを生成してください。",
    demonstrations=(
        Example("単語を数える", "Counter(word_list)"),
        Example("設定を表示する", "print(settings.DATABASES)"),
        Example("見やすく表示する", "pprint.pprint(li)"),
    ),
)


def test_squad_markers_in_order_and_the_answer_a_span_of_the_input():
    rules = infer(SQUAD)
    assert rules.input_prefix == "Question:"
    assert rules.input_markers == ("Question:", "Context:")
    assert rules.output_in_input and rules.output_one_line
    assert not rules.output_choices and not rules.output_language
    good = Example("Question: Who won? Context: Denver won the game.", "Denver")
    assert rules.violation(good) is None
    assert rules.violation(Example("What is the capital of France?", "Paris")) == "input_prefix"
    swapped = Example("Question: Who? Context: x. Question: again?", "x")
    assert rules.violation(swapped) is None  # both markers, in order
    no_context = Example("Question: Who won? The Broncos did.", "Broncos")
    assert rules.violation(no_context) == "input_markers"
    assert rules.violation(Example(good.input, "Paris")) == "output_in_input"
    assert rules.kept_outputs(good.input, ["Paris", "", "Denver", "denver"]) == ["Denver", "denver"]


def test_squad_answers_come_from_the_context_not_the_question_where_a_person_says_so():
    assert infer(SQUAD).output_from_marker == ""  # given, never learned
    rules = replace(infer(SQUAD), output_from_marker="Context:")
    assert "every output is copied from the text after 'Context:' alone" in rules.describe()
    # Qwen2.5-Coder-0.5B's: the answer repeats the question's words.
    echoed = Example("Question: Which country did India play? Context: India beat Chile.", "India")
    assert rules.violation(echoed) == "output_from_marker"
    assert rules.violation(Example(echoed.input, "Chile")) is None
    assert rules.kept_outputs(echoed.input, ["India", "Chile"]) == ["Chile"]
    # Whole words: "5" is not in "Super Bowl 50", "Clara" is not "Santa Clara".
    numbered = "Question: Who scored in Super Bowl 50? Context: 5 players did, Santa Clara said."
    assert rules.violation(Example(numbered, "5")) is None
    assert rules.violation(Example(numbered, "Super Bowl 50")) == "output_from_marker"
    assert rules.violation(Example(numbered, "players")) is None
    # Text before the first marker counts as a part of its own.
    led = "Chile. " + echoed.input
    assert rules.output_violation(led, "Chile") == "output_from_marker"
    # A person's rules name one of their own markers.
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"input_markers": ["Question:"], "output_from_marker": "Context:"})
    assert info.value.field == "invariants.output_from_marker"


def test_inputs_end_a_sentence_when_every_demonstrations_input_does():
    rules = infer(SQUAD)
    assert rules.input_sentence_end
    # Qwen2.5-0.5B's SQuAD inputs, cut where it wrote a raw quote inside its JSON string.
    cut = "Question: Why? Context: As this was the 50th Super Bowl, the league emphasized the"
    assert rules.violation(Example(cut, "the league")) == "input_sentence_end"
    quoted = 'Question: Why? Context: The league emphasized the "golden anniversary."'
    assert rules.violation(Example(quoted, "golden anniversary")) is None
    bracketed = "Question: Which? Context: It ran (1997-2002)."
    assert rules.violation(Example(bracketed, "1997-2002")) is None
    assert "every input ends a sentence" in rules.describe()
    # One demonstration that ends otherwise, or none at all, learns nothing.
    assert infer(TEMPORAL).input_sentence_end
    tagged = Example("[Posted: 2020-01-02] Thanks @someone", "N/A")
    assert not infer(
        TaskSpec(TEMPORAL.instruction, (*TEMPORAL.demonstrations[:3], tagged))
    ).input_sentence_end
    assert not infer(CODE).input_sentence_end
    japanese = TaskSpec(
        "要約する。", (Example("東京に行った。", "東京"), Example("雨だった\uff01", "雨"))
    )
    assert infer(japanese).input_sentence_end
    assert infer(japanese).violation(Example("京都に行った」", "京都")) == "input_sentence_end"


def test_an_input_that_labels_its_own_answer_breaks_a_rule_no_demonstration_breaks():
    rules = infer(SQUAD)
    assert rules.input_without_labels == ("output", "answer")
    start = "Question: What grows here? Context: Farmers grow corn."
    multi_line = replace(rules, input_one_line=False)
    assert multi_line.violation(Example(start + "\n\nOutput: Corn", "Corn")) == (
        "input_without_labels"
    )
    assert rules.violation(Example(start + ' output="Corn"', "Corn")) == "input_without_labels"
    assert rules.violation(Example(start + " ANSWER: corn", "corn")) == "input_without_labels"
    # Prose: a lower-case "output:" inside a sentence, or a longer word, labels nothing.
    assert rules.violation(Example(start + " The mill's output: corn.", "corn")) is None
    assert rules.violation(Example(start + " Outputs: corn.", "corn")) is None
    # A demonstration whose input labels an answer lets inputs do so too.
    labelled = Example("Question: Which? Context: Answer: the red one.", "the red one")
    assert infer(
        TaskSpec(SQUAD.instruction, (*SQUAD.demonstrations, labelled))
    ).input_without_labels == ("output",)


def test_temporal_posted_date_prefix_and_the_output_form_or_n_a():
    rules = infer(TEMPORAL)
    assert rules.input_prefix == r"\[Posted: \d{4}-\d{2}-\d{2}\]"
    assert rules.output_literals == ("==",) and rules.output_fixed == ("N/A",)
    assert not rules.output_choices
    post = "[Posted: 2001-02-03] It rained yesterday."
    assert rules.violation(Example(post, "yesterday == 2001-02-02")) is None
    assert rules.violation(Example(post, "N/A")) is None
    assert rules.violation(Example(post, "2001-02-02")) == "output_literals"
    assert rules.violation(Example("It rained yesterday.", "N/A")) == "input_prefix"
    assert rules.violation(Example("[Posted: 2001-2-3] x", "N/A")) == "input_prefix"


def test_keyed_items_quote_the_input_and_keep_the_demonstrations_value_shapes():
    rules = infer(TEMPORAL)
    assert rules.output_item_separator == "|" and rules.output_keys_in_input
    assert rules.output_value_shapes == (r"\d{4}", r"\d{4}-\d{2}-\d{2}")
    post = "[Posted: 2024-05-31] Budget deficit at $5 million since last year, up in May."
    assert rules.violation(Example(post, "last year == 2023 | May == 2024-05-01")) is None
    assert rules.violation(Example(post, "LAST  year == 2023")) is None  # case and spacing aside
    assert rules.violation(Example(post, "N/A")) is None
    assert rules.violation(Example(post, "Paris == 2024-05-31")) == "output_keys_in_input"
    assert rules.violation(Example(post, "budget deficit == 5 million")) == "output_value_shapes"
    assert rules.violation(Example(post, "May == 2024-Q2")) == "output_value_shapes"
    # Items that cannot be read as key == value break the first rule held.
    assert rules.violation(Example(post, "May == 2024-05-01 | 2024-05-02")) == (
        "output_keys_in_input"
    )
    assert rules.violation(Example(post, "May == 2024-05 == 2024")) == "output_keys_in_input"
    lines = rules.describe()
    assert "every output is items of key '==' value, joined by '|'" in lines
    assert "every item's key is quoted from its input" in lines


def test_the_generation_key_names_item_rules_only_where_they_are_held(monkeypatch):
    from p2m.generator import options as generator_options

    keys = {t: generation_key(t, GenerateOptions(), "m") for t in (TEMPORAL, SQUAD)}
    learned = generator_options.infer
    monkeypatch.setattr(  # as before the item rules: the same rules less those
        generator_options,
        "infer",
        lambda task, encoder=None: replace(
            learned(task, encoder),
            output_item_separator="",
            output_keys_in_input=False,
            output_value_shapes=(),
        ),
    )
    assert generation_key(TEMPORAL, GenerateOptions(), "m") != keys[TEMPORAL]
    assert generation_key(SQUAD, GenerateOptions(), "m") == keys[SQUAD]  # other tasks keep theirs


def test_item_rules_only_where_every_demonstration_keeps_them():
    named = TaskSpec(  # values in words: no shape; a key the input lacks: no key rule
        "Tag the entities.",
        (
            Example("Alice met Bob.", "Alice == PER | Bob == PER"),
            Example("Paris in May.", "Paris == LOC"),
            Example("Acme hired Eve.", "company == ORG | Eve == PER"),
        ),
    )
    rules = infer(named)
    assert rules.output_literals == ("==",) and rules.item_rules.empty
    assert rules.output_item_separator == "" and not rules.output_keys_in_input
    single = TaskSpec(  # one item per output; every value a year, keys from the input
        "Year of each event.",
        (
            Example("The war ended in 1945.", "war == 1945"),
            Example("A flood hit in 1927.", "flood == 1927"),
            Example("The fire of 1666.", "fire == 1666"),
        ),
    )
    rules = infer(single)
    assert (rules.output_item_separator, rules.output_value_shapes) == ("", (r"\d{4}",))
    assert rules.violation(Example("Rome fell in 476.", "Rome == 476")) == "output_value_shapes"
    two_items = Example("War in 1914, peace in 1918.", "War == 1914 | peace == 1918")
    assert rules.violation(two_items) == "output_keys_in_input"  # one item per output
    assert infer(SQUAD).item_rules.empty and infer(CODE).item_rules.empty


def test_repeating_short_outputs_are_a_closed_set():
    rules = infer(SENTIMENT)
    assert rules.output_choices == ("positive", "negative")
    assert rules.violation(Example("Fine.", "Negative")) is None  # case aside
    assert rules.violation(Example("Fine.", "neutral")) == "output_choices"
    assert not rules.input_prefix and not rules.input_markers


def test_code_outputs_must_parse_when_the_instruction_names_the_language():
    rules = infer(CODE)
    assert rules.output_language == "python" and rules.output_one_line
    assert rules.violation(Example("辞書", "sorted(d.items())")) is None
    assert rules.violation(Example("辞書", "Stack Overflow Japanese question")) == "output_language"
    assert rules.violation(Example("辞書", "a = 1\nb = 2")) == "output_one_line"


def test_a_code_output_must_do_more_than_import_unless_a_demonstration_only_imports():
    rules = infer(CODE)
    assert rules.output_not_only_imports and not infer(SQUAD).output_not_only_imports
    keeps = "ファイルを一覧する"
    assert rules.violation(Example(keeps, "import os")) == "output_not_only_imports"
    assert rules.violation(Example(keeps, "from os import path, sep")) == (
        "output_not_only_imports"
    )
    assert rules.violation(Example(keeps, "import os; os.listdir('.')")) is None
    importing = Example("JSONを使う", "import json")
    task = replace(CODE, demonstrations=(*CODE.demonstrations, importing))
    assert not infer(task).output_not_only_imports


def test_a_code_output_must_do_more_than_print_text_unless_a_demonstration_does():
    rules = infer(CODE)
    assert rules.output_not_only_prints_text and not infer(SQUAD).output_not_only_prints_text
    bank = "銀行の情報を表示する"
    for echo in ('print("銀行の情報を表示します。")', "print('a', 3, sep='')", 'print(f"{3} 件")'):
        assert rules.violation(Example(bank, echo)) == "output_not_only_prints_text", echo
    for work in ("print(settings.DATABASES)", 'print(f"{name}")', 'print("total:", len(x))'):
        assert rules.violation(Example(bank, work)) is None, work
    assert rules.violation(Example(bank, 'x = 1; print("done")')) is None
    greeting = Example("挨拶を表示する", 'print("こんにちは")')
    task = replace(CODE, demonstrations=(*CODE.demonstrations, greeting))
    assert not infer(task).output_not_only_prints_text
    assert "no output only prints text written into it" in infer(CODE).describe()


def test_japanese_one_line_inputs_and_code_that_is_more_than_words_that_parse():
    rules = infer(CODE)
    assert rules.input_one_line and rules.input_scripts == ("han", "kana")
    assert rules.output_scripts == ("latin",)
    keeps = Example("リストを並べ替える", "sorted(li)")
    assert rules.violation(keeps) is None
    assert rules.violation(Example("from collections import Counter", "Counter(x)")) == (
        "input_scripts"
    )
    assert rules.violation(Example("単語を\n数える", "Counter(x)")) == "input_one_line"
    # English that parses as Python (a name, a comparison of names) is no code.
    assert rules.violation(Example(keeps.input, "Science")) == "output_language"
    assert rules.violation(Example(keeps.input, "Travel in Japan")) == "output_language"
    assert rules.violation(Example(keeps.input, "変数 = 値")) == "output_scripts"
    assert rules.violation(Example(keeps.input, 'print(li, "日本語です")')) is None  # Latin too
    assert is_code("import json", "python")  # words, a statement
    assert infer(SQUAD).input_scripts == ("latin",)
    assert infer(TEMPORAL).output_scripts == ("latin",)
    assert (
        infer(TEMPORAL).violation(
            Example(
                "[Posted: 2001-02-03] In 2009.", "2009 == 2009"
            )  # no letters: no script to keep
        )
        is None
    )


def test_writing_systems_by_letter_with_kana_as_one_and_width_aside():
    assert [script_of(c) for c in "a\uff21ひカー漢한ж"] == [
        "latin", "latin", "kana", "kana", "kana", "han", "hangul", "cyrillic",
    ]  # fmt: skip
    assert scripts_used("N/A 2009") is None  # too few letters to tell
    assert scripts_used("リスト`li`の単語を数える") == frozenset({"latin", "kana", "han"})
    assert scripts_used("print(sorted('数'))") == frozenset({"latin"})  # 1 letter in 12: no use
    assert common_scripts(["日本語です", "N/A"], min_texts=2) == ()  # one text could tell
    assert keeps_scripts("12", ("kana",)) and not keeps_scripts("abc", ("kana",))
    assert describe(("han", "kana")) == "Chinese characters (kanji) and Japanese kana"
    assert describe(("cyrillic",)) == "Cyrillic letters"


def test_a_multi_line_demonstration_input_lets_inputs_span_lines():
    task = TaskSpec(SQUAD.instruction, (*SQUAD.demonstrations, Example("Question: a?\nb", "b")))
    assert not infer(task).input_one_line
    assert infer(SQUAD).violation(Example("Question: Who?\nContext: Ann did.", "Ann")) == (
        "input_one_line"
    )


def test_nothing_is_learned_from_one_demonstration_or_from_chance():
    assert infer(TaskSpec("t", (Example("Question: a", "a"),))).empty
    free = TaskSpec(
        "Translate to French.",
        (Example("The cat", "Le chat"), Example("The dog sleeps", "Le chien dort")),
    )
    rules = infer(free)
    assert rules.input_prefix == ""  # "The " is shared by chance, with no symbol in it
    assert not rules.output_choices  # all different: an open set


def test_inputs_start_with_a_letter_of_their_writing_systems_when_every_demonstration_does():
    """A small teacher held off an input's usual first words started it with a symbol."""
    rules = infer(SENTIMENT)
    assert rules.input_starts_with == ("digit", "latin")
    assert rules.violation(Example("Lovely screen.", "positive")) is None
    for junk in (
        "# How do I top up?",
        "$100.00 is my limit.",
        "\u2714 Unable to verify.",
        "(sigh) no.",
    ):
        assert rules.violation(Example(junk, "negative")) == "input_starts_with"
    # Japanese inputs that start with kana may start with a kanji, not with a symbol.
    assert infer(CODE).input_starts_with == ("digit", "kana", "han")
    assert infer(CODE).violation(Example("2つのリストを結合する", "a + b")) is None
    assert infer(CODE).violation(Example("辞書を表示する", "print(d)")) is None
    assert infer(CODE).violation(Example("「辞書」を表示する", "print(d)")) == "input_starts_with"
    assert infer(TEMPORAL).input_starts_with == ()  # "[Posted: ...": a symbol, the prefix's job
    assert "starts with a character of: digit, latin" in "\n".join(rules.describe())


def test_json_round_trip_and_bad_rules_name_the_field():
    rules = infer(TEMPORAL)
    assert Invariants.from_json(rules.to_json()) == rules
    assert Invariants.from_json({}) == Invariants()
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"output_choices": "positive"})
    assert info.value.field == "invariants.output_choices"
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"input_prefix": "[unclosed"})
    assert info.value.field == "invariants.input_prefix"
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"output_language": "cobol"})
    assert info.value.field == "invariants.output_language"
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"input_starts_with": ["latin", "klingon"]})
    assert info.value.field == "invariants.input_starts_with"
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"output_literals": ["=="], "output_value_shapes": ["(\\d{4}"]})
    assert info.value.field == "invariants.output_value_shapes"
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"output_keys_in_input": True})
    assert info.value.field == "invariants.output_literals"
    for bad in ("0.4", 1.5, True):
        with pytest.raises(InvalidInput) as info:
            Invariants.from_json({"output_literals": ["=="], "output_key_kinds": bad})
        assert info.value.field == "invariants.output_key_kinds"
    whole = Invariants.from_json({"output_literals": ["=="], "output_key_kinds": 0})
    assert whole.output_key_kinds == 0.0 and isinstance(whole.output_key_kinds, float)
    with pytest.raises(InvalidInput) as info:
        Invariants.from_json({"no_such_rule": True})
    assert info.value.field == "invariants.no_such_rule"


def test_every_rule_survives_the_proto_round_trip():
    every_rule_set = Invariants(
        input_prefix=r"\[Posted: \d{4}",
        input_markers=("Question:", "Context:"),
        output_one_line=True,
        output_in_input=True,
        output_choices=("positive", "negative"),
        output_literals=("==",),
        output_fixed=("N/A",),
        output_language="python",
        input_one_line=True,
        input_scripts=("kana", "han"),
        output_scripts=("latin",),
        input_without_labels=("Output:",),
        output_not_only_imports=True,
        input_sentence_end=True,
        input_starts_with=("digit", "latin"),
        calendar_dates=True,
        output_fixed_alone=True,
        output_not_only_prints_text=True,
        output_item_separator="|",
        output_keys_in_input=True,
        output_value_shapes=(r"\d{4}", r"\d{4}-\d{2}"),
        output_key_kinds=0.41,
        output_from_marker="Context:",
    )
    unset = [
        f.name for f in fields(Invariants) if getattr(every_rule_set, f.name) in ("", (), False)
    ]
    assert unset == []  # a new rule is set here too
    assert invariants_from_pb(invariants_to_pb(every_rule_set)) == every_rule_set
    assert invariants_from_pb(invariants_to_pb(Invariants())) == Invariants()


def test_the_new_example_request_states_the_rules_in_words():
    rules = rule_lines(infer(TEMPORAL), TEMPORAL.demonstrations)
    assert rules[0] == 'The input starts with "[Posted: 1998-09-07]" (with its own numbers).'
    assert 'The output uses "==" as the examples do or is "N/A".' in rules
    assert 'The text before each "==" is copied word for word from the input.' in rules
    assert 'The text after each "==" is written like "1997" or "2022-07-01".' in rules
    squad = rule_lines(infer(SQUAD), SQUAD.demonstrations)
    assert squad[:5] == [
        'The input starts with "Question:".',
        'The input holds "Context:".',
        "The input is one line.",  # Latin letters go without saying
        "The input ends at the end of a sentence, with its punctuation.",
        "The output is copied word for word from the input.",
    ]
    from_context = replace(infer(SQUAD), output_from_marker="Context:")
    assert 'The output is copied word for word from the text after "Context:".' in rule_lines(
        from_context, SQUAD.demonstrations
    )
    code = rule_lines(infer(CODE), CODE.demonstrations)
    assert "The input is written in Chinese characters (kanji) and Japanese kana." in code
    assert not any("Latin" in line for line in code)
    message = new_input_messages("Normalise the dates.", TEMPORAL.demonstrations, rules)
    assert "- The output is one line." in message[-1]["content"]
    assert rule_lines(Invariants(), SQUAD.demonstrations) == []


BANKING = TaskSpec(
    "Classify the customer's message into one of these intents: card_arrival, "
    "lost_or_stolen_card, pin_blocked, exchange_rate or top_up_failed.",
    (
        Example("I am still waiting on my card?", "card_arrival"),
        Example("Someone stole my card!", "lost_or_stolen_card"),
        Example("My top-up did not go through.", "top_up_failed"),
    ),
)


def test_labels_the_instruction_lists_are_the_closed_set_even_when_each_is_shown_once():
    rules = infer(BANKING)
    assert rules.output_choices == (
        "card_arrival",
        "lost_or_stolen_card",
        "pin_blocked",
        "exchange_rate",
        "top_up_failed",
    )
    quoted = TaskSpec('Answer "positive", "neutral" or "negative".', SENTIMENT.demonstrations)
    assert infer(quoted).output_choices == ("positive", "neutral", "negative")
    # Quoted words the outputs are not (Temporal's "N/A" among dates) make no closed set.
    assert not infer(
        TaskSpec('Write "N/A" when there is no date.', TEMPORAL.demonstrations)
    ).output_choices


def test_requests_ask_for_the_scarcest_label_and_a_label_stops_at_its_quota():
    choices = ("positive", "neutral", "negative")
    counts = label_counts(["positive", "Positive!", "negative", "something else"], choices)
    assert counts == {"positive": 2, "neutral": 0, "negative": 1}
    asked = targets(choices, counts, [f"g{i}" for i in range(6)])
    assert asked.count("neutral") == 3 and asked.count("negative") == 2
    assert asked.count("positive") == 1
    assert targets(choices, counts, ["g9"]) == ["neutral"]
    assert quota(12, choices) == 6 and quota(1, choices) == 1
    intents = [f"intent_{i}" for i in range(77)]  # banking77: 1.5 x 80 / 77 rounds down to 1
    assert quota(80, intents) == 2 and quota(77, intents) == 1
    for n in range(1, 300):  # the quotas always hold the whole set
        assert quota(n, intents) * len(intents) >= n
    assert label_of(" NEGATIVE.", choices) == "negative" and label_of("meh", choices) is None


def test_an_answer_is_read_as_the_label_it_is_closest_to():
    labels = ("refund_not_showing_up", "balance_not_updated_after_cheque_or_cash_deposit", "age")
    assert closest_label("Refund_not_showing_up", labels) == "refund_not_showing_up"
    assert closest_label(" REFUND_not_showing_up ", labels) == "refund_not_showing_up"
    assert (
        closest_label("deposit_not_updated_after_cheque_or_cash_deposit", labels)
        == "balance_not_updated_after_cheque_or_cash_deposit"
    )
    assert closest_label("I cannot tell from this message.", labels) == (
        "I cannot tell from this message."
    )


def test_an_answer_with_a_label_s_words_in_another_order_is_read_as_that_label():
    """By characters these are closer to the wrong label; by words they are the right one."""
    intents = ("verify_top_up", "top_up_reverted", "card_swallowed", "lost_or_stolen_card")
    assert closest_label("reverted_top_up", intents) == "top_up_reverted"
    assert closest_label("Top-up reverted", intents) == "top_up_reverted"
    assert closest_label("card_lost", intents) == "lost_or_stolen_card"
    assert closest_label("card_swallowed_by_atm", intents) == "card_swallowed"
    assert closest_label("My card was declined at the shop.", intents) == (
        "My card was declined at the shop."
    )


def test_dates_written_year_first_are_real_where_the_demonstrations_are():
    rules = infer(TEMPORAL)
    assert (
        rules.calendar_dates and "every date written year first is a real one" in rules.describe()
    )
    assert rules.violation(Example("[Posted: 2024-02-29] Today.", "Today == 2024-02-29")) is None
    assert rules.violation(Example("[Posted: 2018-69-76] Today.", "N/A")) == "calendar_dates"
    assert rules.violation(Example("[Posted: 2024-11-30] Tomorrow.", "Tomorrow == 2024-11-31")) == (
        "calendar_dates"
    )
    assert rules.violation(Example("[Posted: 2024-11-30] In 2009-2010.", "2009 == 2009")) is None
    assert rules.violation(Example("[Posted: 2024-11-30] Soon.", "Soon == 2024-13")) == (
        "calendar_dates"
    )
    assert not infer(SQUAD).calendar_dates  # no dates shown: no rule


def test_a_repeated_output_stands_alone_where_the_demonstrations_keep_it_so():
    rules = infer(TEMPORAL)
    assert rules.output_fixed == ("N/A",) and rules.output_fixed_alone
    mixed = Example("[Posted: 1989-10-30] Down last year.", "last year == 1988 | N/A")
    assert rules.violation(mixed) == "output_fixed_alone"
    assert rules.violation(Example(mixed.input, "N/A")) is None
    shown = replace(TEMPORAL, demonstrations=(*TEMPORAL.demonstrations, mixed))
    assert not infer(shown).output_fixed_alone  # a demonstration holds it as a part
    assert Invariants.from_json(rules.to_json()) == rules
