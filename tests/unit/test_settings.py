from __future__ import annotations

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
    assert settings.data_dir == Path(".p2m")


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"P2M_PORT": "eighty"}, "port"),
        ({"P2M_PORT": "70000"}, "port"),
        ({"P2M_LOG_FORMAT": "xml"}, "log_format"),
        ({"P2M_LLM_BASE_URL": "ftp://x"}, "llm_base_url"),
        ({"P2M_LLM_MAX_CONCURRENCY": "0"}, "llm_max_concurrency"),
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
