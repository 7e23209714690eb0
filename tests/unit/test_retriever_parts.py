from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from p2m.common.code_output import code_language
from p2m.common.errors import InvalidInput, NotFound
from p2m.common.types import Example, TaskSpec
from p2m.retriever.bm25 import BM25, tokenize
from p2m.retriever.catalog import Catalog, ModelEntry, load_datasets, load_models
from p2m.retriever.loaders import load_local, locate, safe_folder_name
from p2m.retriever.model_search import (
    LocalModel,
    ModelConstraints,
    ModelSearch,
    architecture_of,
    is_code_model,
)
from p2m.retriever.prepare import (
    ColumnChoice,
    PrepareOptions,
    check_person_choice,
    demo_fit,
    split_pool,
    to_examples,
)


def test_bm25_ranks_matching_documents_first():
    index = BM25(["the cat sat on the mat", "dogs chase cats", "stock market prices fell"])
    scores = index.scores("cat on a mat")
    assert scores.argmax() == 0
    assert scores[2] == 0
    assert tokenize("The Cat, the HAT!") == ["cat", "hat"]


def test_bm25_prefers_rare_terms():
    index = BM25(["apple banana", "apple cherry", "apple durian"])
    scores = index.scores("apple cherry")
    assert scores.argmax() == 1


def _write(path: Path, rows: list[dict], gz: bool = True) -> Path:
    opener = gzip.open if gz else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def test_catalogs_load_with_optional_fields(tmp_path: Path):
    path = _write(
        tmp_path / "d.jsonl.gz",
        [
            {"name": "a", "description": "first"},
            {"name": "b", "description": "second", "task_categories": ["qa"], "downloads": None},
        ],
    )
    catalog = load_datasets(path)
    assert [e.name for e in catalog.records] == ["a", "b"]
    assert catalog.records[1].task_categories == ("qa",)
    assert len(catalog.sha256) == 64
    models = load_models(_write(tmp_path / "m.jsonl", [{"model_id": "x/y"}], gz=False))
    assert models.records[0].model_id == "x/y"


def test_catalog_errors(tmp_path: Path):
    with pytest.raises(NotFound):
        load_datasets(tmp_path / "absent.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"description": "no name"}\n')
    with pytest.raises(InvalidInput, match="no name"):
        load_datasets(bad)
    bad.write_text("not json\n")
    with pytest.raises(InvalidInput, match="not JSON"):
        load_datasets(bad)


def test_local_loaders(tmp_path: Path):
    csv_dir = tmp_path / "csvdata"
    csv_dir.mkdir()
    (csv_dir / "train.csv").write_text('text,label\n"hello, world",greet\nbye,part\n')
    (csv_dir / "test.csv").write_text("text,label\nhi,greet\n")
    loaded = load_local(csv_dir)
    assert loaded.columns == ("text", "label")
    assert {k: len(v) for k, v in loaded.splits.items()} == {"train": 2, "test": 1}
    assert loaded.splits["train"][0]["text"] == "hello, world"
    parallel = tmp_path / "par"
    parallel.mkdir()
    (parallel / "train.en.000").write_text("a cat\na dog\n")
    (parallel / "train.ja.000").write_text("猫\n犬\n")
    (parallel / "dev.en").write_text("a bird\n")
    (parallel / "dev.ja").write_text("鳥\n")
    loaded = load_local(parallel)
    assert loaded.splits["train"] == [{"en": "a cat", "ja": "猫"}, {"en": "a dog", "ja": "犬"}]
    assert loaded.splits["validation"] == [{"en": "a bird", "ja": "鳥"}]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NotFound):
        load_local(empty)


@pytest.mark.parametrize(
    ("name", "content"),
    [("rows.json", b"not json"), ("rows.jsonl", b'{"a": 1}\n{oops\n'), ("rows.csv", b"\xff\xfe")],
)
def test_files_that_are_no_table_are_refused_naming_the_field(
    tmp_path: Path, name: str, content: bytes
):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInput) as caught:
        load_local(tmp_path / name)
    assert caught.value.field == "dataset.name" and name in caught.value.problem


