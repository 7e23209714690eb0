"""Turn the last checkpoint into the student model folder: weights, tokenizer, card, settings."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from p2m.common.output_form import FREE, SPAN, OutputForm
from p2m.common.prompt_layout import INSTRUCTION_SHARE, instruction_budget
from p2m.common.student import TEMPLATE_VERSION, ensure_pad_token
from p2m.common.types import TaskSpec
from p2m.trainer.base_model import BaseModel
from p2m.trainer.options import SCORE, TrainOptions, student_spec
from p2m.trainer.worker import BEST_DIR, MODEL_DIR

TRAINING_FILE = "p2m_training.json"
CARD_FILE = "README.md"


def build_model_folder(
    checkpoint_dir: Path,
    out: Path,
    base: BaseModel,
    task: TaskSpec,
    options: TrainOptions,
    training: Mapping[str, Any],
    form: OutputForm,
) -> None:
    """Write the student model folder ``out`` from a checkpoint.

    The weights are the checkpoint's best (``BestSoFar``'s choice) where it kept them apart,
    else its own. LoRA adapters are merged into the base weights, so the folder loads with plain
    ``from_pretrained``. Beside the weights: the tokenizer, a generation config with the
    decoding defaults, ``p2m_student.json`` (with the output ``form`` answers are held to),
    ``p2m_training.json`` and a model card.
    """
    out.mkdir(parents=True, exist_ok=True)
    weights = checkpoint_dir / (BEST_DIR if (checkpoint_dir / BEST_DIR).is_dir() else MODEL_DIR)
    if options.lora:
        _merge_lora(weights, base, out)
    else:
        for item in weights.iterdir():
            shutil.copy2(item, out / item.name)
    _save_tokenizer_and_generation(base, options, out)
    spec = student_spec(
        options,
        base.architecture,
        task.instruction,
        base_model=base.name,
        output_form=form.kind,
        output_labels=form.labels,
    )
    spec.save(out)
    (out / TRAINING_FILE).write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")
    card = model_card(base, task, options, training, form)
    (out / CARD_FILE).write_text(card, encoding="utf-8")


def _form_sentence(form: OutputForm) -> str:
    """What the card says of the output form answers are held to."""
    if form.kind == FREE:
        return "Its answers are used as the model writes them."
    return (
        f"Every training output was {form.describe()}, so each answer is read as the "
        f"{'span' if form.kind == SPAN else 'label'} it is most like "
        "(`output_form` in `p2m_student.json`)."
    )


def _merge_lora(adapter_dir: Path, base: BaseModel, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    loader = (
        AutoModelForSeq2SeqLM if base.architecture == "encoder-decoder" else AutoModelForCausalLM
    )
    model = loader.from_pretrained(base.path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out)


def _save_tokenizer_and_generation(base: BaseModel, options: TrainOptions, out: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(base.path)
    ensure_pad_token(tokenizer)
    tokenizer.save_pretrained(out)
    try:
        generation = GenerationConfig.from_pretrained(base.path)
    except OSError:
        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(base.path))
    generation.max_new_tokens = options.max_output_tokens
    generation.do_sample = False
    generation.num_beams = 1
    for sampling_only in ("temperature", "top_p", "top_k"):
        setattr(generation, sampling_only, None)
    generation.pad_token_id = tokenizer.pad_token_id
    if generation.eos_token_id is None:
        generation.eos_token_id = tokenizer.eos_token_id
    generation.save_pretrained(out)


def model_card(
    base: BaseModel,
    task: TaskSpec,
    options: TrainOptions,
    training: Mapping[str, Any],
    form: OutputForm | None = None,
) -> str:
    """A Hugging Face model card: what the model does, what it was trained on, and how well."""
    report = training.get("report", {})
    demos = "\n".join(f"| {_cell(d.input)} | {_cell(d.output)} |" for d in task.demonstrations[:5])
    demos_table = f"| input | output |\n|---|---|\n{demos}\n" if demos else ""
    datasets = "\n".join(f"- `{uri}`" for uri in training.get("datasets", []))
    eval_loss = report.get("final_eval_loss")
    return f"""---
base_model: {base.name}
library_name: transformers
tags:
- prompt2model
- text2text
---

# Student model for: {_cell(task.instruction)}

Fine-tuned by Prompt2Model from **{base.name}** ({base.architecture}) to do one task.

## Task

{task.instruction}

{demos_table}
Inputs are given to the model as the instruction, then `Input: <input>` and `Output:`, in at most
{options.max_input_tokens} tokens (`p2m.common.prompt_layout`, template {TEMPLATE_VERSION}): the
instruction takes at most {_instruction_limit(options)} of them (a longer one keeps its start), and
an input too long for the rest loses its middle.{_shown_sentence(report)}
{_form_sentence(form or OutputForm())}

## Training data

{report.get("train_examples", 0)} training and {report.get("validation_examples", 0)} validation
examples{_demonstrations_clause(report)}, combined and shuffled from:

{datasets}

## Training

| setting | value |
|---|---|
| epochs | {_planned_epochs(options, report)} |
| learning rate | {options.learning_rate} (AdamW; warmup {options.warmup_ratio:.0%}, linear decay) |
| batch size per worker | {options.batch_size}{_passes(options)} |
| precision | {report.get("precision", "fp32")} (forward pass; weights fp32) |
| memory | {_memory(report)} |
| batches grouped by length | {"yes" if options.group_by_length else "no"} |
| workers | {report.get("num_workers", 1)} ({report.get("device", "cpu")}) |
| LoRA | {_lora(options, report)} |
| max input / output tokens | {options.max_input_tokens} / {options.max_output_tokens} |
| seed | {options.seed} |

