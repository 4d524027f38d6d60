"""What ``g4f-gptalk doctor`` checks: every way g4f picks a provider finds GPTalk, and the service logs in."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

from .provider import GPTalk

Result = tuple[bool, str, str]

_FRESH_INTERPRETER = (
    "import sys, g4f.Provider as P\n"
    "found = P.ProviderUtils.convert.get('GPTalk')\n"
    "print(getattr(found, '__module__', None), 'g4f_gptalk' in sys.modules and 'imported' or '')\n"
)


def autoload() -> str:
    import _g4f_gptalk_autoload

    if not _g4f_gptalk_autoload.enabled():
        raise AssertionError("G4F_GPTALK_AUTOLOAD turns the start-up hook off")
    out = subprocess.run([sys.executable, "-c", _FRESH_INTERPRETER], capture_output=True, text=True)
    module = out.stdout.split()[0] if out.stdout.split() else out.stderr.strip()[-200:]
    assert module == "g4f_gptalk.provider", f"a fresh `import g4f` does not see GPTalk ({module})"
    return "a fresh interpreter that imports only g4f finds GPTalk"


def registry() -> str:
    import g4f.Provider as providers

    assert providers.ProviderUtils.convert.get("GPTalk") is GPTalk, "missing from ProviderUtils.convert"
    assert getattr(providers, "GPTalk", None) is GPTalk, "g4f.Provider.GPTalk is missing"
    return "ProviderUtils.convert, g4f.Provider.GPTalk"


def provider_list() -> str:
    import g4f.Provider as providers

    try:
        every = providers.__providers__  # g4f 8 imports all its providers here; some need the internet
    except Exception as exc:
        raise AssertionError(f"g4f could not build g4f.Provider.__providers__: {exc}") from exc
    assert GPTalk in every, "missing from g4f.Provider.__providers__"
    return f"g4f.Provider.__providers__ ({len(every)} providers)"


def by_name() -> str:
    from g4f.client.service import get_model_and_provider

    model, provider = get_model_and_provider("gpt-3.5-turbo", "GPTalk", stream=True)
    assert provider is GPTalk, f'provider="GPTalk" gives {provider}'
    model, provider = get_model_and_provider("GPTalk:gpt-3.5-turbo", None, stream=True)
    assert provider is GPTalk and model == "gpt-3.5-turbo", f'model="GPTalk:gpt-3.5-turbo" gives {provider}, {model}'
    return 'provider="GPTalk" and model="GPTalk:gpt-3.5-turbo"'


def models() -> str:
    from g4f.models import ModelUtils

    model = ModelUtils.convert.get("gpt-3.5-turbo")
    providers = getattr(getattr(model, "best_provider", None), "providers", [])
    assert GPTalk in providers, "g4f.models' gpt-3.5-turbo does not list GPTalk"
    return f"gpt-3.5-turbo served by {', '.join(p.__name__ for p in providers)}"


def login() -> str:
    from .arguments import service_url
    from .provider import check_login

    url = service_url(GPTalk.url)
    asyncio.run(check_login(url))
    return f"{url} issued a token"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("autoload", autoload),
    ("registry", registry),
    ("provider list", provider_list),
    ("selection", by_name),
    ("models", models),
    ("login", login),
]


def run_checks() -> list[Result]:
    results: list[Result] = []
    for name, check in CHECKS:
        try:
            results.append((True, name, check()))
        except Exception as exc:  # noqa: BLE001 - each failure is reported, not raised
            results.append((False, name, str(exc) or type(exc).__name__))
    return results
