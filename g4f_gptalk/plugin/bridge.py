"""The bridge into g4f: registers every provider that an installed package declares as a ``g4f.providers`` entry
point, so that g4f finds it like one of its own (``provider="Name"``, ``model="Name:model"``, ``g4f.Provider.Name``,
``__providers__``, ``ProviderUtils.convert``, ``g4f api``, ``g4f client``).

It is run by ``_g4f_gptalk_autoload`` right after g4f runs ``g4f.Provider`` and ``g4f.models`` (also when they are
run again by ``importlib.reload``), and by ``import g4f_gptalk``; it is idempotent. The entry points are loaded once
per process; the registering is done again whenever g4f's registry module has run again. A plugin that fails to
load is skipped with one warning. A plugin takes the place of a provider g4f itself has under the same name only
when g4f marks that one not working (as g4f 0.2.x to 0.4.x do their own GPTalk), and says so in one debug line; a
working one is never replaced. One that another copy of this bridge (another plugin package's) has registered
already is left as it is, silently.

g4f keeps its provider registry in one of three shapes, each handled by ``_add_to_registry``:
``ProviderLoader`` (8.x), ``_provider_names``/``_loaded_providers`` (lazy 7.x) or eager ``__providers__``/``__map__``
(6.x and early 7.x).
"""

from __future__ import annotations

import sys
import warnings
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

GROUP = "g4f.providers"

registered: dict[str, type] = {}
"""Providers this bridge added to g4f, by name."""
_skipped: set[str] = set()
_pending: dict[str, EntryPoint] = {}
"""Plugins whose module was still being imported when g4f started (it imported g4f before defining its provider):
registered once it has run (``on_g4f_module_loaded`` for ``PLUGIN_MODULES``)."""
PLUGIN_MODULES = frozenset(("g4f_gptalk.provider",))
"""Plugin modules the start-up hook reports when they have run, for ``_pending``."""
_scanned = False  # the entry point scan is the costly part of import g4f with plugins: do it once per process


class PluginWarning(UserWarning):
    """A g4f provider plugin could not be registered and was skipped."""


def on_g4f_module_loaded(name: str) -> None:
    """Called by the start-up hook after g4f's module ``name`` has run; never lets an error escape into g4f."""
    try:
        if name == "g4f.Provider":
            load_plugins()
        elif name in PLUGIN_MODULES:
            if _pending and "g4f.Provider" in sys.modules:
                load_plugins()
                register_models()
                if "g4f.gui.server.api" in sys.modules:
                    list_in_web_gui(sys.modules["g4f.gui.server.api"])
        elif name == "g4f.models":
            register_models()
        elif name == "g4f.gui.server.api":
            list_in_web_gui(sys.modules[name])
    except Exception as exc:  # noqa: BLE001 - g4f must import even if the bridge cannot work
        warnings.warn(f"g4f provider plugins were not registered: {exc!r}", PluginWarning, stacklevel=2)


def load_plugins() -> dict[str, type]:
    """Register every provider of the ``g4f.providers`` entry point group (loaded once per process) with g4f's
    registry as it is now."""
    global _scanned
    import g4f.Provider as registry

    if not _scanned:
        _scanned = True
        for entry_point in entry_points(group=GROUP):
            provider = _load(registry, entry_point)
            if provider is not None:
                registered[entry_point.name] = provider
    for name, entry_point in list(_pending.items()):
        del _pending[name]
        provider = _load(registry, entry_point)
        if provider is not None:
            registered[name] = provider
    for name, provider in registered.items():
        existing = _existing(registry, name)
        if existing is provider:
            continue
        if existing is not None:
            from g4f import debug  # not this package's compat: the bridge is self-contained, and copied by others

            if debug.logging:
                getattr(debug, "log", print)(f"g4f-gptalk: g4f's own {name} is marked not working; "
                                             f"{provider.__module__}.{name} takes its place")
        _add_to_registry(registry, name, provider)
    return registered


def _load(registry: ModuleType, entry_point: EntryPoint) -> type | None:
    """The provider class ``entry_point`` names, or None if it is skipped."""
    name = entry_point.name
    if name in registered or name in _skipped:
        return None
    existing = _existing(registry, name)
    if existing is not None:
        if not _is_g4fs_own(existing):
            return None  # another bridge registered this plugin already: nothing to do, nothing to say
        if getattr(getattr(registry, name, None) if existing is True else existing, "working", True) is not False:
            _skip(name, f"g4f already has a working provider named {name!r}; the plugin's {entry_point.value} "
                        f"is not used")
            return None
    imported_before = entry_point.module in sys.modules
    try:
        provider = entry_point.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin is skipped, not fatal
        if imported_before and entry_point.module in PLUGIN_MODULES and name not in _pending:
            _pending[name] = entry_point  # its module is what imported g4f: it has not defined its provider yet
            return None
        _skip(name, f"loading {entry_point.value} failed: {exc!r}")
        return None
    from g4f.providers.types import BaseProvider

    if not (isinstance(provider, type) and issubclass(provider, BaseProvider)):
        _skip(name, f"{entry_point.value} is not a g4f provider class")
        return None
    return provider


