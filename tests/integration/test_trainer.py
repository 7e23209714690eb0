"""The trainer service on loopback: Ray Train with 2 workers on a tiny T5 and on SmolLM2.

The data is the paper's generated Temporal set (real gpt-3.5-turbo output, read in place).
Each trained model is reloaded from its artifact folder and asked to generate.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from p2m.common.artifacts import ArtifactRef, ArtifactStore
from p2m.common.student import Student, StudentSpec
from p2m.trainer.data import store_dataset
from p2m.trainer.finalize import TRAINING_FILE
from p2m.trainer.options import TrainOptions
from p2m.trainer.validation import BestSoFar, Evaluation
from prompt2model.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from tests.support import ServiceProcess, run_p2m
from tests.tiny_models import build_tiny_t5

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
INSTRUCTION = "Normalize the temporal expression in the text to ISO dates."


def write_temporal(shared_data: Path, folder: Path, train: int, validation: int) -> Path:
    """The first rows of the paper's generated Temporal set as train/validation JSONL."""
    source = (
        shared_data / "benchmarks" / "generated" / "temporal_generated_0.3_1.4_with_filtering.jsonl"
    )
    rows = []
    with source.open(encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            if record["input_col"] != "N/A":
                rows.append({"input": record["input_col"], "output": record["output_col"]})
            if len(rows) == train + validation:
                break
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:train]), ("validation", rows[train:])):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in part)
    return folder


