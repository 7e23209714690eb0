"""The trainer's parts without Ray: token encoding, options, data combination, proto mapping."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from p2m.common.artifacts import ArtifactStore
from p2m.common.encoder import shipped_encoder_path
from p2m.common.errors import InvalidInput, NotFound
from p2m.common.output_form import LABELS, SPAN, OutputForm
from p2m.common.prompt_layout import format_input
from p2m.common.student import TEMPLATE_VERSION, StudentSpec
from p2m.common.types import Example, TaskSpec
from p2m.trainer.base_model import BaseModel
from p2m.trainer.data import (
    TrainingData,
    load_training_data,
    store_dataset,
    with_demonstrations,
)
from p2m.trainer.encode import IGNORE_INDEX, collate, encode_examples
from p2m.trainer.engine import training_output_form
from p2m.trainer.finalize import model_card
from p2m.trainer.options import (
    LOSS,
    MIN_STEPS_MAX_EPOCHS,
    SCORE,
    TrainOptions,
    learning_rate_for,
    planned_epochs,
    student_spec,
    training_key,
)
from p2m.trainer.ray_run import short_error
from p2m.trainer.run_types import TrainJob
from p2m.trainer.service import options_from_pb
from p2m.trainer.validation import BestSoFar, Evaluation
from prompt2model.v1 import trainer_pb2


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """A real WordPiece tokenizer (the shipped MiniLM's), with [SEP] as its end token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(shipped_encoder_path())
    tok.eos_token = "[SEP]"
    return tok


def test_decoder_only_labels_cover_the_output_and_end_token_only(tokenizer: Any) -> None:
    examples = [Example("the cat sat", "positive"), Example("a dog", "very negative indeed")]
    rows = encode_examples(tokenizer, "decoder-only", "Classify it.", examples, 64, 16)
    for row, example in zip(rows, examples, strict=True):
        prompt_len = sum(1 for label in row["labels"] if label == IGNORE_INDEX)
        prompt = tokenizer(format_input("Classify it.", example.input))["input_ids"]
        assert row["input_ids"][:prompt_len] == prompt
        target = row["labels"][prompt_len:]
        assert target[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(target[:-1]).strip() == example.output
        assert len(row["input_ids"]) == len(row["labels"])


def test_encoder_decoder_keeps_prompt_and_target_apart(tokenizer: Any) -> None:
    (row,) = encode_examples(tokenizer, "encoder-decoder", "Do it.", [Example("x y", "z")], 64, 16)
    assert IGNORE_INDEX not in row["labels"]
    assert tokenizer.decode(row["labels"][:-1]).strip() == "z"
    assert "do it" in tokenizer.decode(row["input_ids"])


def test_long_inputs_lose_their_middle_and_outputs_their_end(tokenizer: Any) -> None:
    text = "question? " + " ".join(f"w{i}" for i in range(300))
    (row,) = encode_examples(tokenizer, "encoder-decoder", "", [Example(text, "a " * 50)], 32, 5)
    decoded = tokenizer.decode(row["input_ids"], skip_special_tokens=True)
    assert 28 <= len(row["input_ids"]) <= 32
    assert decoded.startswith("input : question?") and decoded.endswith("w299 output :")
    assert len(row["labels"]) == 5 and row["labels"][-1] == tokenizer.eos_token_id


def test_collate_pads_inputs_and_masks_labels(tokenizer: Any) -> None:
    batch = collate(
        [{"input_ids": [5, 6, 7], "labels": [1]}, {"input_ids": [8], "labels": [2, 3]}], 0
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[1, IGNORE_INDEX], [2, 3]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"epochs": 0}, "options.epochs"),
        ({"epochs": 101}, "options.epochs"),
        ({"learning_rate": -1e-5}, "options.learning_rate"),
        ({"batch_size": 2000}, "options.batch_size"),
        ({"num_workers": 0}, "options.num_workers"),
        ({"max_input_tokens": 4}, "options.max_input_tokens"),
        ({"lora_r": 0}, "options.lora.r"),
        ({"precision": "fp16"}, "options.precision"),
        ({"min_steps": -1}, "options.min_steps"),
        ({"max_tokens_per_pass": -1}, "options.max_tokens_per_pass"),
    ],
)
def test_out_of_range_options_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        TrainOptions(**change).validate()
    assert caught.value.field == field


