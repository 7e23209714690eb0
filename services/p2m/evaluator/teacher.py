"""The teacher as a predictor: the task's few-shot request sent to the LLM endpoint per input.

The request is the generator's (``p2m.common.teacher_prompt``): the teacher scored here is
the teacher that wrote the training data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from p2m.common.budget import Budget
from p2m.common.closed_set import closed_set_labels
from p2m.common.errors import BudgetExhausted, LLMError, LLMOutputError, Unavailable
from p2m.common.llm import LLMClient, UsageCounters
from p2m.common.teacher_prompt import answer_messages, ask_answer, teacher_instruction
from p2m.common.types import TaskSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherPredictions:
    """What the teacher answered.

    Attributes:
        predictions: One cleaned answer per input; None where the budget ran out first, empty
            where the endpoint could not read the model's answer.
        latencies_s: Seconds per answered request (retries included); None where unanswered
            or unreadable.
        usage: Requests and tokens spent.
        wall_s: Seconds from the first request sent to the last answer.
    """

    predictions: tuple[str | None, ...]
    latencies_s: tuple[float | None, ...]
    usage: UsageCounters
    wall_s: float


class TeacherPredictor:
    """Sends each input to the LLM with the task's few-shot prompt, ``concurrency`` at a time."""

    def __init__(
        self,
        llm: LLMClient,
        task: TaskSpec,
        *,
        max_new_tokens: int,
        concurrency: int,
        budget: Budget,
    ) -> None:
        """Prompt ``llm`` with ``task`` at temperature 0, within ``budget``."""
        self._llm = llm
        self._task = task
        self._max_new_tokens = max_new_tokens
        self._concurrency = max(1, concurrency)
        self._budget = budget
        self._instruction = teacher_instruction(task)
        self._choices = closed_set_labels(task)

    async def predict(
        self, inputs: Sequence[str], on_done: Callable[[int], None] | None = None
    ) -> TeacherPredictions:
        """Answer every input (in order); ``on_done(n)`` after each of the ``n`` answers so far.

        Inputs left when the budget runs out are not sent (their prediction is None).

        Raises:
            Unavailable: The endpoint failed a request after every retry (the other requests
                in flight are cancelled).
        """
        predictions: list[str | None] = [None] * len(inputs)
        latencies: list[float | None] = [None] * len(inputs)
        usage = UsageCounters()
        limit = asyncio.Semaphore(self._concurrency)
        done = 0
        out_of_budget = False

        async def one(index: int) -> None:
            nonlocal done, out_of_budget
            async with limit:
                if out_of_budget:
                    return
                try:
                    answer, result = await ask_answer(
                        self._llm,
                        answer_messages(
                            self._instruction, self._task.demonstrations, inputs[index]
                        ),
                        self._task.demonstrations,
                        choices=self._choices,
                        temperature=0.0,
                        max_tokens=self._max_new_tokens,
                        budget=self._budget,
                    )
                except BudgetExhausted:
                    out_of_budget = True
                    return
                except LLMError as exc:
                    usage.add(None, exc.attempts, ok=False)
                    raise
                except LLMOutputError:  # answered, but unreadable: a wrong answer, no outage
                    usage.add(None, 1, ok=True)
                    answer, result = "", None
            if result is not None:
                usage.add(result, result.attempts, ok=True)
                latencies[index] = result.latency_s
            predictions[index] = answer
            done += 1
            if on_done is not None:
                on_done(done)

        started = time.monotonic()
        tasks = [asyncio.create_task(one(index)) for index in range(len(inputs))]
        try:
            await asyncio.gather(*tasks)
        except LLMError as exc:
            raise Unavailable(
                f"the teacher's LLM endpoint failed ({exc}); {done} of {len(inputs)} "
                "examples were answered"
            ) from exc
        finally:
            for task in tasks:
                task.cancel()
        if out_of_budget:
            log.info("teacher budget spent", extra={"answered": done, "examples": len(inputs)})
        return TeacherPredictions(
            tuple(predictions), tuple(latencies), usage, time.monotonic() - started
        )
