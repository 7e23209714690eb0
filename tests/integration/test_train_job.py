"""`p2m train-job`, the RayJob's entrypoint, run here on a local Ray (no ``RAY_ADDRESS``).

The trainer hands a training to the cluster as a job file; this runs the command on one, as the
RayJob's head pod would, on a tiny T5 with a tokenizer built on the spot, and checks what the
trainer reads back: the progress lines, and the model stored under the training key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2m.common.artifacts import ArtifactStore, sha256_tree
from p2m.common.types import TaskSpec
from p2m.trainer.data import store_dataset
from p2m.trainer.engine import TrainJob, stored_report
from p2m.trainer.jobfile import JobFile, job_path, progress_path
from p2m.trainer.options import TrainOptions, training_key
from tests.tiny_models import build_tiny_t5

INSTRUCTION = "Say whether the review is positive or negative."
LORA_REASON = (
    "full fine-tuning would need 2.1 GB; 0.5 GB is available: LoRA adapters trained instead"
)


def build_tokenizer(folder: Path) -> Path:
    """A tiny word-level tokenizer, trained here (nothing downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = "Input Output : the film was great awful positive negative review loved hated it"
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    tokenizer.train_from_iterator([words, INSTRUCTION], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def handed_over(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, JobFile]:
    """A data dir with a dataset and a base model, and the job file the trainer would write."""
    work = tmp_path_factory.mktemp("train-job")
    data_dir = work / "data"
    store = ArtifactStore(data_dir / "artifacts")
    rows = work / "rows"
    rows.mkdir()
    lines = [
        {"input": f"the film was {word}", "output": label}
        for word, label in (("great", "positive"), ("awful", "negative")) * 4
    ]
    (rows / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    dataset = store_dataset(store, rows)
    base = build_tiny_t5(build_tokenizer(work / "tokenizer"), work / "tiny-t5")
    options = TrainOptions(
        epochs=1,
        min_steps=0,
        batch_size=4,
        learning_rate=1e-3,
        max_input_tokens=32,
        max_output_tokens=4,
        num_workers=1,
        lora=True,  # settled by the trainer that handed it over, which says why
        lora_auto=False,
    )
    job = TrainJob((dataset,), str(base), TaskSpec(INSTRUCTION), options, lora_reason=LORA_REASON)
    key = training_key(sha256_tree(base)[0], [dataset.sha256], INSTRUCTION, options)
    handed = JobFile(key, f"p2m-train-{key[:12]}", job)
    handed.write(job_path(data_dir, key))
    return data_dir, handed


def train_job(job_file: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [
        sys.executable,
        "-m",
        "p2m",
        "train-job",
        "--job",
        str(job_file),
        "--data-dir",
        str(data_dir),
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=280)


def test_train_job_trains_reports_progress_and_stores_under_the_key(
    handed_over: tuple[Path, JobFile],
) -> None:
    data_dir, handed = handed_over
    job_file = job_path(data_dir, handed.key)
    done = train_job(job_file, data_dir)
    assert done.returncode == 0, done.stderr[-3000:]

    records = [json.loads(line) for line in progress_path(job_file).read_text().splitlines()]
    events = [r["event"] for r in records if r["type"] == "event"]
    assert events[0]["message"] == "started"
    steps = [e for e in events if e["loss"] is not None and not e["checkpoint"]]
    assert [e["step"] for e in steps] == [1, 2] and all(e["total_steps"] == 2 for e in steps)
    assert any(e["checkpoint"] for e in events)  # the epoch's checkpoint, on the volume
    store = ArtifactStore(data_dir / "artifacts")
    model = store.recall(handed.key)
    assert model is not None and records[-1] == {"type": "done", "model": model.uri}
    report = stored_report(store, model)
    assert (report.backend, report.ray_job_name, report.steps) == ("rayjob", handed.ray_job_name, 2)
    assert report.lora_reason == LORA_REASON  # the handing trainer's choice, in the model's report
    assert f"chosen: {LORA_REASON}" in (store.path(model.uri) / "README.md").read_text()
    assert json.loads(done.stdout)["model"] == model.uri


def test_train_job_refuses_a_malformed_job_file(tmp_path: Path) -> None:
    job_file = tmp_path / "broken.json"
    job_file.write_text('{"version": 1, "key": "x"}')
    done = train_job(job_file, tmp_path / "data")
    assert done.returncode == 2
    assert "job.job: is missing" in done.stderr