@pytest.fixture(scope="module")
def trainer_data_dir(retriever_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose model store holds SmolLM2 (a link to the session's imported copy)."""
    data_dir = tmp_path_factory.mktemp("trainer")
    store_hf = data_dir / "models" / "hf"
    store_hf.mkdir(parents=True)
    for entry in (retriever_data_dir / "models" / "hf").iterdir():
        shutil.copytree(entry, store_hf / entry.name)
    return data_dir


@pytest.fixture(scope="module")
def tiny_t5(trainer_data_dir: Path) -> Path:
    tokenizer = trainer_data_dir / "models" / "hf" / "HuggingFaceTB--SmolLM2-135M-Instruct"
    return build_tiny_t5(tokenizer, trainer_data_dir / "tiny-t5")


@pytest.fixture(scope="module")
def trainer(trainer_data_dir: Path) -> Iterator[ServiceProcess]:
    with ServiceProcess("trainer", trainer_data_dir) as service:
        yield service


@pytest.fixture(scope="module")
def temporal(
    shared_data: Path, trainer_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> ArtifactRef:
    folder = write_temporal(shared_data, tmp_path_factory.mktemp("temporal"), 24, 6)
    return store_dataset(ArtifactStore(trainer_data_dir / "artifacts"), folder)


def request(dataset: ArtifactRef, base: str, **options: object) -> trainer_pb2.TrainRequest:
    lora = options.pop("lora", None)
    message = trainer_pb2.TrainRequest(
        datasets=[common_pb2.ArtifactRef(uri=dataset.uri)],
        base_model=common_pb2.ModelRef(name=base),
        task=common_pb2.TaskSpec(instruction=INSTRUCTION),
        options=trainer_pb2.TrainOptions(**options),  # type: ignore[arg-type]
    )
    if lora:
        message.options.lora.CopyFrom(trainer_pb2.LoraOptions(enabled=True, r=4))
    return message


def train(address: str, message: trainer_pb2.TrainRequest) -> list[trainer_pb2.TrainProgress]:
    with grpc.insecure_channel(address) as channel:
        return list(trainer_pb2_grpc.TrainerStub(channel).Train(message, timeout=600))


def _is_step(message: trainer_pb2.TrainProgress) -> bool:
    return not message.progress.message.startswith("validated")


def model_folder(data_dir: Path, final: trainer_pb2.TrainProgress) -> Path:
    return ArtifactStore(data_dir / "artifacts").path(final.result.model.uri)


def test_two_workers_train_a_tiny_t5_that_reloads_and_generates(
    trainer: ServiceProcess, trainer_data_dir: Path, tiny_t5: Path, temporal: ArtifactRef
) -> None:
    """One epoch asked, at least 6 steps: 24 examples, 2 workers x 4 per step, 3 steps an epoch."""
    options = {"epochs": 1, "min_steps": 6, "num_workers": 2, "batch_size": 4}
    stream = train(trainer.address, request(temporal, str(tiny_t5), **options, learning_rate=1e-3))
    final = stream[-1]
    report = final.result.report
    assert (report.num_workers, report.backend, report.device) == (2, "local-ray", "cpu")
    assert (report.steps, report.epochs, report.train_examples) == (6, 2.0, 24)
    assert report.planned_epochs == 2
    assert report.validation_examples == 6 and report.HasField("final_eval_loss")
    steps = [m for m in stream[:-1] if m.HasField("loss") and _is_step(m)]
    assert [m.step for m in steps if not m.HasField("checkpoint")] == [1, 2, 3, 4, 5, 6]
    assert steps[-1].loss < steps[0].loss  # a lr of 1e-3 on a random model: the loss falls
    assert all(m.samples_per_second > 0 and m.total_steps == 6 for m in steps)
    checkpoints = [m for m in stream if m.checkpoint.uri]
    assert [m.step for m in checkpoints] == [3, 6]
    assert all(m.HasField("eval_loss") and m.checkpoint.kind == "checkpoint" for m in checkpoints)

    folder = model_folder(trainer_data_dir, final)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "README.md",
        "p2m_student.json",
        TRAINING_FILE,
    } <= names
    assert StudentSpec.load(folder).architecture == "encoder-decoder"
    card = (folder / "README.md").read_text()
    assert "Normalize the temporal expression" in card
    assert "| epochs | 2 (1 asked, raised to reach 6 steps) |" in card
    student = Student(folder)
    predictions = student.predict(["[Posted: 2021-09-15] See you next Monday."])
    assert len(predictions) == 1 and isinstance(predictions[0], str)

    again = train(trainer.address, request(temporal, str(tiny_t5), **options, learning_rate=1e-3))
    assert again[-1].result.report.cached
    assert again[-1].result.model.uri == final.result.model.uri


def test_the_best_weights_are_kept_and_a_training_that_stops_learning_stops(
    trainer: ServiceProcess, trainer_data_dir: Path, tiny_t5: Path, tmp_path: Path
) -> None:
    """Validation answers contradict training's: once the model learns, validation loss rises.

    By the loss, without ties (``keep_best_tolerance`` 0): the lowest keeps its weights.
    """
    folder = tmp_path / "contradiction"
    folder.mkdir()
    items = [f"item number {i}" for i in range(24)]
    for split, answer, rows in (("train", "yes", items), ("validation", "no", items[:6])):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"input": i, "output": answer}) + "\n" for i in rows)
        )
    dataset = store_dataset(ArtifactStore(trainer_data_dir / "artifacts"), folder)
    options = {"epochs": 5, "min_steps": 0, "batch_size": 4, "learning_rate": 1e-3, "eval_steps": 1}
    stream = train(
        trainer.address,
        request(
            dataset,
            str(tiny_t5),
            **options,
            early_stopping_patience=1,
            precision="fp32",
            keep_best_by="loss",
            keep_best_tolerance=0.0,
        ),
    )
    report = stream[-1].result.report
    assert report.stopped_early and report.steps < 30  # 6 steps an epoch, 5 epochs
    assert [e.step for e in report.evaluations] == list(range(1, report.steps + 1))
    losses = [e.eval_loss for e in report.evaluations]
    assert report.best_eval_loss == pytest.approx(min(losses))
    assert report.best_step == losses.index(min(losses)) + 1 < report.steps
    assert all(e.HasField("exact_match") and e.HasField("chrf") for e in report.evaluations)
    validated = [m for m in stream if not _is_step(m)]
    assert len(validated) == report.steps
    assert {"eval_loss", "eval_chrf", "eval_exact_match"} <= set(validated[-1].progress.figures)

    # The stored model has the best step's weights: its validation loss is the best one.
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from p2m.common.types import Example
    from p2m.trainer.encode import collate, encode_examples
    from p2m.trainer.validation import validation_loss

    stored = model_folder(trainer_data_dir, stream[-1])
    tokenizer = AutoTokenizer.from_pretrained(stored)
    rows = encode_examples(
        tokenizer, "encoder-decoder", INSTRUCTION, [Example(i, "no") for i in items[:6]], 384, 128
    )
    model = AutoModelForSeq2SeqLM.from_pretrained(stored)
    loss = validation_loss(model, rows, lambda r: collate(r, tokenizer.pad_token_id), 4, "cpu")
    assert loss == pytest.approx(report.best_eval_loss, rel=1e-4)
    assert loss < losses[-1]


