"""The plugin's own settings, read from ``FQ_PLUGIN_EXAMPLE_*`` when a worker starts.

FerrisQueue's ``Settings`` has no room for a plugin's knobs (it ignores variables it does not
know), so the plugin declares a model of its own on
:class:`worker.plugin_settings.PluginSettings`. A bad value stops the worker at start with
the variable's name, instead of failing jobs later.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from worker.plugin_settings import PluginSettings


class ExampleSettings(PluginSettings):
    """``FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS``, ``FQ_PLUGIN_EXAMPLE_JOURNAL``."""

    model_config = SettingsConfigDict(env_prefix="FQ_PLUGIN_EXAMPLE_")

    max_text_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="Longest text this worker counts; a longer one is refused for good "
        "(a limit of the deployment, e.g. the worker's memory, not of the contract).",
    )
    journal: Path | None = Field(
        default=None,
        description="The attempt journal (JSON lines). Unset: example-plugin.jsonl in FQ_VAR_DIR.",
    )
