"""Contract of ``word_count``: count the words of a text.

Pure data: importing it must not need the worker (the gateway imports it too).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ferrisqueue.jobtypes import JobType

TOP_WORDS = 10
"""How many of the most frequent words a result lists."""


class WordCountPayload(BaseModel):
    """The text to count, and the shortest word that counts."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=1_000_000, description="The text whose words are counted.")
    min_length: int = Field(
        default=1, ge=1, le=100, description="Words shorter than this many letters are ignored."
    )


class WordFrequency(BaseModel):
    """One word and how often it occurs."""

    model_config = ConfigDict(extra="forbid")

    word: str
    count: int


class WordCountResult(BaseModel):
    """What the text holds, words compared case-insensitively."""

    model_config = ConfigDict(extra="forbid")

    words: int = Field(description="Words of at least min_length letters.")
    distinct: int = Field(description="Different words among them.")
    top: list[WordFrequency] = Field(
        description=f"The {TOP_WORDS} most frequent, most frequent first, ties alphabetically."
    )


JOB_TYPE = JobType(
    name="word_count",
    description="Count the words of a text (example plugin).",
    payload=WordCountPayload,
    result=WordCountResult,
)