@pytest.mark.parametrize("name", ["../etc", "/abs", "a/../b", "a\\b", "x\x00y", "", "a//b"])
def test_dataset_names_cannot_escape(name: str):
    with pytest.raises(InvalidInput):
        safe_folder_name(name)


def test_locate_maps_hub_names_to_folders(tmp_path: Path):
    (tmp_path / "org--data").mkdir()
    assert locate("org/data", tmp_path) == tmp_path / "org--data"
    assert locate("other", tmp_path) is None


BANK = TaskSpec(
    "Classify a bank customer's message into an intent.",
    (Example("I still have not received my new card.", "card_arrival"),),
)


def _bank(tmp_path: Path):
    folder = tmp_path / "bank"
    folder.mkdir()
    rows = [
        "text,category",
        "Where is my new card? It has been a week.,card_arrival",
        "How do I top up by bank transfer from my account?,top_up_by_bank_transfer",
    ]
    (folder / "train.csv").write_text("\n".join(rows) + "\n")
    return load_local(folder)


def test_person_choice_is_validated(tmp_path: Path):
    data = _bank(tmp_path)
    assert check_person_choice(data, [], "") is None
    choice = check_person_choice(data, ["text"], "category")
    assert choice is not None and choice.person_chosen
    with pytest.raises(InvalidInput, match="'txt'") as info:
        check_person_choice(data, ["txt"], "category")
    assert info.value.field == "input_columns"
    with pytest.raises(InvalidInput) as info:
        check_person_choice(data, ["text"], "text")
    with pytest.raises(InvalidInput):
        check_person_choice(data, ["text"], "")


def test_demonstrations_tell_which_way_round(tmp_path: Path):
    data = _bank(tmp_path)
    right = demo_fit(data, ["text"], "category", BANK)
    wrong = demo_fit(data, ["category"], "text", BANK)
    assert right > wrong + 0.5


def test_rows_become_examples_and_splits():
    rows = [
        {"q": "why?", "c": "because", "a": "x"},
        {"q": "", "c": "", "a": "y"},
        {"q": "who", "c": "me", "a": {"text": ["me"], "answer_start": [0]}},
    ]
    choice = ColumnChoice(("q", "c"), "a", "", True, True)
    examples, dropped = to_examples(rows, choice)
    assert examples[0] == Example("q: why?\nc: because", "x")
    assert examples[1].output == "me"
    assert dropped == 1
    pool = [Example(str(i), str(i)) for i in range(100)]
    splits = split_pool(pool, PrepareOptions(max_rows=50, seed=3))
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "validation": 5, "test": 5}
    assert split_pool(pool, PrepareOptions(max_rows=50, seed=3)) == splits
    assert len({e.input for v in splits.values() for e in v}) == 50


def test_architecture_hints():
    assert architecture_of(ModelEntry("t", "", architecture_guess="t5")) == "encoder-decoder"
    assert architecture_of(ModelEntry("g", "", architecture_guess="gpt2")) == "decoder-only"
    assert architecture_of(ModelEntry("p", "", pipeline_tag="summarization")) == "encoder-decoder"
    assert architecture_of(ModelEntry("u", "")) == ""


def _search(hub: bool) -> ModelSearch:
    catalog = Catalog(
        Path("x"),
        "0" * 64,
        (
            ModelEntry(
                "huge/t5",
                "t5 model for date normalization",
                downloads=99,
                size_bytes=40_000_000_000,
                architecture_guess="t5",
            ),
            ModelEntry(
                "alpha/t5",
                "t5 model for date normalization",
                downloads=50,
                size_bytes=300_000_000,
                architecture_guess="t5",
                license=("mit",),
            ),
            ModelEntry(
                "gamma/t5",
                "t5 model for date normalization",
                downloads=5,
                size_bytes=300_000_000,
                architecture_guess="t5",
            ),
            ModelEntry("vision/vit", "image classification", architecture_guess="vit"),
        ),
    )
    local = [
        LocalModel(
            "local/smol", "small chat model for dates", "decoder-only", 1, "apache-2.0", "/p"
        )
    ]
    return ModelSearch(catalog, local, hub_reachable=hub)


