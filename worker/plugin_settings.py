"""A plugin's own settings: a pydantic-settings model read from ``FQ_PLUGIN_<NAME>_*``.

FerrisQueue's :class:`~ferrisqueue.settings.Settings` ignores variables it does not know, so
a plugin cannot add fields to it; it declares a model of its own instead::

    class ExampleSettings(PluginSettings):
        model_config = SettingsConfigDict(env_prefix="FQ_PLUGIN_EXAMPLE_")

        max_text_chars: int = Field(default=1_000_000, ge=1)

    settings = ExampleSettings.load()  # in the plugin's factory, so at worker start

The prefix is the plugin's own (checked when the class is defined), so two plugins cannot
read each other's variables, nor FerrisQueue's. :meth:`PluginSettings.load` validates at
worker start and turns a validation error into a
:class:`~ferrisqueue.errors.ConfigurationError` naming each bad variable: the worker refuses
to start rather than fail every job later.
"""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ferrisqueue.errors import ConfigurationError

PREFIX = "FQ_PLUGIN_"
_PLUGIN_PREFIX = re.compile(rf"^{PREFIX}[A-Z0-9]+(?:_[A-Z0-9]+)*_$")


class PluginSettings(BaseSettings):
    """Base of a plugin's settings. A subclass sets ``env_prefix`` to
    ``FQ_PLUGIN_<NAME>_`` (upper case, ending in ``_``) in its ``model_config``."""

    # Like FerrisQueue's own settings: a .env file works too, and variables of other plugins
    # (or typos of this one's, sadly) are ignored rather than refused.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        prefix = cls.model_config.get("env_prefix", "")
        if not _PLUGIN_PREFIX.match(prefix):
            raise TypeError(
                f"{cls.__qualname__}: env_prefix must be {PREFIX}<NAME>_ in upper case, "
                f"not {prefix!r}"
            )

    @classmethod
    def load(cls, **values: Any) -> Self:
        """The settings from the environment (``values`` win); a
        :class:`~ferrisqueue.errors.ConfigurationError` listing every bad variable."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise ConfigurationError(_explain(cls, exc)) from None


def _explain(model: type[PluginSettings], exc: ValidationError) -> str:
    prefix = model.model_config.get("env_prefix", "")
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = f"{prefix}{field.upper()}"
        # Not the value given: it may be a secret (a password in a URL).
        problems.append(f"  {name}: {error['msg']}")
    return f"invalid settings of {model.__qualname__}:\n" + "\n".join(problems)