def register_models() -> None:
    """Make each registered provider's models known to ``g4f.models``, adding a provider after g4f's own."""
    models = sys.modules.get("g4f.models")
    if models is None or not hasattr(models, "ModelUtils"):
        return  # not imported, or still running (the start-up hook calls again when it has run)
    import g4f.Provider as registry

    parses_prefix = "ProviderLoader" in vars(registry)  # g4f 8 reads "Name:model" itself
    for name, provider in load_plugins().items():
        for model_name in getattr(provider, "models", None) or [getattr(provider, "default_model", None)]:
            if model_name:
                _add_to_model(models, model_name, provider)
                if not parses_prefix:
                    _add_prefixed_alias(models, name, model_name, provider)


def list_in_web_gui(api_module: ModuleType) -> None:
    """Make every list g4f's web GUI builds show the registered providers, and keep them out of what g4f stores.

    g4f 8 answers the GUI's provider list from a ``providers.json`` inside its package (or its cache folder), and
    the model search from ``.models/<version>/all_models.json`` in ``G4F_CACHE_DIR``, each built once and then
    reused. The plugins' entries are added to what g4f answers and dropped from what it writes, so that the lists
    show a plugin from its install on, whatever g4f cached before, and not after its uninstall, whatever g4f
    cached meanwhile. Earlier g4f builds its lists live, where the plugins already are.
    """
    api = getattr(api_module, "Api", None)
    if api is None:
        return
    storage = getattr(api_module, "storage", None)
    if storage is not None and not isinstance(storage, _StorageWithoutPlugins):
        api_module.storage = _StorageWithoutPlugins(storage)  # type: ignore[attr-defined]
    get_providers = getattr(api, "get_providers", None)
    if get_providers is not None and not getattr(get_providers, "lists_plugins", False):
        def providers_with_plugins() -> list[dict[str, Any]]:
            return [*without_plugins(get_providers()), *(_gui_entry(provider) for provider in _working_plugins())]

        providers_with_plugins.lists_plugins = True  # type: ignore[attr-defined]
        api.get_providers = staticmethod(providers_with_plugins)
        write_cache = getattr(api, "_write_providers_cache", None)
        if write_cache is not None:
            api._write_providers_cache = staticmethod(lambda result: write_cache(without_plugins(result)))
    get_all_models = getattr(api, "get_all_models", None)
    if get_all_models is not None and not getattr(get_all_models, "lists_plugins", False):
        def all_models_with_plugins(self: Any) -> dict[str, list[Any]]:
            return {**without_plugins(get_all_models(self)),
                    **{provider.__name__: _models_of(provider) for provider in _working_plugins()}}

        all_models_with_plugins.lists_plugins = True  # type: ignore[attr-defined]
        api.get_all_models = all_models_with_plugins


class _StorageWithoutPlugins:
    """g4f's GUI cache (``FileStorage``), storing its lists without the plugins' entries."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def set(self, key: str, value: Any) -> None:
        self._storage.set(key, without_plugins(value))


def without_plugins(found: Any) -> Any:
    """A provider list (entries with a ``name``) or a model table (by provider name), less the plugins'."""
    if isinstance(found, dict):
        return {name: value for name, value in found.items() if name not in registered}
    if isinstance(found, list):
        return [entry for entry in found if not (isinstance(entry, dict) and entry.get("name") in registered)]
    return found


def _working_plugins() -> list[type]:
    return [provider for provider in load_plugins().values() if getattr(provider, "working", False)]


def _models_of(provider: type) -> list[Any]:
    return list(getattr(provider, "models", None) or [getattr(provider, "default_model", None)])


def _gui_entry(provider: type) -> dict[str, Any]:
    """A provider as g4f's GUI lists it (the fields g4f's own ``Api.get_providers`` gives)."""
    return {
        "name": provider.__name__,
        "label": _name_of(provider),
        "parent": getattr(provider, "parent", None),
        "image": len(getattr(provider, "image_models", [])),
        "audio": len(getattr(provider, "audio_models", [])),
        "video": len(getattr(provider, "video_models", [])),
        "vision": getattr(provider, "default_vision_model", None) is not None,
        "nodriver": getattr(provider, "use_nodriver", False),
        "hf_space": getattr(provider, "hf_space", False),
        "active_by_default": bool(getattr(provider, "active_by_default", False)),
        "auth": getattr(provider, "needs_auth", False),
        "login_url": getattr(provider, "login_url", None),
        "live": getattr(provider, "live", 0),
        "login": hasattr(provider, "login"),
    }


