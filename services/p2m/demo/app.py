"""The Gradio demo of a deployed student: an input box, the model's output, examples, metrics.

Gradio is imported only by :func:`build_demo`, after analytics are switched off, so importing
this module is cheap and never talks to the network. The page needs nothing from the internet:
the default theme's fonts are served by Gradio itself, and no share link is ever made.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from p2m.common.errors import InvalidInput, P2MError
from p2m.common.types import TaskSpec
from p2m.demo.endpoint import KServeClient

if TYPE_CHECKING:
    import gradio as gr

log = logging.getLogger(__name__)

#: elem_id values of the page's parts, for browser tests and custom CSS.
INPUT_ID = "p2m-input"
SUBMIT_ID = "p2m-submit"
OUTPUT_ID = "p2m-output"
EXAMPLES_ID = "p2m-examples"
METRICS_ID = "p2m-metrics"
#: The name of the predict route in Gradio's API (``/gradio_api/call/predict``).
API_NAME = "predict"

#: Metric names the evaluator reports twice (an alias of another column); shown once.
_ALIASES = {"bertscore": "bertscore_f1"}


@dataclass(frozen=True)
class RunMetrics:
    """A run's scores: one column per subject (e.g. student, teacher), one row per metric.

    Attributes:
        columns: ``(subject, {metric: value})`` pairs, in the order they are shown.
    """

    columns: tuple[tuple[str, Mapping[str, float]], ...]

    @classmethod
    def from_json(cls, data: Any, field: str = "metrics") -> RunMetrics:
        """The scores in any of the shapes a run writes them.

        Accepted: ``{metric: number}`` (one column, "model"), ``{subject: {metric: number}}``
        (e.g. student and teacher), or a ``p2m evaluate --json`` report
        (``{"metrics": {...}, "teacher": {"metrics": {...}}}``).

        Raises:
            InvalidInput: ``data`` has none of these shapes; ``field`` names the bad part.
        """
        if not isinstance(data, dict) or not data:
            raise InvalidInput(field, "must be a non-empty JSON object")
        if isinstance(data.get("metrics"), dict):  # `p2m evaluate --json`'s report
            columns = [("student", _numbers(data["metrics"], f"{field}.metrics"))]
            if isinstance(data.get("teacher"), dict):
                teacher = data["teacher"].get("metrics")
                columns.append(("teacher", _numbers(teacher, f"{field}.teacher.metrics")))
            return cls(tuple(columns))
        if any(isinstance(value, dict) for value in data.values()):
            subjects = []
            for subject, scores in data.items():
                where = f"{field}.{subject}"
                if isinstance(scores, dict) and isinstance(scores.get("metrics"), dict):
                    scores, where = scores["metrics"], f"{where}.metrics"
                subjects.append((str(subject), _numbers(scores, where)))
            return cls(tuple(subjects))
        return cls((("model", _numbers(data, field)),))

    def to_markdown(self) -> str:
        """A Markdown table: a row per metric, a column per subject, 4 decimals."""
        names: list[str] = []
        for _, scores in self.columns:
            names += [n for n in scores if n not in names and _ALIASES.get(n) not in scores]
        lines = [
            "| metric | " + " | ".join(_cell(s) for s, _ in self.columns) + " |",
            "|---|" + "---:|" * len(self.columns),
        ]
        for name in names:
            values = [f"{s[name]:.4f}" if name in s else "n/a" for _, s in self.columns]
            lines.append(f"| {_cell(name)} | " + " | ".join(values) + " |")
        return "\n".join(lines)


def task_from_json(data: Any, field: str = "task") -> TaskSpec:
    """The task the demo shows, from ``TaskSpec.to_json``'s form (the instruction stripped).

    Raises:
        InvalidInput: A key is missing or of the wrong type; ``field`` names it.
    """
    task = TaskSpec.from_json(data, field)
    return TaskSpec(instruction=task.instruction.strip(), demonstrations=task.demonstrations)


def build_demo(
    endpoint: str,
    name: str,
    task: TaskSpec | None = None,
    metrics: RunMetrics | None = None,
    *,
    timeout_s: float = 60.0,
    client: KServeClient | None = None,
) -> gr.Blocks:
    """The demo page of the model ``name`` served at ``endpoint`` (KServe v1 protocol).

    Args:
        endpoint: Base URL of the model server, e.g. ``http://127.0.0.1:8080``.
        name: The model's name at that server.
        task: The task: its instruction is the page's description, its demonstrations' inputs
            the examples.
        metrics: The run's scores, shown as a table.
        timeout_s: Seconds to wait for one prediction.
        client: The endpoint's client (default: a new one for ``endpoint`` and ``name``).

    Returns:
        The Gradio app; launch it with :func:`launch_options`.
    """
    gr = import_gradio()
    model = client or KServeClient(endpoint, name, timeout_s=timeout_s)
    title = f"{model.name}: Prompt2Model demo"

    def predict(text: str) -> str:
        if not text or not text.strip():
            raise gr.Error("Type an input first.", title="No input", print_exception=False)
        try:
            return model.predict(text)
        except InvalidInput as exc:
            log.warning("prediction refused: %s", exc.problem)
            raise gr.Error(
                exc.problem, title="The model refused the input", print_exception=False
            ) from None
        except P2MError as exc:
            log.warning("prediction failed: %s", exc)
            raise gr.Error(
                str(exc), title="The model endpoint failed", print_exception=False
            ) from None

    with gr.Blocks(title=title, analytics_enabled=False) as demo:
        gr.Markdown(f"# {_text(title)}", elem_id="p2m-title")
        if task is not None:
            gr.Markdown(_text(task.instruction), elem_id="p2m-description")
        gr.Markdown(
            f"Model `{model.name}` served at `{model.endpoint}`.",
            elem_id="p2m-endpoint",
        )
        with gr.Row():
            with gr.Column():
                input_box = gr.Textbox(label="Input", lines=4, elem_id=INPUT_ID)
                submit = gr.Button("Submit", variant="primary", elem_id=SUBMIT_ID)
            output_box = gr.Textbox(label="Output", lines=4, interactive=False, elem_id=OUTPUT_ID)
        if task is not None and task.demonstrations:
            gr.Examples(
                examples=[[d.input] for d in task.demonstrations],
                inputs=[input_box],
                label="The task's demonstrations",
                cache_examples=False,
                elem_id=EXAMPLES_ID,
            )
        if metrics is not None:
            gr.Markdown("### This run's scores\n\n" + metrics.to_markdown(), elem_id=METRICS_ID)
        # The endpoint takes concurrent requests (KServe batches them); Gradio defaults to one.
        event = {
            "fn": predict,
            "inputs": [input_box],
            "outputs": [output_box],
            "concurrency_limit": 8,
        }
        submit.click(**event, api_name=API_NAME)
        input_box.submit(**event, api_visibility="private")
    return demo


def import_gradio() -> Any:
    """Gradio, imported with its analytics (and the Hugging Face hub's telemetry) off.

    The variable is set, not defaulted: a demo that runs offline must never phone home, and
    Gradio reads it in several places besides ``Blocks(analytics_enabled=...)``.
    """
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import gradio

    return gradio


def launch_options(host: str, port: int) -> dict[str, Any]:
    """Keyword arguments of ``Blocks.launch`` for a local, offline demo on ``host:port``."""
    return {
        "server_name": host,
        "server_port": port,
        "share": False,
        "ssr_mode": False,  # no Node.js server
        "mcp_server": False,
        "pwa": False,
        "inbrowser": False,
        "quiet": True,
        "show_error": True,
        "prevent_thread_lock": True,
    }


def _numbers(scores: Any, field: str) -> dict[str, float]:
    if not isinstance(scores, dict) or not scores:
        raise InvalidInput(field, "must be a non-empty object of metric name -> number")
    numbers = {}
    for name, value in scores.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise InvalidInput(f"{field}.{name}", f"must be a number, not {value!r}")
        numbers[str(name)] = float(value)
    return numbers


def _cell(text: str) -> str:
    return _text(text).replace("|", "\\|")


def _text(text: str) -> str:
    """Text shown as Markdown without being read as HTML or markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