def test_the_prompts_demonstrations_validate_and_choose_the_weights(
    trainer: ServiceProcess, trainer_data_dir: Path, tiny_t5: Path, tmp_path: Path
) -> None:
    """No validation split, but demonstrations that contradict training: they choose."""
    folder = tmp_path / "demonstrated"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        "".join(
            json.dumps({"input": f"item number {i}", "output": "yes"}) + "\n" for i in range(24)
        )
    )
    dataset = store_dataset(ArtifactStore(trainer_data_dir / "artifacts"), folder)
    options = {"epochs": 5, "min_steps": 0, "batch_size": 4, "learning_rate": 1e-3, "eval_steps": 1}
    message = request(
        dataset,
        str(tiny_t5),
        **options,
        early_stopping_patience=1,
        precision="fp32",
        keep_best_by="loss",
    )
    shown = [common_pb2.Example(input=f"item number {i}", output="no") for i in (100, 101, 102)]
    message.task.demonstrations.extend(
        [*shown, common_pb2.Example(input="item number 3", output="yes")]
    )
    stream = train(trainer.address, message)
    report = stream[-1].result.report
    # The one the training split holds stays out; the other three are the validation.
    assert (report.validation_examples, report.validation_demonstrations) == (3, 3)
    assert report.stopped_early and 0 < report.best_step < report.steps
    card = (model_folder(trainer_data_dir, stream[-1]) / "README.md").read_text()
    assert "(3 of them the prompt's demonstrations, validated first)" in card

    message.options.validate_on_demonstrations = False
    unvalidated = train(trainer.address, message)[-1].result.report
    assert (unvalidated.validation_examples, unvalidated.validation_demonstrations) == (0, 0)
    assert not any(e.HasField("eval_loss") for e in unvalidated.evaluations)
    assert (unvalidated.steps, unvalidated.best_step) == (30, 0)  # the last weights: 5 epochs

    # Two shown in every prompt: in the saved instruction, out of validation and its score.
    message.options.validate_on_demonstrations = True
    message.options.prompt_demonstrations = 2
    message.options.max_steps = 2  # what is asserted is the prompt, not the learning
    final = train(trainer.address, message)[-1]
    prompted = final.result.report
    assert (prompted.prompt_demonstrations, prompted.validation_demonstrations) == (2, 1)
    spec = StudentSpec.load(model_folder(trainer_data_dir, final))
    shown = "Input: item number 100\nOutput: no\n\nInput: item number 101\nOutput: no"
    assert spec.instruction == f"{INSTRUCTION}\n\n{shown}"
    assert spec.max_input_tokens > TrainOptions().max_input_tokens  # the shown ones never cut
    assert (
        "ends with the first 2 demonstrations"
        in (model_folder(trainer_data_dir, final) / "README.md").read_text()
    )