def test_the_key_follows_the_prompt_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    before = training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions())
    monkeypatch.setattr("p2m.trainer.options.TEMPLATE_VERSION", TEMPLATE_VERSION + 1)
    assert training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions()) != before


def test_the_key_follows_what_changes_the_weights() -> None:
    base = training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions())
    assert base == training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions(use_gpu=True))
    in_passes = TrainOptions(max_tokens_per_pass=1024)  # the same gradients, less memory
    assert base == training_key("b" * 64, ["d" * 64], "Do it.", in_passes)
    for other in (
        training_key("c" * 64, ["d" * 64], "Do it.", TrainOptions()),
        training_key("b" * 64, ["e" * 64], "Do it.", TrainOptions()),
        training_key("b" * 64, ["d" * 64], "Do that.", TrainOptions()),
        training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions(epochs=2)),
        training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions(seed=1)),
        training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions(precision="fp32")),
        training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions(group_by_length=False)),
    ):
        assert other != base
    demos = (Example("2+2", "4"),)
    with_demos = training_key("b" * 64, ["d" * 64], "Do it.", TrainOptions(), demos)
    assert with_demos != base
    assert with_demos != training_key(
        "b" * 64, ["d" * 64], "Do it.", TrainOptions(), (Example("2+2", "5"),)
    )
    no_instruction = TrainOptions(omit_instruction=True)
    assert training_key("b" * 64, ["d" * 64], "A", no_instruction) == training_key(
        "b" * 64, ["d" * 64], "B", no_instruction
    )


def test_the_student_spec_prompts_as_the_options_train() -> None:
    options = TrainOptions(max_input_tokens=200, max_output_tokens=20, max_instruction_tokens=32)
    spec = student_spec(options, "decoder-only", "Do it.", base_model="m", output_form="span")
    assert (spec.instruction, spec.max_input_tokens, spec.max_output_tokens) == ("Do it.", 200, 20)
    assert (spec.max_instruction_tokens, spec.base_model, spec.output_form) == (32, "m", "span")
    bare = student_spec(replace(options, omit_instruction=True), "encoder-decoder", "Do it.")
    assert bare.instruction == "" and bare.architecture == "encoder-decoder"