def _add_prefixed_alias(models: ModuleType, name: str, model_name: str, provider: type) -> None:
    """``model="Name:model"`` for g4f before 8, which looks the whole string up in ``ModelUtils.convert``."""
    alias = f"{name}:{model_name}"
    if alias not in models.ModelUtils.convert:
        # g4f answers with the model's long name where its Model has one, else with its name
        has_long_name = "long_name" in getattr(models.Model, "__dataclass_fields__", {})
        models.ModelUtils.convert[alias] = _new_model(
            models, name=alias if has_long_name else model_name, base_provider=name, best_provider=provider,
            long_name=model_name)


def _skip(name: str, reason: str) -> None:
    _skipped.add(name)
    warnings.warn(f"g4f provider plugin {name!r} skipped: {reason}", PluginWarning, stacklevel=3)


def registered_names(registry: ModuleType) -> list[str]:
    """The provider names g4f's registry (``g4f.Provider``) knows, without importing every provider: its 8.x
    ``ProviderLoader``, its lazy 7.x names, or the ``__map__`` of 6.x and before."""
    namespace = vars(registry)
    if "ProviderLoader" in namespace:
        loader = namespace["ProviderLoader"]
        return [*loader.names, *getattr(loader, "extra", [])]
    if "_provider_names" in namespace:
        return list(namespace["_provider_names"])
    return list(namespace.get("__map__", {}))


def _existing(registry: ModuleType, name: str) -> Any:
    """What g4f's registry has under ``name``: a provider class, ``True`` for a name whose class g4f has not
    loaded yet (always one of its own), or None."""
    if name not in registered_names(registry):
        return None
    namespace = vars(registry)
    if "ProviderLoader" in namespace:
        return namespace["ProviderLoader"].loaded.get(name, True)
    if "_provider_names" in namespace:
        return namespace["_loaded_providers"].get(name, True)
    return namespace["__map__"].get(name)


def _is_g4fs_own(provider: Any) -> bool:
    return provider is True or str(getattr(provider, "__module__", "")).split(".")[0] == "g4f"


def _add_to_registry(registry: ModuleType, name: str, provider: type) -> None:
    """Put ``provider`` into g4f's registry under ``name``, in place of whatever was there."""
    namespace = vars(registry)
    if "ProviderLoader" in namespace:
        loader = namespace["ProviderLoader"]
        if name not in loader.names:
            loader.names.append(name)
        loader.loaded[name] = provider
        loader.loaded[name.lower().replace("-", "").replace("_", "")] = provider
    elif "_provider_names" in namespace:
        if name not in namespace["_provider_names"]:
            namespace["_provider_names"].append(name)
        namespace["_loaded_providers"][name] = provider
    else:
        providers = namespace["__providers__"]
        providers[:] = [*(other for other in providers if getattr(other, "__name__", None) != name), provider]
        namespace["__map__"][name] = provider
    if isinstance(namespace.get("__all__"), list) and name not in namespace["__all__"]:
        namespace["__all__"].append(name)
    setattr(registry, name, provider)


def _new_model(models: ModuleType, **fields: Any) -> Any:
    """A ``g4f.models.Model`` of ``fields``, less those this g4f's Model does not have (0.2.x: ``long_name``)."""
    known = getattr(models.Model, "__dataclass_fields__", None)
    return models.Model(**{key: value for key, value in fields.items() if known is None or key in known})


def _name_of(provider: type) -> str:
    return str(getattr(provider, "label", None) or provider.__name__)


def _add_to_model(models: ModuleType, model_name: str, provider: type) -> None:
    model = models.ModelUtils.convert.get(model_name)
    if model is None:
        model = _new_model(models, name=model_name, base_provider=_name_of(provider),
                           best_provider=iter_list_provider([provider]))
        models.ModelUtils.convert[model_name] = model
    elif provider_list(model.best_provider) is not None:
        if provider not in model.best_provider.providers:
            model.best_provider.providers.append(provider)  # after g4f's own, in their order
    elif model.best_provider is None:
        model.best_provider = iter_list_provider([provider])
    elif model.best_provider is not provider:
        model.best_provider = iter_list_provider([model.best_provider, provider])
    table = getattr(models, "__models__", None)
    if isinstance(table, dict):
        providers = provider_list(model.best_provider) or [provider]
        table[model_name] = (model, providers)
    names = getattr(models, "_all_models", None)
    if isinstance(names, list) and model_name not in names:
        names.append(model_name)


def iter_list_provider(providers: list[Any]) -> Any:
    """g4f's provider that tries ``providers`` in order (``IterListProvider``; ``IterProvider`` in 0.2.x)."""
    from g4f.providers import retry_provider

    if hasattr(retry_provider, "IterListProvider"):
        return retry_provider.IterListProvider(providers, shuffle=False)
    return retry_provider.IterProvider(providers)  # in order, always


def provider_list(provider: Any) -> list[Any] | None:
    """The providers a model's ``best_provider`` tries in turn (``IterListProvider``, ``RetryProvider``…), if any."""
    providers = getattr(provider, "providers", None)
    return providers if isinstance(providers, list) else None