def test_a_search_stops_the_weak_trial_and_keeps_the_lowest_validation_loss(
    trainer: ServiceProcess, trainer_data_dir: Path, tiny_t5: Path, temporal: ArtifactRef
) -> None:
    """Seed 40 draws 1.1e-3 for 1 epoch, 7.5e-4 for 3, then 2.9e-5 for 2 (run in that order).

    The first call is cancelled once trial 1 has its checkpoint; the retry resumes from it.
    """
    message = request(
        temporal,
        str(tiny_t5),
        epochs=3,
        batch_size=4,
        seed=40,
        search_trials=3,
        search_min_learning_rate=1e-5,
        search_max_learning_rate=1e-2,
    )
    with grpc.insecure_channel(trainer.address) as channel:
        call = trainer_pb2_grpc.TrainerStub(channel).Train(message, timeout=600)
        for progress in call:
            if progress.trial == 1 and progress.checkpoint.uri:
                call.cancel()
                break
    stream = train(trainer.address, message)
    trial_1 = [m for m in stream if m.trial == 1]
    assert trial_1[0].progress.message == "trial 1/3: resumed from step 6"
    assert not [m for m in trial_1 if _is_step(m) and m.HasField("loss") and m.step < 6]
    report = stream[-1].result.report
    trials = list(report.search_trials)
    assert [(t.trial, t.learning_rate, t.epochs) for t in trials] == [
        (1, 1.1e-3, 1),
        (2, 7.5e-4, 3),
        (3, 2.9e-5, 2),
    ]
    # The lowest rate trails both others after its first epoch: ASHA asks it to stop there. On
    # a tiny model the second epoch (6 fast steps) can end before the stop lands; either way
    # the outcome says what happened. (The scheduler's decision: tests/unit/test_search.py.)
    assert (trials[2].outcome, trials[2].steps) in (("stopped", 6), ("completed", 12))
    assert trials[2].best_eval_loss > max(trials[0].best_eval_loss, trials[1].best_eval_loss)
    chosen = [t for t in trials if t.outcome == "chosen"]
    assert len(chosen) == 1
    assert chosen[0].best_eval_loss == min(t.best_eval_loss for t in trials)
    assert report.best_eval_loss == pytest.approx(chosen[0].best_eval_loss)
    assert report.steps == chosen[0].steps
    progress = stream[:-1]
    assert {m.trial for m in progress} == {1, 2, 3} and {m.trials for m in progress} == {3}
    assert any(m.progress.message.startswith("trial 3/3: ") for m in progress)

    folder = model_folder(trainer_data_dir, stream[-1])
    training = json.loads((folder / TRAINING_FILE).read_text())
    assert training["options"]["learning_rate"] == chosen[0].learning_rate
    assert "### Search" in (folder / "README.md").read_text()
    assert Student(folder).predict(["[Posted: 2021-09-15] See you next Monday."])
    assert not list((trainer_data_dir / "cache" / "train").glob("search-*"))


def test_a_search_needs_validation_data(
    trainer: ServiceProcess, trainer_data_dir: Path, tiny_t5: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "no-validation"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps({"input": "a", "output": "b"}) + "\n")
    dataset = store_dataset(ArtifactStore(trainer_data_dir / "artifacts"), folder)
    with pytest.raises(grpc.RpcError) as caught:
        train(trainer.address, request(dataset, str(tiny_t5), search_trials=2))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "options.search_trials" in caught.value.details()


def test_two_workers_fine_tune_smollm2_from_the_model_store(
    trainer: ServiceProcess, trainer_data_dir: Path, temporal: ArtifactRef
) -> None:
    # Each worker's batch of 2 runs in two passes of one row (DDP syncs on the second only).
    message = request(
        temporal, SMOLLM2, num_workers=2, max_steps=2, batch_size=2, max_tokens_per_pass=16
    )
    stream = train(trainer.address, message)
    report = stream[-1].result.report
    assert report.steps == 2 and report.num_workers == 2
    assert 0 < report.final_loss < 10  # a pretrained model starts far below log(vocab) = 10.8
    folder = model_folder(trainer_data_dir, stream[-1])
    assert "in passes of at most 16 padded tokens" in (folder / "README.md").read_text()
    spec = StudentSpec.load(folder)
    assert (spec.architecture, spec.base_model, spec.instruction) == (
        "decoder-only",
        SMOLLM2,
        INSTRUCTION,
    )
    student = Student(folder)
    assert student.num_parameters > 100_000_000
    prediction = student.predict(["[Posted: 2022-08-10] The launch is planned for next year."])
    assert prediction[0].strip()


