"""What ``g4f-gptalk doctor`` checks: every way g4f picks a provider finds GPTalk, and the service logs in.

Each check returns what it found, raises ``CheckFailed`` saying what is wrong, or ``G4FProblem`` for a problem of
g4f's own that leaves GPTalk usable (such as g4f failing to download its provider list while offline).
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import sys
from collections.abc import Callable

from .provider import GPTalk
from .redaction import scrub

Result = tuple[str, str, str]
"""(``"ok"``, ``"warn"`` or ``"FAIL"``, the check's name, what it found)."""


class CheckFailed(Exception):
    """A check found GPTalk missing or broken."""


class G4FProblem(Exception):
    """A problem that is g4f's own: GPTalk itself checked out."""


def require(condition: object, problem: str) -> None:
    """Raise ``CheckFailed(problem)`` unless ``condition`` (an ``assert`` that ``python -O`` keeps)."""
    if not condition:
        raise CheckFailed(problem)

FRESH_INTERPRETER_TIMEOUT = 60.0
"""Seconds the autoload check waits for a fresh interpreter to import g4f (g4f 8 takes about two)."""
_FRESH_INTERPRETER = (
    "import sys, g4f.Provider as P\n"
    "found = P.ProviderUtils.convert.get('GPTalk')\n"
    "print(getattr(found, '__module__', None), 'g4f_gptalk' in sys.modules and 'imported' or '')\n"
)


def autoload() -> str:
    import _g4f_gptalk_autoload

    require(_g4f_gptalk_autoload.enabled(), "G4F_GPTALK_AUTOLOAD turns the start-up hook off")
    try:
        out = subprocess.run([sys.executable, "-c", _FRESH_INTERPRETER], capture_output=True, text=True,
                             timeout=FRESH_INTERPRETER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CheckFailed(f"a fresh `import g4f` did not finish within {FRESH_INTERPRETER_TIMEOUT:g} s") from None
    module = out.stdout.split()[0] if out.stdout.split() else out.stderr.strip()[-200:]
    require(module == GPTalk.__module__, f"a fresh `import g4f` does not see GPTalk ({module})")
    return "a fresh interpreter that imports only g4f finds GPTalk"


def registry() -> str:
    import g4f.Provider as providers

    require(providers.ProviderUtils.convert.get("GPTalk") is GPTalk, "missing from ProviderUtils.convert")
    require(getattr(providers, "GPTalk", None) is GPTalk, "g4f.Provider.GPTalk is missing")
    return "ProviderUtils.convert, g4f.Provider.GPTalk"


def provider_list() -> str:
    import g4f.Provider as providers

    from .plugin.bridge import registered_names

    names = registered_names(providers)
    require("GPTalk" in names, "missing from g4f's provider names")
    try:
        every = providers.__providers__  # g4f 8 imports all its providers here, and one downloads a list
    except Exception as exc:
        today = datetime.date.today().isoformat()
        raise G4FProblem(
            f"GPTalk is among g4f's {len(names)} provider names, but g4f itself could not build its full provider "
            f"list ({type(exc).__name__}: {_first_line(exc)}). g4f downloads providers.json at this step: offline, "
            f"set G4F_CACHE_DIR to a folder holding .models/{today}/providers.json (docs/troubleshooting.md has the recipe)"
        ) from exc
    require(GPTalk in every, "missing from g4f.Provider.__providers__")
    return f"g4f.Provider.__providers__ ({len(every)} providers)"


def _first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says, whole: a line cut short could end inside a quote."""
    return (str(exc).strip().splitlines() or [""])[0]


def by_name() -> str:
    from g4f.client.service import get_model_and_provider

    model, provider = get_model_and_provider("gpt-3.5-turbo", "GPTalk", stream=True)
    require(provider is GPTalk, f'provider="GPTalk" gives {provider}')
    model, provider = get_model_and_provider("GPTalk:gpt-3.5-turbo", None, stream=True)
    require(provider is GPTalk and model == "gpt-3.5-turbo", f'model="GPTalk:gpt-3.5-turbo" gives {provider}, {model}')
    return 'provider="GPTalk" and model="GPTalk:gpt-3.5-turbo"'


def models() -> str:
    from g4f.models import ModelUtils

    model = ModelUtils.convert.get("gpt-3.5-turbo")
    providers = getattr(getattr(model, "best_provider", None), "providers", [])
    require(GPTalk in providers, "g4f.models' gpt-3.5-turbo does not list GPTalk")
    return f"gpt-3.5-turbo served by {', '.join(p.__name__ for p in providers)}"


def login() -> str:
    health = asyncio.run(GPTalk.get_health())
    require(health["ok"], str(health.get("error")))
    return f"{health['url']} logs in (GPTalk.get_health)"


def tokens() -> str:
    from .protocol import token_store

    where = token_store.store_for(GPTalk.url).where()
    return "in this process's memory (G4F_GPTALK_SHARED_TOKENS=0, or no cookies folder of g4f's)" \
        if where == "memory" else f"shared in {where}"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("autoload", autoload),
    ("registry", registry),
    ("provider list", provider_list),
    ("selection", by_name),
    ("models", models),
    ("login", login),
    ("tokens", tokens),
]


def run_checks() -> list[Result]:
    results: list[Result] = []
    for name, check in CHECKS:
        try:
            results.append(("ok", name, check()))
        except G4FProblem as warning:
            results.append(("warn", name, str(warning)))
        except Exception as exc:  # noqa: BLE001 - each failure is reported, not raised
            results.append(("FAIL", name, scrub(str(exc)) or type(exc).__name__))
    return results
