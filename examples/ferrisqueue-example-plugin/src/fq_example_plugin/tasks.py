"""The ``word_count`` handler, registered by :func:`register` (entry point group
``ferrisqueue.tasks``)."""

from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING

from fq_example_plugin.contract import TOP_WORDS, WordCountPayload, WordCountResult, WordFrequency
from fq_example_plugin.journal import Journal

if TYPE_CHECKING:  # only for type hints: the package imports no worker code at run time
    from ferrisqueue.settings import Settings
    from worker.context import JobContext
    from worker.registry import TaskRegistry

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
"""Letters, with inner apostrophes (``don't``); digits and punctuation separate words."""


def count_words(text: str, min_length: int = 1) -> WordCountResult:
    """The word counts of ``text``; pure, so it is tested without a worker."""
    text = text.replace("\u2019", "'")  # a typographic apostrophe makes the same word
    counts = Counter(word.casefold() for word in WORD.findall(text) if len(word) >= min_length)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]
    return WordCountResult(
        words=sum(counts.values()),
        distinct=len(counts),
        top=[WordFrequency(word=word, count=count) for word, count in top],
    )


def register(registry: TaskRegistry, settings: Settings) -> None:
    """Called by each worker at start with its task registry and settings."""

    # A plain ``def`` handler runs in a thread, so a long text cannot stall the worker's
    # event loop; an ``async def`` would run on the loop itself. The registry validates the
    # payload into WordCountPayload first (a bad one fails the job without retries) and
    # stores the returned model as the job's result.
    @registry.task("word_count")
    def word_count(ctx: JobContext, payload: WordCountPayload) -> WordCountResult:
        result = count_words(payload.text, payload.min_length)
        # The worker's resource, opened by this plugin's middleware at worker start: reached
        # through the context, typed, never a global.
        ctx.resource(Journal).write(event="counted", job_id=ctx.job_id, words=result.words)
        return result