def test_lora_adapters_are_merged_into_a_plain_model(
    trainer: ServiceProcess, trainer_data_dir: Path, tiny_t5: Path, temporal: ArtifactRef
) -> None:
    stream = train(trainer.address, request(temporal, str(tiny_t5), max_steps=2, lora=True))
    folder = model_folder(trainer_data_dir, stream[-1])
    assert not (folder / "adapter_config.json").exists()
    assert Student(folder).predict(["x"])[0] is not None


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"datasets": []}, grpc.StatusCode.INVALID_ARGUMENT, "datasets"),
        ({"epochs": -1}, grpc.StatusCode.INVALID_ARGUMENT, "options.epochs"),
        ({"num_workers": 65}, grpc.StatusCode.INVALID_ARGUMENT, "options.num_workers"),
        ({"learning_rate": 2.0}, grpc.StatusCode.INVALID_ARGUMENT, "options.learning_rate"),
        ({"base": ""}, grpc.StatusCode.INVALID_ARGUMENT, "base_model.name"),
        ({"architecture": "rnn"}, grpc.StatusCode.INVALID_ARGUMENT, "base_model.architecture"),
        (
            {"architecture": "encoder-decoder"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "base_model.architecture",
        ),
        ({"base": "nobody/no-such-model"}, grpc.StatusCode.NOT_FOUND, "no-such-model"),
        ({"uri": "p2m-artifact://sha256/" + "0" * 64}, grpc.StatusCode.NOT_FOUND, "0000"),
        ({"uri": "file:///etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT, "datasets[0].uri"),
        ({"instruction": ""}, grpc.StatusCode.INVALID_ARGUMENT, "task.instruction"),
        ({"search_trials": 65}, grpc.StatusCode.INVALID_ARGUMENT, "options.search_trials"),
        (
            {"search_trials": 2, "search_max_learning_rate": 1e-6},
            grpc.StatusCode.INVALID_ARGUMENT,
            "options.search_max_learning_rate",
        ),
    ],
)
def test_bad_requests_name_the_field(
    trainer: ServiceProcess, temporal: ArtifactRef, change: dict, code: grpc.StatusCode, field: str
) -> None:
    message = request(temporal, change.get("base", SMOLLM2))
    if "datasets" in change:
        del message.datasets[:]
    if "uri" in change:
        message.datasets[0].uri = change["uri"]
    if "architecture" in change:
        message.base_model.architecture = change["architecture"]
    if "instruction" in change:
        message.task.instruction = ""
    for name in (
        "epochs",
        "num_workers",
        "learning_rate",
        "search_trials",
        "search_max_learning_rate",
    ):
        if name in change:
            setattr(message.options, name, change[name])
    with pytest.raises(grpc.RpcError) as caught:
        train(trainer.address, message)
    assert caught.value.code() == code
    assert field in caught.value.details()


def test_a_run_killed_after_its_first_checkpoint_resumes_from_it(
    trainer_data_dir: Path, tiny_t5: Path, shared_data: Path, tmp_path: Path
) -> None:
    """SIGKILL the service (and its Ray) after the first checkpoint; a new one resumes there."""
    data_dir = trainer_data_dir
    folder = write_temporal(shared_data, tmp_path / "data", 40, 4)
    dataset = store_dataset(ArtifactStore(data_dir / "artifacts"), folder)
    message = request(
        dataset,
        str(tiny_t5),
        epochs=3,
        min_steps=0,
        batch_size=2,
        num_workers=1,
        early_stopping_patience=0,
    )
    seen: list[int] = []
    first = ServiceProcess("trainer", data_dir).start()
    try:
        with grpc.insecure_channel(first.address) as channel:
            for progress in trainer_pb2_grpc.TrainerStub(channel).Train(message, timeout=600):
                if progress.checkpoint.uri:
                    seen.append(progress.step)
                    first.kill()
                    break
    finally:
        first.stop()
    assert seen == [20], "the first checkpoint closes epoch 1 (40 examples, 2 per step)"
    with ServiceProcess("trainer", data_dir) as second:
        stream = train(second.address, message)
    report = stream[-1].result.report
    assert report.resumed_from_checkpoint
    assert report.resumed_from_step in (20, 40)  # the kill may land after a second checkpoint
    assert report.steps == 60
    assert stream[0].progress.message.startswith("resumed from step")
    assert min(m.step for m in stream if m.HasField("loss")) > 20
    # The validations before the kill are kept: the learning curve and the best are whole
    # (the weights kept are those the whole curve, replayed, would keep).
    assert [e.step for e in report.evaluations] == [20, 40, 60]
    replayed = BestSoFar()
    for e in report.evaluations:
        replayed.record(
            Evaluation(e.step, e.epoch, e.loss, e.eval_loss, e.exact_match, e.chrf),
            TrainOptions().keep_best_tolerance,
            TrainOptions().keep_best_by,
        )
    assert (report.best_step, report.best_eval_loss) == (replayed.step, replayed.eval_loss)
    assert replayed.lowest == min(e.eval_loss for e in report.evaluations)


def test_a_cancelled_call_stops_its_workers_and_a_retry_resumes(
    trainer: ServiceProcess,
    tiny_t5: Path,
    shared_data: Path,
    trainer_data_dir: Path,
    tmp_path: Path,
) -> None:
    folder = write_temporal(shared_data, tmp_path / "data", 40, 0)
    dataset = store_dataset(ArtifactStore(trainer_data_dir / "artifacts"), folder)
    message = request(dataset, str(tiny_t5), epochs=3, min_steps=0, batch_size=2, seed=7)
    with grpc.insecure_channel(trainer.address) as channel:
        call = trainer_pb2_grpc.TrainerStub(channel).Train(message, timeout=600)
        for progress in call:
            if progress.checkpoint.uri:
                call.cancel()
                break
    # The retry waits for the cancelled run to stop, then goes on from its last checkpoint.
    stream = train(trainer.address, message)
    report = stream[-1].result.report
    assert report.resumed_from_checkpoint and report.resumed_from_step in (20, 40)
    assert report.steps == 60


def test_cli_trains_from_a_jsonl_file_and_the_evaluator_scores_the_result(
    trainer_data_dir: Path, tiny_t5: Path, shared_data: Path, tmp_path: Path
) -> None:
    """With less memory than full fine-tuning takes (the setting), LoRA adapters, merged."""
    folder = write_temporal(shared_data, tmp_path / "data", 12, 4)
    out = tmp_path / "student"
    trained = run_p2m(
        "train",
        "--data",
        str(folder / "train.jsonl"),
        "--base-model",
        str(tiny_t5),
        "--instruction",
        INSTRUCTION,
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--batch-size",
        "4",
        "--json",
        "--out",
        str(out),
        "--data-dir",
        str(trainer_data_dir),
        env={"P2M_TRAIN_MEMORY_GB": "0.5"},  # under the 1 GiB of activations alone
    )
    assert trained.returncode == 0, trained.stderr
    result = json.loads(trained.stdout)
    assert result["report"]["steps"] == 3 and result["out"] == str(out)
    assert StudentSpec.load(out).instruction == INSTRUCTION
    assert "0.5 GB is available: LoRA adapters trained instead" in result["report"]["lora_reason"]
    assert not (out / "adapter_config.json").exists()  # merged into plain weights
    assert "(merged); chosen: full fine-tuning of" in (out / "README.md").read_text()
    scored = run_p2m(
        "evaluate",
        "--model",
        str(out),
        "--test",
        str(folder / "validation.jsonl"),
        "--metrics",
        "exact_match,chrf",
        "--json",
        "--data-dir",
        str(trainer_data_dir),
    )
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["num_examples"] == 4 and 0 <= report["metrics"]["chrf"] <= 100


def test_cli_names_a_bad_training_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "a", "output": "b"}\n{"input": "a", "label": "b"}\n')
    result = run_p2m(
        "train", "--data", str(bad), "--base-model", "x/y", "--data-dir", str(tmp_path)
    )
    assert result.returncode == 2
    assert "line 2" in result.stderr and "--data[0]" in result.stderr
    result = run_p2m("train", "--data", str(bad), "--base-model", "x/y", "--epochs", "0")
    assert result.returncode == 2 and "--epochs" in result.stderr
    for flag, value in (
        ("--warmup-ratio", "0.9"),
        ("--precision", "fp16"),
        ("--lora-r", "0"),
        ("--search-max-learning-rate", "1e-9"),
    ):
        result = run_p2m("train", "--data", str(bad), "--base-model", "x/y", flag, value)
        assert result.returncode == 2 and f"option {flag}:" in result.stderr
