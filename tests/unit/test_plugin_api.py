"""What a worker plugin builds on besides hooks: resources by type, its own settings under
``FQ_PLUGIN_<NAME>_``, and loading its middleware from an entry point."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ferrisqueue.errors import ConfigurationError
from ferrisqueue.settings import Settings
from worker import middleware as middleware_module
from worker.middleware import Middleware, load_middleware
from worker.plugin_settings import PluginSettings
from worker.resources import MissingResource, Resources

pytestmark = pytest.mark.timeout(10)


class Client:
    pass


class OtherClient(Client):
    pass


def test_a_resource_is_found_by_its_type_or_the_type_it_was_added_as() -> None:
    resources = Resources()
    client, other = resources.add(Client()), resources.add(OtherClient(), as_type=object)

    assert resources.get(Client) is client
    assert resources.get(object) is other
    assert OtherClient not in resources


def test_a_second_resource_of_one_type_is_refused() -> None:
    resources = Resources()
    resources.add(Client())

    with pytest.raises(ValueError, match="already open"):
        resources.add(Client())


def test_a_missing_resource_names_the_ones_that_are_open() -> None:
    resources = Resources()
    resources.add(Client())

    with pytest.raises(MissingResource, match=r"OtherClient on this worker \(open: .*Client\)"):
        resources.get(OtherClient)


class ExampleSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="FQ_PLUGIN_EXAMPLE_")

    max_text_chars: int = Field(default=100, ge=1)
    region: str


def test_plugin_settings_are_read_from_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS", "40")
    monkeypatch.setenv("FQ_PLUGIN_EXAMPLE_REGION", "eu")
    monkeypatch.setenv("FQ_MAX_TEXT_CHARS", "7")  # FerrisQueue's namespace is not the plugin's

    settings = ExampleSettings.load(_env_file=None)

    assert (settings.max_text_chars, settings.region) == (40, "eu")


def test_invalid_plugin_settings_name_every_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS", "0")
    monkeypatch.delenv("FQ_PLUGIN_EXAMPLE_REGION", raising=False)

    with pytest.raises(ConfigurationError) as refused:
        ExampleSettings.load(_env_file=None)

    assert str(refused.value) == (
        "invalid settings of ExampleSettings:\n"
        "  FQ_PLUGIN_EXAMPLE_MAX_TEXT_CHARS: Input should be greater than or equal to 1\n"
        "  FQ_PLUGIN_EXAMPLE_REGION: Field required"
    )


@pytest.mark.parametrize("prefix", ["", "FQ_", "FQ_PLUGIN_", "FQ_PLUGIN_example_", "APP_"])
def test_a_plugin_cannot_read_variables_outside_its_own_prefix(prefix: str) -> None:
    with pytest.raises(TypeError, match="env_prefix must be FQ_PLUGIN_<NAME>_"):

        class Stray(PluginSettings):
            model_config = SettingsConfigDict(env_prefix=prefix)


class Named(Middleware):
    def __init__(self, settings: Settings, label: str) -> None:
        self.label = label


def entry(name: str, factory: Any) -> EntryPoint:
    """An entry point of the middleware group whose ``load()`` gives ``factory``."""
    point = EntryPoint(name, f"plugin_{name}:factory", middleware_module.ENTRY_POINT_GROUP)

    class Loaded(EntryPoint):
        def load(self) -> Any:
            return factory

    return Loaded(point.name, point.value, point.group)


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    """The middleware entry points "installed" for the test."""
    points: list[EntryPoint] = []
    monkeypatch.setattr(middleware_module, "entry_points", lambda group: points)
    return points


def settings() -> Settings:
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_plugin_middleware_is_loaded_in_entry_point_name_order(
    installed: list[EntryPoint],
) -> None:
    installed += [
        entry("zeta", lambda s: Named(s, "zeta")),
        entry("alpha", lambda s: Named(s, "alpha")),
    ]

    loaded = load_middleware(settings())

    assert [m.label for m in loaded if isinstance(m, Named)] == ["alpha", "zeta"]


def test_a_plugin_whose_settings_are_invalid_stops_the_worker_naming_the_plugin(
    installed: list[EntryPoint],
) -> None:
    def factory(settings: Settings) -> Middleware:
        raise ConfigurationError("invalid settings of ExampleSettings: ...")

    installed.append(entry("example", factory))

    with pytest.raises(ConfigurationError, match=r"^plugin example \(plugin_example:factory\): "):
        load_middleware(settings())


def test_a_plugin_factory_must_give_a_middleware(installed: list[EntryPoint]) -> None:
    installed.append(entry("odd", lambda s: object()))

    with pytest.raises(ConfigurationError, match="not a Middleware"):
        load_middleware(settings())
