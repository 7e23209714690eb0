"""A dataset's preview: from the catalog's record or a local copy, shown the same everywhere."""

from __future__ import annotations

from dataclasses import asdict

from p2m.common.dataset_preview import preview_line
from p2m.gateway.stages import _dataset_detail
from p2m.retriever.catalog import DatasetEntry
from p2m.retriever.loaders import LoadedDataset
from p2m.retriever.preview import catalog_preview, with_local_copy
from prompt2model.v1 import common_pb2

IMDB = DatasetEntry(
    name="imdb",
    description="Movie reviews.",
    license=("other",),
    downloads=None,
    size_category="10K<n<100K",
    config_names=("plain_text",),
    configs=(
        {
            "config_name": "plain_text",
            "task": "text-classification",
            "splits": {"train_split": "train"},
        },
        {
            "config_name": "plain_text",
            "columns": ["text", "label"],
            "splits": {"train": 25000, "test": 25000},
        },
    ),
)


def test_the_catalog_record_gives_splits_columns_and_licence():
    preview = catalog_preview(IMDB, "hub")
    assert preview.split_rows == {"train": 25000, "test": 25000}  # not the split-name mapping
    assert preview.columns == ("text", "label") and preview.sample_row == {}
    assert (preview.licenses, preview.configs, preview.downloads) == (
        ("other",),
        ("plain_text",),
        0,
    )
    assert preview.loadable and preview.source == "hub" and not preview.gated
    line = preview_line(preview)
    assert "train 25,000 · test 25,000" in line and "columns: text, label" in line
    assert "other" in line and "from the hub" in line and "gated" not in line
    glue = DatasetEntry(
        name="sst2",
        description="",
        configs=({"columns": ["sentence"], "sample_row": '{"sentence": "hide new secretions"}'},),
    )
    assert catalog_preview(glue, "").sample_row == {"sentence": "hide new secretions"}
    unknown = catalog_preview(DatasetEntry(name="x", description="", gated=True), "")
    assert preview_line(unknown) == (
        "rows unknown | columns: unknown | licence not stated | cannot be loaded here | gated"
    )


def test_a_local_copy_gives_its_own_rows_and_first_row():
    loaded = LoadedDataset(
        "imdb",
        {"train": [{"text": "x" * 500, "label": 1}, {"text": "fine", "label": 0}], "test": []},
        ("text", "label"),
    )
    preview = with_local_copy(catalog_preview(IMDB, "local"), loaded)
    assert preview.split_rows == {"train": 2, "test": 0} and preview.source == "local"
    assert preview.sample_row == {"text": "x" * 300, "label": "1"}  # cut, as text
    assert preview.licenses == ("other",)


def test_the_gateways_choice_shows_the_same_preview_and_the_variants():
    preview = catalog_preview(IMDB, "hub")
    ref = common_pb2.DatasetRef(
        name="imdb",
        description="Movie   reviews\nfor sentiment.",
        variants=["someone/imdb"],
        preview=common_pb2.DatasetPreview(**asdict(preview)),
    )
    assert _dataset_detail(ref).splitlines() == [
        "Movie reviews for sentiment.",
        preview_line(preview),
        "also: someone/imdb",
    ]