def _write(folder: Path, split: str, rows: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{split}.jsonl").open("w") as fh:
        for i, o in rows:
            fh.write(json.dumps({"input": i, "output": o}) + "\n")


def test_datasets_are_combined_and_shuffled_by_the_seed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    _write(tmp_path / "a", "train", [(f"a{i}", "x") for i in range(20)])
    _write(tmp_path / "a", "validation", [("av", "x")])
    _write(tmp_path / "b", "train", [(f"b{i}", "y") for i in range(20)])
    refs = [store_dataset(store, tmp_path / "a"), store_dataset(store, tmp_path / "b")]
    first = load_training_data(store, refs, seed=1)
    assert len(first.train) == 40 and [e.input for e in first.validation] == ["av"]
    assert first == load_training_data(store, refs, seed=1)
    assert first.train != load_training_data(store, refs, seed=2).train
    inputs = [e.input for e in first.train[:20]]
    assert any(i.startswith("a") for i in inputs) and any(i.startswith("b") for i in inputs)


def test_the_demonstrations_join_validation_first_once_and_never_from_training() -> None:
    data = TrainingData(
        train=(Example("t1", "a"), Example("shown", "b")),
        validation=(Example("v1", "c"),),
    )
    demos = (Example("d1", "x"), Example("shown", "b"), Example("d1", "x"), Example("d2", "y"))
    validated = with_demonstrations(data, demos)
    # In training: out; twice: once; first.
    assert [e.input for e in validated.validation] == ["d1", "d2", "v1"]
    assert (validated.train, validated.demonstrations) == (data.train, 2)
    assert with_demonstrations(data, ()) == data
    assert with_demonstrations(data, (Example("shown", "b"),)) == data


def test_a_jsonl_file_becomes_a_train_split_and_bad_lines_are_named(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "artifacts")
    good = tmp_path / "good.jsonl"
    good.write_text('{"input": "q", "output": "a"}\n')
    ref = store_dataset(store, good)
    assert (store.path(ref.uri) / "train.jsonl").read_text() == good.read_text()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input": "q", "output": "a"}\n{"input": "q"}\n')
    with pytest.raises(InvalidInput, match="line 2"):
        store_dataset(store, bad)
    with pytest.raises(InvalidInput, match="no such file"):
        store_dataset(store, tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInput):
        load_training_data(store, [], seed=0)
    with pytest.raises(NotFound):
        load_training_data(store, [store.put_bytes(b"{}", "dataset")], seed=0)


def test_zero_proto_fields_take_the_paper_defaults() -> None:
    options = options_from_pb(trainer_pb2.TrainOptions())
    assert (options.epochs, options.learning_rate, options.num_workers) == (3, 0.0, 1)
    assert not options.lora and options.seed == TrainOptions().seed
    lora = trainer_pb2.TrainOptions(lora=trainer_pb2.LoraOptions(enabled=True), seed=0)
    parsed = options_from_pb(lora)
    assert (parsed.lora, parsed.lora_r, parsed.lora_alpha, parsed.seed) == (True, 8, 16, 0)
    with pytest.raises(InvalidInput, match=r"options\.max_steps"):
        options_from_pb(trainer_pb2.TrainOptions(max_steps=-1))
    assert (options.precision, options.group_by_length) == ("auto", True)
    chosen = options_from_pb(trainer_pb2.TrainOptions(precision="fp32", group_by_length=False))
    assert (chosen.precision, chosen.group_by_length) == ("fp32", False)
    with pytest.raises(InvalidInput, match=r"options\.precision"):
        options_from_pb(trainer_pb2.TrainOptions(precision="int4"))


def test_the_model_card_names_task_data_base_and_figures(tmp_path: Path) -> None:
    task = TaskSpec("Answer | briefly.", (Example("2+2", "4"),))
    base = BaseModel("owner/base", tmp_path, "decoder-only", "0" * 64, "store")
    training = {
        "datasets": ["p2m-artifact://sha256/" + "1" * 64],
        "report": {"steps": 7, "final_loss": 0.5, "final_eval_loss": None},
    }
    card = model_card(base, task, TrainOptions(lora=True), training)
    assert card.startswith("---\nbase_model: owner/base\n")
    assert "Answer \\| briefly." in card and "| 2+2 | 4 |" in card
    assert "1" * 64 in card and "| steps | 7 |" in card and "0.5000" in card
    assert "r=8, alpha=16 (merged)" in card
    assert "the last step's" in card and "Validations" not in card
    training["report"] = {
        **training["report"],
        "best_step": 4,
        "best_eval_loss": 0.25,
        "stopped_early": True,
        "evaluations": [
            {"step": 4, "epoch": 1.0, "loss": 0.5, "eval_loss": 0.25, "exact_match": 0.5},
            {"step": 7, "epoch": 2.0, "loss": 0.4, "eval_loss": 0.3, "chrf": 41.0},
        ],
    }
    assert "of them the prompt's demonstrations" not in card
    training["report"]["validation_examples"] = 9
    training["report"]["validation_demonstrations"] = 1
    card = model_card(base, task, TrainOptions(), training)
    assert "9 validation\nexamples (1 of them the prompt's demonstrations, validated first)" in card
    assert "step 4's (lowest validation loss, 0.2500), stopped early" in card
    assert "| 7 | 2.00 | 0.4000 | 0.3000 | n/a | 41.0000 |" in card
    training["report"].update(best_step=7, best_eval_loss=0.26)  # tied with 0.25, a better sample
    training["report"]["evaluations"][1]["eval_loss"] = 0.26
    card = model_card(base, task, TrainOptions(), training)
    assert (
        "step 7's (validation loss 0.2600, within 5% of the lowest (0.2500), and the higher "
        "ChrF++ on the validation sample (41.0))" in card
    )
    card = model_card(base, task, TrainOptions(keep_best_by=SCORE), training)
    assert "step 7's (highest ChrF++ on the validation sample, 41.0; validation loss 0.2600)" in (
        " ".join(card.split())
    )


def test_the_best_validation_is_tracked_and_patience_runs_out() -> None:
    best = BestSoFar()
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.7), (4, None), (5, 1.6)):
        best.record(Evaluation(step=step, epoch=step / 5, loss=1.0, eval_loss=loss))
    assert (best.step, best.eval_loss, best.since) == (2, 1.5, 2)  # no loss: not counted
    assert best.exhausted(2) and not best.exhausted(3) and not best.exhausted(0)
    assert BestSoFar.from_json(best.to_json()) == best
    assert best.record(Evaluation(step=6, epoch=1.2, loss=1.0, eval_loss=1.2))
    assert (best.step, best.since, len(best.history)) == (6, 0, 6)