def test_model_ranking_constraints_and_skips():
    search = _search(hub=True)
    models, skipped = search.rank("date normalization model", ModelConstraints(), top_k=2)
    assert [m.model_id for m in models] == ["alpha/t5", "gamma/t5"]  # downloads break the tie
    assert [(m.model_id, m.skip_reason.split(":")[0]) for m in skipped] == [
        ("huge/t5", "too large")
    ]
    offline = _search(hub=False)
    models, skipped = offline.rank("date normalization model", ModelConstraints(), top_k=1)
    assert [m.model_id for m in models] == ["local/smol"]
    assert all("not resolvable" in m.skip_reason for m in skipped if m.model_id != "huge/t5")
    licensed = search.rank("date", ModelConstraints(licenses=("MIT",)), top_k=1)[0]
    assert [m.model_id for m in licensed] == ["alpha/t5"]


@pytest.mark.parametrize(
    ("constraints", "field"),
    [
        (ModelConstraints(architectures=("rnn",)), "constraints.architectures"),
        (ModelConstraints(languages=("eng",)), "constraints.languages"),
        (ModelConstraints(max_size_bytes=-1), "constraints.max_size_bytes"),
    ],
)
def test_bad_constraints(constraints: ModelConstraints, field: str):
    with pytest.raises(InvalidInput) as info:
        constraints.validate()
    assert info.value.field == field


def _multilingual_search(local_languages: tuple[str, ...], hub: bool = True) -> ModelSearch:
    english = ModelEntry(
        "en/t5",
        "t5 model for code generation",
        downloads=90,
        size_bytes=300_000_000,
        license=("mit",),
        language=("en",),
        architecture_guess="t5",
    )
    multilingual = ModelEntry(
        "multi/mt5",
        "mt5 model",
        downloads=10,
        size_bytes=1_200_000_000,
        language=("multilingual",),
        architecture_guess="mt5",
    )
    coder = LocalModel(
        "local/coder",
        "code generation chat",
        "decoder-only",
        1,
        "apache-2.0",
        "/p",
        local_languages,
    )
    catalog = Catalog(Path("x"), "0" * 64, (english, multilingual))
    return ModelSearch(catalog, [coder], hub_reachable=hub)


def test_a_japanese_task_prefers_a_model_that_states_japanese():
    query = "t5 model for code generation"
    search = _multilingual_search(("en", "zh"))
    english, _ = search.rank(query, ModelConstraints(), top_k=2)
    assert english[0].model_id == "en/t5"
    assert "languages: en" in english[0].fit_reason
    assert "0.30 GB under the 3.0 GB cap" in english[0].fit_reason
    japanese, _ = search.rank(query, ModelConstraints(), top_k=2, language="ja")
    assert [m.model_id for m in japanese] == ["multi/mt5", "en/t5"]
    assert "states the task's language (ja)" in japanese[0].fit_reason
    assert "from the hub" in japanese[0].fit_reason
    # Where no model within reach states it, the order stays and the reason says so.
    offline = _multilingual_search(("en", "zh"), hub=False)
    only, _ = offline.rank(query, ModelConstraints(), top_k=1, language="ja")
    assert only[0].model_id == "local/coder"
    assert "no model within reach states the task's language (ja)" in only[0].fit_reason
    assert "in the local model store" in only[0].fit_reason
    # Two that state it keep their own order: the local coder matches the query better.
    both = _multilingual_search(("en", "ja")).rank(query, ModelConstraints(), 2, language="ja")[0]
    assert [m.model_id for m in both] == ["local/coder", "multi/mt5"]


