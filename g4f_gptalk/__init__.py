"""GPTalk (gptalk.net) chat provider for g4f.

After ``pip install g4f-gptalk`` g4f finds it by name (``provider="GPTalk"``) with no import in user code. Where
the start-up hook is off (``G4F_GPTALK_AUTOLOAD=0``), importing this package registers it. ``GPTalk`` is imported
on first use, so that ``import g4f_gptalk`` (the CLI's first step) costs almost nothing.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the CLI's first moments ~15 ms
__version__ = "0.1.0"
__all__ = ["GPTalk", "__version__"]

if TYPE_CHECKING:
    from .provider import GPTalk


def __getattr__(name: str) -> object:
    if name == "GPTalk":
        from .provider import GPTalk

        return GPTalk
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _hook_armed() -> bool:
    """Whether the start-up hook watches g4f's imports (then g4f's import registers GPTalk)."""
    return any(type(finder).__name__ == "G4FPluginFinder" for finder in sys.meta_path)


if not _hook_armed():
    import g4f  # noqa: F401 - g4f first, as a user's program imports it

    from .plugin import bridge

    bridge.load_plugins()
    bridge.register_models()