def _validated(step: int, eval_loss: float, chrf: float | None) -> Evaluation:
    return Evaluation(step=step, epoch=step / 9, loss=1.0, eval_loss=eval_loss, chrf=chrf)


def test_a_loss_tied_with_the_lowest_is_kept_for_a_better_sample() -> None:
    # A Temporal training's validations (step, loss, ChrF++ of the decoded sample): the lowest
    # loss decodes the "N/A" mode; step 36, 1.5% above it, decodes dates.
    history = [(9, 1.135, 6.8), (18, 0.700, 6.8), (27, 0.446, 27.7), (36, 0.453, 56.5)]
    history.append((45, 0.506, 50.3))  # 13% above the lowest: not tied
    tolerant, strict = BestSoFar(), BestSoFar()
    for step, loss, chrf in history:
        tolerant.record(_validated(step, loss, chrf), tolerance=0.05)
        strict.record(_validated(step, loss, chrf))
    assert (strict.step, strict.eval_loss) == (27, 0.446)
    assert (tolerant.step, tolerant.eval_loss, tolerant.chrf) == (36, 0.453, 56.5)
    assert tolerant.lowest == strict.lowest == 0.446
    assert tolerant.since == strict.since == 2  # stopping still reads the lowest loss
    assert BestSoFar.from_json(tolerant.to_json()) == tolerant


def test_a_clearly_lower_loss_is_kept_whatever_its_sample() -> None:
    best = BestSoFar()
    assert best.record(_validated(9, 1.66, 33.5), tolerance=0.05)
    assert best.record(_validated(18, 1.27, 31.4), tolerance=0.05)  # 24% lower
    assert not best.record(_validated(27, 1.40, 40.0), tolerance=0.05)  # above the tie
    assert best.record(_validated(36, 1.26, 20.0), tolerance=0.05) is False  # tied, worse
    assert (best.step, best.lowest) == (18, 1.26)
    assert best.record(_validated(45, 1.25, None), tolerance=0.05)  # tied, unscored: the loss
    assert best.step == 45


def test_by_score_the_best_sample_is_kept_and_stopping_waits_for_a_better_one() -> None:
    # A Qwen2.5-Coder-0.5B training on 80 generated MCoNaLa examples (step, loss, sample
    # ChrF++): the loss is lowest at epoch 1, the sample best at epoch 2.
    history = [(9, 1.2698, 26.7), (18, 1.5614, 36.4), (27, 2.1373, 35.7)]
    by_score, by_loss = BestSoFar(), BestSoFar()
    kept = [by_score.record(_validated(*h), 0.05, SCORE) for h in history]
    for h in history:
        by_loss.record(_validated(*h), 0.05, LOSS)
    assert kept == [True, True, False]
    assert (by_score.step, by_score.eval_loss, by_score.chrf, by_score.since) == (
        18,
        1.5614,
        36.4,
        1,
    )
    assert (by_loss.step, by_loss.since) == (9, 2)
    assert by_score.exhausted(1) and not by_score.exhausted(2)
    assert BestSoFar.from_json(by_score.to_json()) == by_score
    # An equal score goes to the lower loss; a validation without a sample, to the loss rule.
    assert by_score.record(_validated(36, 1.5, 36.4), 0.05, SCORE)
    assert (by_score.step, by_score.since) == (36, 0)
    assert not by_score.record(_validated(45, 1.6, 36.4), 0.05, SCORE)
    unscored = BestSoFar()
    assert unscored.record(_validated(9, 1.0, None), 0.05, SCORE)
    assert not unscored.record(_validated(18, 1.2, None), 0.05, SCORE)
    assert (unscored.step, unscored.since) == (9, 1)