def test_a_shipped_model_not_imported_yet_is_offered_after_the_stored_ones():
    shipped = LocalModel(
        "ship/coder", "code generation chat", "decoder-only", 1, "apache-2.0", "", shipped=True
    )
    stored = LocalModel("local/smol", "small chat model", "decoder-only", 1, "apache-2.0", "/p")
    search = ModelSearch(None, [shipped, stored], hub_reachable=False)
    constraints = ModelConstraints(only_resolvable=True)
    models, _ = search.rank("code generation chat", constraints, 2)
    assert [m.model_id for m in models] == ["local/smol", "ship/coder"]  # despite its score
    assert models[1].score > models[0].score
    coder = models[1]
    assert coder.resolvable and not coder.local_path
    assert "shipped with p2m: imported into the local model store on first use" in (
        coder.fit_reason
    )
    (only,), _ = ModelSearch(None, [shipped], hub_reachable=False).rank("code", constraints, 1)
    assert only.model_id == "ship/coder"  # the only one within reach


def test_an_imported_shipped_alternative_ranks_as_before_its_import():
    imported = LocalModel(
        "ship/coder",
        "code generation chat",
        "decoder-only",
        1,
        "apache-2.0",
        "/q",
        alternative=True,
    )
    stored = LocalModel("local/smol", "small chat model", "decoder-only", 1, "apache-2.0", "/p")
    search = ModelSearch(None, [imported, stored], hub_reachable=False)
    models, _ = search.rank("code generation chat", ModelConstraints(only_resolvable=True), 2)
    assert [m.model_id for m in models] == ["local/smol", "ship/coder"]
    assert models[1].local_path == "/q" and "in the local model store" in models[1].fit_reason


def test_the_shipped_alternatives_are_all_but_the_default_student():
    from p2m.common.model_store import DEFAULT_STUDENT, ModelStore, shipped_alternatives

    store = ModelStore(Path("/nonexistent"))
    default = store.shipped_entry(DEFAULT_STUDENT).name
    assert default == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert shipped_alternatives() == {"Qwen/Qwen2.5-Coder-0.5B-Instruct"}


def _retriever_with_local_copy(tmp_path: Path, hub_offline: bool = True):
    from p2m.common.artifacts import ArtifactStore
    from p2m.common.settings import Settings
    from p2m.local_llm.provider import LLMProvider
    from p2m.retriever.core import Retriever

    catalogs, datasets = tmp_path / "catalogs", tmp_path / "datasets"
    catalogs.mkdir()
    _write(
        catalogs / "hf_datasets.jsonl",
        [
            {"name": "org/bank", "description": "bank customer messages labelled by intent"},
            {"name": "far", "description": "recipes for cakes"},
        ],
        gz=False,
    )
    (datasets / "org--bank").mkdir(parents=True)
    (datasets / "org--bank" / "train.csv").write_text("text,category\nWhere is my card?,card\n")
    settings = Settings(
        data_dir=tmp_path / "data",
        catalog_dir=str(catalogs),
        datasets_dir=str(datasets),
        hub_offline=hub_offline,
    )
    return Retriever(settings, LLMProvider(settings), ArtifactStore(tmp_path / "artifacts"))


def test_the_local_copy_is_found_once_for_preview_load_and_can_load(tmp_path: Path):
    import asyncio

    core = _retriever_with_local_copy(tmp_path)
    assert core.can_load("org/bank")
    assert not core.can_load("far")  # no copy, hub offline
    assert not core.can_load("../escape")  # not a name: no error, just not loadable
    loaded = asyncio.run(core.load_dataset("org/bank", ""))
    assert loaded.num_rows == 1
    with pytest.raises(InvalidInput, match=r"dataset\.name"):
        asyncio.run(core.load_dataset("../escape", ""))
    with pytest.raises(NotFound, match="no local copy"):
        asyncio.run(core.load_dataset("far", ""))
    found = asyncio.run(core.find_datasets("bank intent", top_k=2))
    assert found is not None and found.hits[0].entry.name == "org/bank"
    assert [p.source for p in found.previews] == ["local", ""]
    unseen = asyncio.run(core.find_datasets("bank intent", top_k=2, with_previews=False))
    assert unseen is not None and unseen.previews == []
    assert [h.entry.name for h in unseen.hits] == [h.entry.name for h in found.hits]


