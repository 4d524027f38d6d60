"""Arms g4f plugin discovery at interpreter start-up; imported by ``g4f_gptalk.pth``.

g4f has no plugin discovery of its own, so this module puts a finder on ``sys.meta_path`` that waits for
``g4f.Provider``, ``g4f.models`` and the web GUI's ``g4f.gui.server.api`` to be imported and, right after each has
run, lets ``g4f_gptalk.plugin.bridge`` register the providers declared in the ``g4f.providers`` entry point group.
It also reports ``g4f_gptalk.provider``: a program whose first import is that module makes it import g4f before
it defines GPTalk, which is registered once it has run.

It runs in every interpreter of the environment, so it imports nothing beyond ``sys`` and ``os`` (both already
loaded at start-up) and does nothing else until g4f is imported. Set ``G4F_GPTALK_AUTOLOAD=0`` to turn it off.

PYTEST_DONT_REWRITE: pytest marks the modules of a plugin's distribution for assertion rewriting, and warns about
one that is already imported, as this one is at every start-up; the marker tells it to leave this one alone.
"""

import os
import sys

_WATCHED = frozenset(("g4f.Provider", "g4f.models", "g4f.gui.server.api", "g4f_gptalk.provider"))


class _RegisteringLoader:
    """Delegates to g4f's own loader, then hands the freshly executed module to the bridge."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            from g4f_gptalk.plugin import bridge
        except Exception as exc:  # noqa: BLE001 - a broken plugin install must never break g4f itself
            _warn_once(exc)
            return
        bridge.on_g4f_module_loaded(module.__name__)


_warned = [False]  # a list, so that the flag changes without a global statement


def _warn_once(cause):
    """One line on stderr when the plugin cannot load: why, and how to stop trying."""
    if _warned[0]:
        return
    _warned[0] = True
    try:
        from importlib.metadata import version  # only now, when something is already wrong

        g4f = f"g4f {version('g4f')}"
    except Exception:  # noqa: BLE001 - the message matters more than the version in it
        g4f = "this g4f"
    sys.stderr.write(
        f"g4f-gptalk: GPTalk could not be registered with {g4f}: {type(cause).__name__}: {cause}. "
        f"Install a g4f that g4f-gptalk supports, or set G4F_GPTALK_AUTOLOAD=0 to stop loading it.\n"
    )


class G4FPluginFinder:
    """Meta path finder that wraps the loaders of g4f's registry modules; finds nothing itself."""

    def find_spec(self, name, path=None, target=None):
        if name not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if hasattr(spec.loader, "exec_module"):
            spec.loader = _RegisteringLoader(spec.loader)  # type: ignore[assignment]
        return spec


def enabled():
    """False when ``G4F_GPTALK_AUTOLOAD`` is 0/false/no/off."""
    return os.environ.get("G4F_GPTALK_AUTOLOAD", "1").strip().lower() not in ("0", "false", "no", "off")


def install():
    """Put the finder first on ``sys.meta_path`` once, if ``enabled()``."""
    if not enabled():
        return
    if not any(type(finder).__name__ == G4FPluginFinder.__name__ for finder in sys.meta_path):
        sys.meta_path.insert(0, G4FPluginFinder())


install()
