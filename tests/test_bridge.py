"""The bridge's rules for names g4f already has, on a registry of g4f's eager shape (g4f 0.x and 6.x)."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import g4f
import pytest
from g4f import debug
from g4f.providers.base_provider import AsyncGeneratorProvider

from g4f_gptalk.plugin import bridge


class Dead(AsyncGeneratorProvider):
    """g4f's own, marked not working (as g4f 0.2.x-0.4.x mark their GPTalk)."""

    __module__ = "g4f.Provider.deprecated.Dead"
    working = False


class Alive(AsyncGeneratorProvider):
    __module__ = "g4f.Provider.Alive"
    working = True


class PluginDead(AsyncGeneratorProvider):
    working = True


class PluginAlive(AsyncGeneratorProvider):
    working = True


@pytest.fixture
def registry(monkeypatch):
    """A g4f-shaped provider registry holding Dead and Alive, and a bridge that has seen nothing yet."""
    module = types.ModuleType("fake_registry")
    module.__providers__ = [Dead, Alive]
    module.__map__ = {"Dead": Dead, "Alive": Alive}
    module.Dead, module.Alive = Dead, Alive
    plugins = types.ModuleType("fake_plugins")
    plugins.Dead, plugins.Alive = PluginDead, PluginAlive
    monkeypatch.setitem(sys.modules, "fake_plugins", plugins)
    monkeypatch.setattr(bridge, "registered", {})
    monkeypatch.setattr(bridge, "_skipped", set())
    return module


def test_a_plugin_takes_the_place_of_a_provider_g4f_marks_not_working_and_says_so_once(registry, monkeypatch, capsys):
    monkeypatch.setattr(debug, "logging", True)
    provider = bridge._load(registry, EntryPoint("Dead", "fake_plugins:Dead", bridge.GROUP))
    assert provider is PluginDead
    bridge.registered["Dead"] = provider
    monkeypatch.setattr(bridge, "_scanned", True)
    monkeypatch.setitem(sys.modules, "g4f.Provider", registry)
    monkeypatch.setattr(g4f, "Provider", registry)
    bridge.load_plugins()
    bridge.load_plugins()  # idempotent: said once, listed once
    assert registry.__map__["Dead"] is PluginDead and registry.Dead is PluginDead
    assert registry.__providers__ == [Alive, PluginDead]
    assert capsys.readouterr().out.splitlines() == [
        f"g4f-gptalk: g4f's own Dead is marked not working; {__name__}.Dead takes its place"]


def test_a_working_provider_of_g4fs_is_never_replaced(registry):
    with pytest.warns(bridge.PluginWarning, match="g4f already has a working provider named 'Alive'"):
        assert bridge._load(registry, EntryPoint("Alive", "fake_plugins:Alive", bridge.GROUP)) is None
    assert registry.__map__["Alive"] is Alive


def test_what_g4fs_gui_stores_keeps_no_plugin_entry(tmp_path, monkeypatch):
    FileStorage = pytest.importorskip("g4f.providers.cache", reason="g4f 8's GUI cache").FileStorage

    monkeypatch.setattr(bridge, "registered", {"GPTalk": PluginAlive})
    storage = bridge._StorageWithoutPlugins(FileStorage(str(tmp_path)))
    storage.set("8.8.6/providers", [{"name": "GPTalk"}, {"name": "Copilot"}])
    storage.set("8.8.6/all_models", {"GPTalk": ["gpt-3.5-turbo"], "Copilot": ["gpt-4"]})
    assert storage.get("8.8.6/providers") == [{"name": "Copilot"}]
    assert storage.get("8.8.6/all_models") == {"Copilot": ["gpt-4"]}
