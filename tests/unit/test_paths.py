"""Which paths a request may name: inside the readable roots, links resolved."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2m.common.errors import InvalidInput
from p2m.common.paths import readable_path
from p2m.common.settings import Settings


def test_a_path_inside_a_root_is_readable(tmp_path: Path):
    (tmp_path / "data").mkdir()
    assert readable_path(str(tmp_path / "data" / "x"), [tmp_path / "data"], "f") == (
        tmp_path / "data" / "x"
    )


@pytest.mark.parametrize("raw", ["/etc/passwd", "relative/x", "{root}/../x", "{root}/a\x00b"])
def test_paths_outside_the_roots_or_not_absolute_are_refused(tmp_path: Path, raw: str):
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(InvalidInput) as caught:
        readable_path(raw.format(root=root), [root], "dataset.name")
    assert caught.value.field == "dataset.name"


def test_a_link_out_of_a_root_is_refused(tmp_path: Path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside the folders"):
        readable_path(str(root / "link" / "rows.jsonl"), [root], "dataset.name")


def test_without_roots_any_absolute_path_is_readable():
    assert readable_path("/etc/passwd", None, "f") == Path("/etc/passwd")


def test_the_roots_are_the_data_dir_the_datasets_and_catalog_folders_and_path_roots():
    settings = Settings.load(
        environ={
            "P2M_DATA_DIR": "/srv/p2m",
            "P2M_DATASETS_DIR": "/srv/datasets",
            "P2M_CATALOG_DIR": "/srv/catalogs",
            "P2M_PATH_ROOTS": "/home/me:/mnt/data",
        }
    )
    assert settings.readable_roots() == tuple(
        Path(p) for p in ("/srv/p2m", "/srv/datasets", "/srv/catalogs", "/home/me", "/mnt/data")
    )
    assert Settings.load(environ={"P2M_DATA_DIR": "/srv/p2m"}).readable_roots() == (
        Path("/srv/p2m"),
    )


def test_the_local_stack_lets_requests_name_files_in_the_home_and_working_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from p2m.stack import service_env

    monkeypatch.chdir(tmp_path)
    env = service_env(Settings.load(environ={}), tmp_path / "data")
    assert env["P2M_DATA_DIR"] == str(tmp_path / "data")
    assert env["P2M_PATH_ROOTS"].split(os.pathsep) == [str(Path.home()), str(tmp_path.resolve())]
    chosen = service_env(Settings.load(environ={"P2M_PATH_ROOTS": "/mnt/rows"}), tmp_path)
    assert chosen["P2M_PATH_ROOTS"] == "/mnt/rows"