def test_an_unset_learning_rate_follows_the_base_models_size() -> None:
    assert learning_rate_for(134_515_008, lora=False) == 5e-5  # SmolLM2-135M: the paper's
    assert learning_rate_for(630_167_424, lora=False) == 2.3e-5  # Qwen2.5-Coder-0.5B
    assert learning_rate_for(1_543_714_304, lora=False) == 1.5e-5
    assert learning_rate_for(70_000_000_000, lora=False) == 1e-5  # the floor
    assert learning_rate_for(630_167_424, lora=True) == 5e-5
    assert learning_rate_for(0, lora=False) == 5e-5
    unset = TrainOptions()
    assert unset.with_learning_rate_for(630_167_424).learning_rate == 2.3e-5
    chosen = TrainOptions(learning_rate=1e-4)
    assert chosen.with_learning_rate_for(630_167_424) is chosen


def test_keep_best_by_is_checked_and_read_from_the_proto() -> None:
    assert TrainOptions().keep_best_by == LOSS
    with pytest.raises(InvalidInput, match=r"options\.keep_best_by"):
        TrainOptions(keep_best_by="accuracy").validate()
    assert options_from_pb(trainer_pb2.TrainOptions(keep_best_by="loss")).keep_best_by == LOSS
    with pytest.raises(InvalidInput, match=r"options\.keep_best_by"):
        options_from_pb(trainer_pb2.TrainOptions(keep_best_by="best"))


def test_checkpoints_written_before_ties_resume_with_their_lowest() -> None:
    # The lowest loss and the kept weights' ChrF++ are read from the saved validations.
    history = [_validated(2, 0.7, 10.0).to_json(), _validated(4, 0.5, 30.0).to_json()]
    history.append(_validated(6, 0.6, 40.0).to_json())
    old = {"step": 4, "eval_loss": 0.5, "since": 1, "history": history}
    resumed = BestSoFar.from_json(old)
    assert (resumed.lowest, resumed.chrf) == (0.5, 30.0)
    assert resumed.to_json() == old


def test_recipe_fields_unset_in_the_proto_take_the_defaults() -> None:
    options = options_from_pb(trainer_pb2.TrainOptions())
    defaults = TrainOptions()
    recipe = (
        "warmup_ratio",
        "early_stopping_patience",
        "eval_metric_examples",
        "keep_best",
        "keep_best_tolerance",
        "validate_on_demonstrations",
    )
    for name in (*recipe, "min_steps"):
        assert getattr(options, name) == getattr(defaults, name)
    chosen = options_from_pb(
        trainer_pb2.TrainOptions(
            warmup_ratio=0.0, early_stopping_patience=0, keep_best=False, eval_steps=50
        )
    )
    assert (chosen.warmup_ratio, chosen.early_stopping_patience) == (0.0, 0)
    assert (chosen.keep_best, chosen.eval_steps) == (False, 50)
    assert options_from_pb(trainer_pb2.TrainOptions(min_steps=0)).min_steps == 0
    assert options.max_tokens_per_pass == 0
    passes = trainer_pb2.TrainOptions(max_tokens_per_pass=1024)
    assert options_from_pb(passes).max_tokens_per_pass == 1024
    off = trainer_pb2.TrainOptions(validate_on_demonstrations=False)
    assert options_from_pb(off).validate_on_demonstrations is False
    with pytest.raises(InvalidInput, match=r"options\.warmup_ratio"):
        options_from_pb(trainer_pb2.TrainOptions(warmup_ratio=0.9))


