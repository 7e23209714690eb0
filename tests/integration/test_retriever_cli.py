"""`p2m datasets ...` and `p2m models ...` as a person types them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import SENTIMENT, p2m
from tests.support import ServiceProcess


@pytest.fixture(scope="module")
def env(shared_data: Path, retriever_data_dir: Path) -> dict[str, str]:
    return {
        "P2M_CATALOG_DIR": str(shared_data / "catalogs"),
        "P2M_DATASETS_DIR": str(shared_data / "datasets"),
        "P2M_DATA_DIR": str(retriever_data_dir),
    }


def test_datasets_search_json(env: dict[str, str]):
    result = p2m(
        "datasets",
        "search",
        "--query",
        "banking customer intents",
        "--json",
        "--top-k",
        "5",
        env=env,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    hits = found["datasets"]
    assert len(hits) == 5 and found["catalog_size"] > 2000 and found["rerank"] is None
    assert {"name", "score", "matched_fields", "description", "variants"} <= set(hits[0])
    banking = next(h for h in hits if h["name"] == "banking77")
    # One family: the PolyAI mirror is a variant, not a hit of its own.
    assert "PolyAI/banking77" in banking["variants"]
    assert "PolyAI/banking77" not in [h["name"] for h in hits]
    # The preview reads the local copy: its splits and columns, a sample row.
    preview = banking["preview"]
    assert preview["source"] == "local" and preview["loadable"]
    assert preview["split_rows"]["train"] > 1000 and "test" in preview["split_rows"]
    assert {"text", "category"} <= set(preview["columns"]) and preview["sample_row"]["text"]
    assert preview["licenses"] == ["cc-by-4.0"] and not preview["gated"]


def test_datasets_search_needs_exactly_one_query(env: dict[str, str]):
    result = p2m("datasets", "search", env=env)
    assert result.returncode == 2
    assert "exactly one of --prompt-file and --query" in result.stderr


def test_datasets_search_without_catalog_says_so(tmp_path: Path):
    result = p2m(
        "datasets",
        "search",
        "--query",
        "x",
        env={"P2M_CATALOG_DIR": "", "P2M_DATA_DIR": str(tmp_path)},
    )
    assert result.returncode == 1
    assert "no dataset catalog" in result.stderr


def test_datasets_prepare_with_chosen_columns(env: dict[str, str], local_llm: ServiceProcess):
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(SENTIMENT),
        "--dataset",
        "banking77",
        "--input-columns",
        "text",
        "--output-column",
        "category",
        "--max-rows",
        "200",
        "--json",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == {"train": 160, "validation": 20, "test": 20}
    assert report["person_chosen"] and report["input_columns"] == ["text"]
    lines = (Path(report["path"]) / "train.jsonl").read_text().splitlines()
    assert len(lines) == 160 and set(json.loads(lines[0])) == {"input", "output"}


def test_datasets_prepare_rejects_an_unknown_column(env: dict[str, str], local_llm: ServiceProcess):
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(SENTIMENT),
        "--dataset",
        "banking77",
        "--input-columns",
        "txt",
        "--output-column",
        "category",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
    )
    assert result.returncode == 2
    assert "no column 'txt'" in result.stderr


def test_models_list_and_search(env: dict[str, str], local_llm: ServiceProcess, tmp_path: Path):
    listed = p2m("models", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    names = [m["name"] for m in json.loads(listed.stdout)]
    assert names == ["HuggingFaceTB/SmolLM2-135M-Instruct"]
    empty = p2m("models", "list", "--json", env={"P2M_DATA_DIR": str(tmp_path)})
    assert json.loads(empty.stdout) == []
    shown = " ".join(p2m("models", "list", env=env).stdout.split())
    assert "shipped, imported on first use" in shown and "Qwen/Qwen2.5-Coder-0.5B-Instruct" in shown
    found = p2m(
        "models",
        "search",
        "--prompt-file",
        str(SENTIMENT),
        "--json",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
    )
    assert found.returncode == 0, found.stderr
    report = json.loads(found.stdout)
    local = [(m["model_id"], bool(m["local_path"]), m["shipped"]) for m in report["models"]]
    assert local == [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", True, False),
        ("Qwen/Qwen2.5-Coder-0.5B-Instruct", False, True),  # imported on first use
    ]
    assert report["skipped"] and report["hypothetical_model_card"]


def test_interactive_prepare_shows_candidates_and_takes_none(
    env: dict[str, str], local_llm: ServiceProcess
):
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(SENTIMENT),
        "--llm-base-url",
        local_llm.base_url,
        env=env,
        stdin="none\n",
    )
    assert result.returncode == 0, result.stderr
    assert "amazon" in result.stdout.lower()  # the candidates table for a review prompt
    assert "no dataset chosen" in result.stdout


def test_interactive_prepare_takes_a_number(env: dict[str, str], local_llm: ServiceProcess):
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(SENTIMENT),
        "--json",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
        stdin="banana\n",
    )
    assert result.returncode == 2
    assert "not a choice" in result.stderr


def test_parallel_text_dataset_prepares_offline(
    env: dict[str, str], local_llm: ServiceProcess, tmp_path: Path
):
    prompt = tmp_path / "translate.txt"
    prompt.write_text('Translate English into Japanese.\ninput="a cat"\noutput="猫"\n')
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(prompt),
        "--dataset",
        "small_parallel_enja",
        "--input-columns",
        "en",
        "--output-column",
        "ja",
        "--max-rows",
        "300",
        "--json",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["available_columns"] == ["en", "ja"]
    assert sum(report["rows"].values()) == 300
    first = json.loads((Path(report["path"]) / "test.jsonl").read_text().splitlines()[0])
    assert first["input"].isascii() and not first["output"].isascii()


def test_unattended_prepare_takes_the_best_relevant_dataset(
    env: dict[str, str], local_llm: ServiceProcess, tmp_path: Path
):
    prompt = tmp_path / "bank.txt"
    prompt.write_text(
        "Classify a banking customer's message into its intent.\n"
        'input="I still have not received my new card."\noutput="card_arrival"\n'
    )
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(prompt),
        "--unattended",
        "--max-rows",
        "100",
        "--json",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dataset"] in ("banking77", "PolyAI/banking77")
    assert report["suitable"] and report["output_column"] == "category"
    unrelated = tmp_path / "odd.txt"
    unrelated.write_text('Spell the word backwards.\ninput="stressed"\noutput="desserts"\n')
    result = p2m(
        "datasets",
        "prepare",
        "--prompt-file",
        str(unrelated),
        "--unattended",
        "--json",
        "--llm-base-url",
        local_llm.base_url,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["dataset"] is None