## Metrics

| metric | value |
|---|---|
| steps | {report.get("steps", 0)} |
| final training loss | {_number(report.get("final_loss"))} |
| final validation loss | {_number(eval_loss)} |
| weights kept | {_kept(options, report)} |
| training throughput (examples/s) | {_number(report.get("samples_per_second"))} |

{_validations_table(report.get("evaluations", ()))}
{_search_table(report.get("search_trials", ()))}
Test-set scores come from the evaluator (`p2m evaluate`).
"""


def _passes(options: TrainOptions) -> str:
    if not options.max_tokens_per_pass:
        return ""
    return f" (in passes of at most {options.max_tokens_per_pass} padded tokens)"


def _lora(options: TrainOptions, report: Mapping[str, Any]) -> str:
    if not options.lora:
        return "no"
    reason = report.get("lora_reason")
    return f"r={options.lora_r}, alpha={options.lora_alpha} (merged)" + (
        f"; chosen: {reason}" if reason else ""
    )


def _memory(report: Mapping[str, Any]) -> str:
    if not report.get("memory_tight"):
        return "enough for the gradients and AdamW state"
    return "tight: freed memory was returned to the system at once (a lower peak, slower steps)"


def _planned_epochs(options: TrainOptions, report: Mapping[str, Any]) -> str:
    """The epochs set, and why where ``min_steps`` raised them."""
    planned = report.get("planned_epochs") or options.epochs
    if planned <= options.epochs:
        return str(planned)
    return f"{planned} ({options.epochs} asked, raised to reach {options.min_steps} steps)"


def _kept(options: TrainOptions, report: Mapping[str, Any]) -> str:
    best = report.get("best_eval_loss")
    if not options.keep_best or best is None:
        return "the last step's"
    early = ", stopped early (no improvement)" if report.get("stopped_early") else ""
    why = why_kept(report, options)
    return f"step {report.get('best_step', 0)}'s ({why}){early}"


def why_kept(report: Mapping[str, Any], options: TrainOptions) -> str:
    """Why the kept weights were kept: the best sample, the lowest loss, or a tie won on ChrF++."""
    best = report["best_eval_loss"]
    evaluations: Sequence[Mapping[str, Any]] = report.get("evaluations", ())
    chrf = next(
        (e.get("chrf") for e in evaluations if e.get("step") == report.get("best_step")), None
    )
    if options.keep_best_by == SCORE and chrf is not None:
        return f"highest ChrF++ on the validation sample, {chrf:.1f}; validation loss {best:.4f}"
    lowest = min(
        (e["eval_loss"] for e in evaluations if e.get("eval_loss") is not None), default=best
    )
    if best <= lowest:
        return f"lowest validation loss, {best:.4f}"
    return (
        f"validation loss {best:.4f}, within {options.keep_best_tolerance:.0%} of the lowest "
        f"({lowest:.4f}), and the higher ChrF++ on the validation sample"
        + (f" ({chrf:.1f})" if chrf is not None else "")
    )


def _demonstrations_clause(report: Mapping[str, Any]) -> str:
    """Which of the validation examples are the prompt's demonstrations (none: nothing)."""
    count = report.get("validation_demonstrations", 0)
    return f" ({count} of them the prompt's demonstrations, validated first)" if count else ""


def _shown_sentence(report: Mapping[str, Any]) -> str:
    """Which demonstrations every prompt shows (none: nothing)."""
    count = report.get("prompt_demonstrations", 0)
    if not count:
        return ""
    return (
        f" The instruction above ends with the first {count} demonstrations, so every prompt "
        "shows them (`prompt_demonstrations`); they were left out of validation."
    )


def _validations_table(evaluations: Sequence[Mapping[str, Any]]) -> str:
    """The learning curve: one row per validation (Exact Match and ChrF++ on the sample)."""
    if not evaluations:
        return ""
    rows = [
        f"| {e['step']} | {e['epoch']:.2f} | {_number(e.get('loss'))} | "
        f"{_number(e.get('eval_loss'))} | {_number(e.get('exact_match'))} | "
        f"{_number(e.get('chrf'))} |"
        for e in evaluations
    ]
    return (
        "### Validations\n\n| step | epoch | training loss | validation loss | exact match "
        "(sample) | ChrF++ (sample) |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _search_table(trials: Sequence[Mapping[str, Any]]) -> str:
    """The trials of a learning rate and epochs search, the chosen one marked."""
    if not trials:
        return ""
    rows = [
        f"| {t['trial']} | {t['learning_rate']:.1e} | {t['epochs']} | {t['steps']} | "
        f"{_number(t.get('best_eval_loss'))} | {_cell(t['outcome'])} |"
        for t in trials
    ]
    return (
        "### Search\n\nRay Tune trials (ASHA stopped those behind at an epoch); the model is "
        "the chosen one's.\n\n| trial | learning rate | epochs | steps | lowest validation loss "
        "| outcome |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:200]


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def _instruction_limit(options: TrainOptions) -> str:
    """How many prompt tokens the instruction may take, for people."""
    budget = instruction_budget(options.max_input_tokens, options.max_instruction_tokens)
    if options.max_instruction_tokens:
        return f"{budget} tokens (`max_instruction_tokens`)"
    return f"{INSTRUCTION_SHARE:.0%} ({budget} tokens)"