@pytest.mark.parametrize(
    ("epochs", "min_steps", "steps_per_epoch", "planned"),
    [
        (3, 100, 9, 12),  # 80 generated examples (72 to train on): 27 steps become 108
        (3, 100, 1000, 3),  # large data: the epochs asked
        (30, 100, 9, 30),  # more epochs asked than the minimum needs
        (3, 100, 2, 20),  # tiny data: raised no further than MIN_STEPS_MAX_EPOCHS
        (3, 0, 9, 3),  # switched off
        (3, 100, 0, 20),  # no training rows: nothing to divide by
    ],
)
def test_small_data_gets_more_epochs_up_to_min_steps(
    epochs: int, min_steps: int, steps_per_epoch: int, planned: int
) -> None:
    options = TrainOptions(epochs=epochs, min_steps=min_steps)
    assert planned_epochs(options, steps_per_epoch, validated=True) == planned
    assert MIN_STEPS_MAX_EPOCHS == 20


def test_epochs_are_raised_only_where_validation_keeps_the_best_weights() -> None:
    options = TrainOptions(epochs=3, min_steps=100)
    assert planned_epochs(options, 9, validated=True) == 12
    assert planned_epochs(options, 9, validated=False) == 3  # the last weights are the model
    last = TrainOptions(epochs=3, min_steps=100, keep_best=False)
    assert planned_epochs(last, 9, validated=True) == 3


def test_the_model_card_says_why_the_epochs_were_raised(tmp_path: Path) -> None:
    task = TaskSpec("Answer.", (Example("2+2", "4"),))
    base = BaseModel("owner/base", tmp_path, "decoder-only", "0" * 64, "store")
    options = TrainOptions(epochs=3, min_steps=100)
    raised = model_card(base, task, options, {"report": {"planned_epochs": 12}})
    assert "| epochs | 12 (3 asked, raised to reach 100 steps) |" in raised
    asked = model_card(base, task, options, {"report": {"planned_epochs": 3}})
    assert "| epochs | 3 |" in asked
    older = model_card(base, task, options, {"report": {}})  # a report from before the field
    assert "| epochs | 3 |" in older
    assert "| memory | enough for the gradients and AdamW state |" in older
    tight = model_card(base, task, options, {"report": {"memory_tight": True}})
    assert "| memory | tight: freed memory was returned to the system at once" in tight


def test_the_model_is_held_to_its_training_outputs_form_unless_asked_not_to(
    tmp_path: Path,
) -> None:
    task = TaskSpec("Answer from the context.", (Example("Q: who? C: Ann came.", "Ann"),))
    rows = tuple(Example(f"Q: who? C: Person{i} came.", f"Person{i}") for i in range(10))
    data = TrainingData(rows, ())
    job = TrainJob(datasets=(), base_model="b", task=task, options=TrainOptions())
    assert training_output_form(data, job) == OutputForm(SPAN)
    off = replace(job, options=TrainOptions(constrain_outputs=False))
    assert training_output_form(data, off) == OutputForm()
    assert options_from_pb(trainer_pb2.TrainOptions()).constrain_outputs
    assert not options_from_pb(trainer_pb2.TrainOptions(constrain_outputs=False)).constrain_outputs
    base = BaseModel("owner/base", tmp_path, "decoder-only", "0" * 64, "store")
    card = model_card(base, task, TrainOptions(), {"report": {}}, OutputForm(SPAN))
    assert "Every training output was a span of its input" in card
    assert "used as the model writes them" in model_card(base, task, TrainOptions(), {})


def test_a_student_spec_keeps_its_output_form(tmp_path: Path) -> None:
    spec = StudentSpec("decoder-only", "Classify.", output_form=LABELS, output_labels=("a", "b"))
    spec.save(tmp_path)
    loaded = StudentSpec.load(tmp_path)
    assert loaded == spec and loaded.form == OutputForm(LABELS, ("a", "b"))
    assert loaded.hold(["x", "y"], ["A", "neither"]) == ["a", "neither"]
    with pytest.raises(InvalidInput, match="output_form"):
        StudentSpec("decoder-only", "", output_form=LABELS)
    older = json.loads((tmp_path / "p2m_student.json").read_text())
    del older["output_form"], older["output_labels"]  # a folder saved before the form
    (tmp_path / "p2m_student.json").write_text(json.dumps(older))
    assert StudentSpec.load(tmp_path).form == OutputForm()


