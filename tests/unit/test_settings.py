from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.settings import Settings


def test_defaults_env_then_flags():
    env = {"P2M_PORT": "9000", "P2M_LLM_MODEL": "from-env", "P2M_GRACE_S": "1.5"}
    settings = Settings.load({"llm_model": "from-flag", "port": None}, environ=env)
    assert settings.port == 9000
    assert settings.llm_model == "from-flag"
    assert settings.grace_s == 1.5
    assert settings.data_dir == Path.cwd() / ".p2m"


def test_every_path_setting_is_absolute_against_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    env = {
        "P2M_DATA_DIR": "rel data/p2m",
        "P2M_CATALOG_DIR": "../catalogs",
        "P2M_DATASETS_DIR": "~/datasets",
        "P2M_PATH_ROOTS": f"a{os.pathsep}{os.pathsep}/abs/b",
        "P2M_RAYJOB_TEMPLATE": "t/rayjob.yaml",
        "P2M_LOCAL_LLM": "models/my.gguf",
    }
    settings = Settings.load({"inferenceservice_template": Path("isvc.yaml")}, environ=env)
    assert settings.data_dir == tmp_path / "rel data" / "p2m"
    assert settings.catalog_dir == str(tmp_path.parent / "catalogs")
    assert settings.datasets_dir == str(tmp_path / "home" / "datasets")
    assert settings.path_roots == os.pathsep.join([str(tmp_path / "a"), "/abs/b"])
    assert settings.rayjob_template == tmp_path / "t" / "rayjob.yaml"
    assert settings.inferenceservice_template == tmp_path / "isvc.yaml"
    assert settings.local_llm == str(tmp_path / "models" / "my.gguf")
    assert settings.readable_roots()[0] == settings.data_dir


def test_unset_paths_and_model_names_stay_as_they_are():
    settings = Settings.load(environ={"P2M_LOCAL_LLM": "smollm2"})
    assert settings.catalog_dir == "" and settings.datasets_dir == ""
    assert settings.path_roots == "" and settings.local_llm == "smollm2"
    assert Settings(**{**settings.__dict__}) == settings  # building again changes nothing


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"P2M_PORT": "eighty"}, "port"),
        ({"P2M_PORT": "70000"}, "port"),
        ({"P2M_LOG_FORMAT": "xml"}, "log_format"),
        ({"P2M_LLM_BASE_URL": "ftp://x"}, "llm_base_url"),
        ({"P2M_LLM_MAX_CONCURRENCY": "0"}, "llm_max_concurrency"),
        ({"P2M_LLM_PENALTY_WINDOW": "-1"}, "llm_penalty_window"),
    ],
)
def test_bad_values_name_the_field(env: dict[str, str], field: str):
    with pytest.raises(InvalidInput) as info:
        Settings.load(environ=env)
    assert info.value.field == field


def test_api_key_from_file_and_never_in_repr(tmp_path: Path):
    key_file = tmp_path / "key"
    key_file.write_text("sk-very-secret\n")
    settings = Settings.load(environ={"P2M_LLM_API_KEY_FILE": str(key_file)})
    assert settings.llm_api_key == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)


def test_missing_key_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(InvalidInput) as info:
        Settings.load(environ={"P2M_LLM_API_KEY_FILE": str(tmp_path / "absent")})
    assert info.value.field == "llm_api_key_file"


def test_unknown_override_is_rejected():
    with pytest.raises(InvalidInput):
        Settings.load({"no_such_setting": 1}, environ={})


def test_settings_reach_another_process_through_the_environment(tmp_path: Path):
    chosen = Settings.load(
        {
            "data_dir": tmp_path / "data",
            "catalog_dir": str(tmp_path / "catalogs"),
            "max_retrieved_rows": 100,
            "hub_offline": True,
            "llm_timeout_s": 600.0,
            "llm_api_key": "secret",
        },
        environ={},
    )
    env = chosen.as_environ()
    assert "P2M_LLM_API_KEY" not in env and "P2M_PORT" not in env  # a secret; a default
    again = Settings.load(environ=env)
    assert dataclasses.replace(again, llm_api_key="secret") == chosen


def test_derived_paths_and_choices_come_from_the_settings(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings = Settings.load({"data_dir": tmp_path}, environ={})
    assert settings.artifacts_dir == tmp_path / "artifacts"
    assert settings.cache_dir("train") == tmp_path / "cache" / "train"
    assert settings.teacher_model == "qwen" and not settings.offline
    remote = Settings.load({"llm_base_url": "http://h:1/v1", "llm_model": "m"}, environ={})
    assert remote.teacher_model == "m"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert settings.offline


def test_the_bertscore_hub_model_is_a_setting_the_evaluator_follows(monkeypatch):
    from p2m.evaluator.engine import Evaluator
    from p2m.evaluator.metrics import HUB_BERTSCORE_ENCODER

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    asked = Settings.load(environ={"P2M_BERTSCORE_HUB_MODEL": "1"})
    assert asked.bertscore_hub_model
    assert Evaluator.from_settings(asked)._bertscore.encoder == HUB_BERTSCORE_ENCODER
    offline = dataclasses.replace(asked, hub_offline=True)
    assert Evaluator.from_settings(offline)._bertscore.encoder != HUB_BERTSCORE_ENCODER
    assert Evaluator.from_settings(Settings.load(environ={}))._bertscore.encoder != (
        HUB_BERTSCORE_ENCODER
    )


def test_the_stack_tells_its_llm_callers_the_penalty_window_of_its_own_llama_cpp():
    from p2m.stack import llm_caller_env

    assert llm_caller_env(Settings(), {})["P2M_LLM_PENALTY_WINDOW"] == "256"
    assert llm_caller_env(Settings(llm_penalty_window=96), {})["P2M_LLM_PENALTY_WINDOW"] == "96"
    configured = Settings(llm_base_url="https://api.example.com/v1")
    assert "P2M_LLM_PENALTY_WINDOW" not in llm_caller_env(configured, {"A": "1"})
    # The embedded endpoint's own client (LLMProvider) follows the same rule.
    from p2m.local_llm.server import penalty_window

    assert penalty_window(Settings()) == 256
    assert penalty_window(Settings(llm_penalty_window=96)) == 96
    assert penalty_window(configured) == 0