@pytest.mark.parametrize(
    ("model_id", "code"),
    [
        ("Qwen/Qwen2.5-Coder-0.5B-Instruct", True),
        ("Salesforce/codet5-small", True),
        ("bigcode/starcoder", True),
        ("codellama/CodeLlama-7b-hf", True),
        ("sentence-transformers/bert-encoder", False),
        ("org/decoder-lm", False),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),
        ("code-org/t5-small", False),  # the owner's name does not make the model a code one
    ],
)
def test_a_code_model_is_known_by_its_name(model_id: str, code: bool):
    assert is_code_model(model_id) is code


def _stored(name: str, card: str, languages: tuple[str, ...] = (), **flags: bool) -> LocalModel:
    return LocalModel(name, card, "decoder-only", 1, "apache-2.0", "/p", languages, **flags)


def test_a_code_task_prefers_a_code_model_even_the_shipped_alternative():
    coder = _stored("ship/Tiny-Coder", "code model", alternative=True)
    smol = _stored("local/smol", "small chat model")
    search = ModelSearch(None, [coder, smol], hub_reachable=False)
    constraints = ModelConstraints(only_resolvable=True)
    plain, _ = search.rank("small chat model", constraints, 2)
    assert [m.model_id for m in plain] == ["local/smol", "ship/Tiny-Coder"]
    assert not any("code model" in m.fit_reason for m in plain)
    code, _ = search.rank("small chat model", constraints, 2, code="python")
    assert [m.model_id for m in code] == ["ship/Tiny-Coder", "local/smol"]
    assert "a code model, for a task whose outputs are python code" in code[0].fit_reason
    # A top_k of one still looks past the first match for the code model.
    (only,), _ = search.rank("small chat model", constraints, 1, code="python")
    assert only.model_id == "ship/Tiny-Coder"
    # With no code model within reach, the order stays and the reason says so.
    (alone,), _ = ModelSearch(None, [smol], hub_reachable=False).rank(
        "chat", constraints, 1, code="python"
    )
    assert "no code model within reach for the task's python outputs" in alone.fit_reason


def test_a_task_in_japanese_with_code_outputs_ranks_a_model_meeting_both_first():
    models = [
        _stored("a/chat-ja", "model", ("ja",)),
        _stored("b/Coder", "model", ("en",)),
        _stored("c/Coder-ja", "model", ("ja",)),
    ]
    ranked, _ = ModelSearch(None, models, hub_reachable=False).rank(
        "chat model", ModelConstraints(), 3, language="ja", code="python"
    )
    assert ranked[0].model_id == "c/Coder-ja"
    assert {m.model_id for m in ranked[1:]} == {"a/chat-ja", "b/Coder"}


def test_the_code_language_comes_from_the_instruction_and_the_outputs():
    python = TaskSpec(
        "Pythonで1行のコードを生成してください。",
        (Example("リストを逆順にする", "x[::-1]"), Example("ファイルを開く", "open('f')")),
    )
    assert code_language(python) == "python"
    # Words that parse as Python are no code; an instruction that names no language finds none.
    words = TaskSpec("Name the topic; Python is one.", (Example("a", "Science"),) * 2)
    assert code_language(words) == ""
    unnamed = TaskSpec("Write the code.", (Example("reverse", "x[::-1]"),) * 2)
    assert code_language(unnamed) == ""