def test_the_instructions_token_limit_is_an_option_saved_with_the_model(tmp_path: Path) -> None:
    assert options_from_pb(trainer_pb2.TrainOptions()).max_instruction_tokens == 0
    tagged = options_from_pb(trainer_pb2.TrainOptions(max_instruction_tokens=32))
    assert tagged.max_instruction_tokens == 32
    with pytest.raises(InvalidInput) as caught:
        options_from_pb(trainer_pb2.TrainOptions(max_instruction_tokens=-1))
    assert caught.value.field == "options.max_instruction_tokens"
    assert training_key("b" * 64, [], "Do it.", tagged) != training_key(
        "b" * 64, [], "Do it.", TrainOptions()
    )
    base = BaseModel("owner/base", tmp_path, "decoder-only", "0" * 64, "store")
    task = TaskSpec("Do it.", ())
    assert "at most 32 tokens (`max_instruction_tokens`)" in model_card(base, task, tagged, {})
    assert "at most 67% (256 tokens)" in model_card(base, task, TrainOptions(), {})
    spec = StudentSpec("decoder-only", "Do it.", max_instruction_tokens=32)
    spec.save(tmp_path)
    assert StudentSpec.load(tmp_path).max_instruction_tokens == 32
    older = json.loads((tmp_path / "p2m_student.json").read_text())
    del older["max_instruction_tokens"]  # a folder saved before the option: the share alone
    (tmp_path / "p2m_student.json").write_text(json.dumps(older))
    assert StudentSpec.load(tmp_path).max_instruction_tokens == 0
    with pytest.raises(InvalidInput, match="max_instruction_tokens"):
        StudentSpec("decoder-only", "", max_instruction_tokens=-1)


def test_a_worker_killed_for_memory_is_said_so_with_the_largest_user():
    # Ray's text for the worker its memory monitor killed (as logged in a pipeline run).
    text = (
        "Task was killed due to the node running low on memory.\n"
        "Memory on the node (IP: 192.0.2.2, ID: 467a18b6) was 22.65GB used / 23.54GB limit "
        "(0.962382)\nTop 10 memory users:\nPID\tMEM(GB)\tCOMMAND\n17264\t15.74\t"
        "ray::RayTrainWorker\n10240\t2.70\t/work/.venv/bin/python -m p2m serve llm\n"
        "Refer to the documentation on how to address the out of memory issue: https://docs..."
    )
    said = short_error(RuntimeError(text))
    assert said.startswith("out of memory: Ray stopped the training with the node at 22.65 of")
    assert "23.54 GB" in said and "ray::RayTrainWorker, 15.74 GB" in said
    assert "resumes from the newest checkpoint" in said
    assert short_error(RuntimeError("a\nb\nc\nboom")) == "b | c | boom"  # others: the last lines


def test_the_best_weights_live_on_disk_and_checkpoints_link_them(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from p2m.trainer.best_weights import BestWeights
    from tests.tiny_models import tiny_llama

    model = tiny_llama()
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    (tmp_path / "best" / "left-by-a-crash").mkdir(parents=True)
    best = BestWeights(tmp_path / "best")
    assert best.folder is None and not (tmp_path / "best" / "left-by-a-crash").exists()
    best.save(model, step=9)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)  # trained on past the best: the saved files keep the best
    checkpoint = tmp_path / "checkpoint-step-0000018" / "best_model"
    best.link_into(checkpoint)
    saved = checkpoint / "model.safetensors"
    assert saved.stat().st_ino == (best.folder / "model.safetensors").stat().st_ino  # no copy
    for name, value in load_file(saved).items():
        torch.testing.assert_close(value, expected[name])
    best.save(model, step=27)  # a new best replaces the old folder
    assert best.folder is not None and best.folder.name == "step-0000027"
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["step-0000027"]
    resumed = BestWeights(tmp_path / "best")  # resuming: the checkpoint's best is adopted
    resumed.adopt(checkpoint, step=9)
    for name, value in load_file(resumed.folder / "model.safetensors").items():
        torch.testing.assert_close(value, expected[name])
    resumed.discard()
    assert not (tmp_path / "best").exists() and saved.is_file()  # the checkpoint keeps its own
