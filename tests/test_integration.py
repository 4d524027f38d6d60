"""g4f finds GPTalk like a built-in, with no import of g4f_gptalk in user code: each test is a fresh interpreter."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from g4f.providers.base_provider import AsyncGeneratorProvider

from g4f_gptalk.testing.server import echo_reply

from .conftest import run_python, without_g4f_notices

REPLY = echo_reply("Hello")
HELLO_MESSAGES = [{"role": "user", "content": "Hello"}]
G4F_MAJOR = int(importlib.metadata.version("g4f").split(".")[0])


def test_the_tests_import_the_installed_package_not_the_checkout():
    import g4f_gptalk

    installed = importlib.metadata.distribution("g4f-gptalk")
    if any(str(file).startswith("__editable__") for file in installed.files or []):
        pytest.skip("an editable install is the checkout")
    assert Path(g4f_gptalk.__file__).resolve().is_relative_to(Path(str(installed.locate_file(""))).resolve())
    checkout = Path(__file__).resolve().parent.parent / "g4f_gptalk"
    assert not Path(g4f_gptalk.__file__).resolve().is_relative_to(checkout)


def test_provider_by_name_sync_and_async(server):
    out = run_python(textwrap.dedent("""
        import asyncio, g4f
        messages = [{"role": "user", "content": "Hello"}]
        print(g4f.ChatCompletion.create(model="gpt-3.5-turbo", messages=messages, provider="GPTalk"))
        print(asyncio.run(g4f.ChatCompletion.create_async(model="gpt-3.5-turbo", messages=messages, provider="GPTalk")))
    """))
    assert out.splitlines() == [REPLY, REPLY]
    assert server.stats["asks"] == 2 and server.stats["logins"] == 1


def test_provider_prefix_in_the_model_name(server):
    out = run_python(textwrap.dedent("""
        import g4f
        print(g4f.ChatCompletion.create(model="GPTalk:gpt-3.5-turbo", messages=[{"role": "user", "content": "Hello"}]))
    """))
    assert out.strip() == REPLY and server.stats["asks"] == 1


def test_client_and_async_client_streamed_and_not(server):
    out = run_python(textwrap.dedent("""
        import asyncio
        from g4f.client import AsyncClient, Client
        messages = [{"role": "user", "content": "Hello"}]
        client = Client()
        print(client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, provider="GPTalk")
              .choices[0].message.content)
        chunks = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, provider="GPTalk", stream=True)
        print("".join(chunk.choices[0].delta.content or "" for chunk in chunks))

        async def main():
            client = AsyncClient()
            response = await client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, provider="GPTalk")
            print(response.choices[0].message.content)
            stream = client.chat.completions.stream(model="gpt-3.5-turbo", messages=messages, provider="GPTalk") \\
                if hasattr(client.chat.completions, "stream") else \\
                client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, provider="GPTalk", stream=True)
            print("".join([chunk.choices[0].delta.content or "" async for chunk in stream]))

        asyncio.run(main())
    """))
    assert out.splitlines() == [REPLY] * 4 and server.stats["asks"] == 4


@pytest.mark.skipif(importlib.util.find_spec("g4f.Provider.deprecated") is None
                    or not (Path(importlib.util.find_spec("g4f.Provider.deprecated").origin).parent / "GPTalk.py").exists(),
                    reason="this g4f has no GPTalk of its own")
def test_g4fs_own_dead_gptalk_is_replaced_by_the_plugin(server):
    out = run_python(textwrap.dedent("""
        import g4f, g4f.Provider as P
        from g4f.Provider.deprecated.GPTalk import GPTalk as Dead
        print(Dead.working, P.ProviderUtils.convert["GPTalk"].__module__, P.GPTalk.__module__)
        print(g4f.ChatCompletion.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hello"}],
                                        provider="GPTalk"))
    """))
    assert out.splitlines() == ["False g4f_gptalk.provider g4f_gptalk.provider", REPLY]


def test_registry_views_and_models_list_gptalk_once():
    out = run_python(textwrap.dedent("""
        import g4f.Provider as P
        from g4f.models import ModelUtils
        cls = P.ProviderUtils.convert["GPTalk"]
        model = ModelUtils.convert["gpt-3.5-turbo"]
        print(cls.__module__, "GPTalk" in P.ProviderUtils.convert, P.GPTalk is cls,
              [p.__name__ for p in P.__providers__].count("GPTalk"), list(P.__all__).count("GPTalk"),
              [p.__name__ for p in model.best_provider.providers])
    """))
    *views, served_by = out.split(maxsplit=5)
    assert views == ["g4f_gptalk.provider", "True", "True", "1", "1"]
    assert served_by.endswith("'GPTalk']\n") and served_by.count("'GPTalk'") == 1  # after g4f's own, if any


def test_existing_models_keep_g4f_providers_first_and_in_order():
    out = run_python(textwrap.dedent("""
        import g4f.models as m

        def table():
            return {name: [getattr(p, "__name__", p) for p in getattr(model.best_provider, "providers", [model.best_provider])]
                    for name, model in m.ModelUtils.convert.items() if model.best_provider is not None}

        before = table()  # G4F_GPTALK_AUTOLOAD=0: g4f's own models, untouched
        import g4f_gptalk
        after = table()
        print(len(before), [name for name in before if after[name][:len(before[name])] != before[name]],
              after["gpt-3.5-turbo"][len(before.get("gpt-3.5-turbo", [])):])
    """), env={"G4F_GPTALK_AUTOLOAD": "0"})
    count, changed, added = out.split(maxsplit=2)
    # every model keeps g4f's providers first and in order; gpt-3.5-turbo has GPTalk after them (alone in new g4f)
    assert int(count) > 10 and changed == "[]" and added.strip() == "['GPTalk']"


@pytest.mark.parametrize(
    "imports",
    ["import g4f_gptalk; import g4f", "import g4f; import g4f_gptalk", "import g4f.Provider",
     "from g4f_gptalk.provider import GPTalk; import g4f.Provider", "from g4f_gptalk import GPTalk",
     # each module that imports g4f itself, first: g4f's start-up hook meets it half-run
     "import g4f_gptalk.compat", "import g4f_gptalk.protocol.errors", "import g4f_gptalk.runtime.pool",
     "import g4f_gptalk.cli; import g4f"],
)
def test_every_import_order_registers_gptalk_exactly_once(imports):
    out = run_python(imports + textwrap.dedent("""
        import g4f.Provider as P
        names = list(P.ProviderLoader.names) if hasattr(P, "ProviderLoader") else (
            list(P._provider_names) if hasattr(P, "_provider_names") else [p.__name__ for p in P.__providers__])
        print(names.count("GPTalk"), P.ProviderUtils.convert["GPTalk"].__module__)
    """))
    assert out.split() == ["1", "g4f_gptalk.provider"]


def test_import_g4f_loads_gptalks_class_but_not_its_protocol_or_runtime():
    # every program that imports g4f pays for what it loads of a plugin: the class, not the chat machinery
    out = run_python("import sys, g4f\nprint(*sorted(name for name in sys.modules if 'gptalk' in name))")
    assert out.split() == ["_g4f_gptalk_autoload", "g4f_gptalk", "g4f_gptalk.plugin", "g4f_gptalk.plugin.bridge",
                           "g4f_gptalk.provider"]


def test_the_autoload_opt_out_leaves_g4f_untouched():
    out = run_python(
        "import sys, g4f.Provider as P\n"
        "print(getattr(P.ProviderUtils.convert.get('GPTalk'), '__module__', None), 'g4f_gptalk' in sys.modules)",
        env={"G4F_GPTALK_AUTOLOAD": "0"},
    )
    module, imported = out.split()
    assert module in ("None", "g4f.Provider.deprecated.GPTalk") and imported == "False"  # g4f's own, or none


def start_up_imports() -> dict[str, int]:
    """Module -> cumulative import microseconds of ``python -X importtime -c pass``, bytecode caching on."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True, env=env)
    rows = [line.split("|") for line in result.stderr.splitlines() if line.startswith("import time:")]
    return {row[2].strip(): int(row[1]) for row in rows if row[1].strip().isdigit()}


def test_interpreter_start_up_imports_nothing_heavy_and_costs_under_a_millisecond(capsys):
    start_up_imports()  # the first run may write the bytecode cache
    runs = [start_up_imports() for _ in range(5)]
    heavy = {"g4f", "aiohttp", "importlib.abc", "importlib.resources", "g4f_gptalk", "g4f_gptalk.provider"}
    assert all("_g4f_gptalk_autoload" in run and heavy.isdisjoint(run) for run in runs)
    best = min(run["_g4f_gptalk_autoload"] for run in runs)
    assert best < 1000  # microseconds
    with capsys.disabled():
        print(f"\n  start-up: _g4f_gptalk_autoload {best} us (best of 5, -X importtime)")


def write_plugin(root: Path, dist: str, module: str, entry_points: dict[str, str], code: str) -> None:
    """A test-only distribution: a module and its .dist-info, found by importlib.metadata on sys.path."""
    (root / f"{module}.py").write_text(textwrap.dedent(code))
    info = root / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[g4f.providers]\n{lines}")


def a_working_builtin() -> str:
    """The name of a provider g4f itself has and marks working (they differ between g4f releases)."""
    import g4f.Provider as registry

    from g4f_gptalk.plugin import bridge

    return next(name for name in sorted(bridge.registered_names(registry)) if name not in bridge.registered
                and getattr(getattr(registry, name, None), "working", False) is True)


def test_the_bridge_loads_every_plugin_skips_broken_ones_and_never_shadows_builtins(tmp_path):
    builtin = a_working_builtin()
    write_plugin(tmp_path, "echo_plugin", "echo_plugin", {"EchoPlugin": "echo_plugin:EchoPlugin"}, """
        from g4f.providers.base_provider import AsyncGeneratorProvider
        class EchoPlugin(AsyncGeneratorProvider):
            working = True
            @classmethod
            async def create_async_generator(cls, model, messages, **kwargs):
                yield "echo: " + messages[-1]["content"]
    """)
    write_plugin(tmp_path, "broken_plugin", "broken_plugin", {"Broken": "broken_plugin:Broken"},
                 "raise ImportError('this plugin needs a package that is missing')\n")
    write_plugin(tmp_path, "shadow_plugin", "shadow_plugin", {builtin: f"shadow_plugin:{builtin}"}, """
        raise AssertionError("a plugin shadowing a built-in must not even be imported")
    """)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import g4f, g4f.Provider as P
            g4f.debug.version_check = False
            print(g4f.ChatCompletion.create("gpt-3.5-turbo", [{{"role": "user", "content": "hi"}}], provider="EchoPlugin"))
            print("Broken" in P.ProviderUtils.convert, P.ProviderUtils.convert["{builtin}"].__module__,
                  "GPTalk" in P.ProviderUtils.convert)
        """)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    lines = without_g4f_notices(result.stdout).splitlines()
    assert lines[0] == "echo: hi"
    broken_listed, builtin_module, gptalk_listed = lines[1].split()
    assert (broken_listed, gptalk_listed) == ("False", "True") and builtin_module.startswith("g4f.Provider.")
    warnings = [line for line in result.stderr.splitlines() if "PluginWarning" in line]
    assert len(warnings) == 2, result.stderr
    assert any("'Broken' skipped: loading broken_plugin:Broken failed" in line for line in warnings)
    assert any(f"'{builtin}' skipped: g4f already has a working provider named '{builtin}'" in line
               for line in warnings)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_g4f_api(*options: str, env: dict[str, str] | None = None, workers: int = 1) -> Iterator[str]:
    """``g4f api`` started its normal way (web GUI included), offline, on a free loopback port; yields its URL once
    every one of its ``workers`` processes has started (uvicorn's parent listens before its workers are up, and the
    first worker up would take every connection until the others are)."""
    port = free_port()
    worker_options = ("--workers", str(workers)) if workers > 1 else ()
    process = subprocess.Popen(
        [sys.executable, "-m", "g4f.cli", "api", "--bind", f"127.0.0.1:{port}", *worker_options, *options],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
    )
    output: list[str] = []
    started = threading.Semaphore(0)

    def read_output() -> None:  # read all along, so that the server never blocks on a full pipe
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            if "Application startup complete" in line:
                started.release()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                reader.join(10)
                pytest.fail(f"g4f api exited: {''.join(output)}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.2)
        else:
            pytest.fail("g4f api did not start within 60 s")
        if workers > 1 and not all(started.acquire(timeout=max(0, deadline - time.monotonic()))
                                   for _ in range(workers)):
            pytest.fail(f"g4f api's {workers} workers did not all start within 60 s: {''.join(output)}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(10)
        if process.stdout:
            process.stdout.close()


@pytest.fixture
def g4f_api(server):
    with running_g4f_api() as base:
        yield base


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def g4f_package_files() -> dict[str, str]:
    """Every file of the installed g4f package, by path, with a digest of its content."""
    root = Path(importlib.util.find_spec("g4f").origin).parent  # type: ignore[arg-type, union-attr]
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in root.rglob("*") if path.is_file() and "__pycache__" not in path.parts}


def gui_conversation(base: str, provider: str) -> str:
    """What g4f's web page shows for a message sent to ``provider``: the content events of the answer, joined."""
    request = urllib.request.Request(
        base + "/backend-api/v2/conversation", method="POST", headers={"content-type": "application/json"},
        data=json.dumps({"model": "gpt-3.5-turbo", "provider": provider, "messages": HELLO_MESSAGES}).encode())
    contents = []
    with urllib.request.urlopen(request, timeout=60) as response:
        for line in response.read().decode().splitlines():
            try:
                event = json.loads(line.removeprefix("data: "))
            except ValueError:
                continue  # "event:" lines and blank lines
            if isinstance(event, dict) and event.get("type") == "content":
                contents.append(event["content"])
            elif isinstance(event, dict) and event.get("type") == "error":
                pytest.fail(f"the GUI showed an error: {event}")
    return "".join(contents)


@pytest.mark.skipif(G4F_MAJOR < 6, reason="g4f's web GUI backend has these routes from 6.x on")
@pytest.mark.parametrize("options", [(), ("--ignored-providers", "Copilot")], ids=["packaged list", "live list"])
def test_the_web_gui_lists_gptalk_enabled_and_shows_its_reply_and_g4fs_files_keep_no_trace(server, options):
    before = g4f_package_files()
    with running_g4f_api(*options) as base:
        listed = [entry for entry in get_json(base + "/backend-api/v2/providers") if entry["name"] == "GPTalk"]
        models = get_json(base + "/backend-api/v2/models/GPTalk")
        reply = gui_conversation(base, "GPTalk")
    assert len(listed) == 1 and listed[0]["label"] == "GPTalk" and listed[0]["active_by_default"] is True
    assert not listed[0]["hf_space"]  # the page leaves hf_space entries out of its menu
    assert "gpt-3.5-turbo" in [model.get("id", model.get("model")) if isinstance(model, dict) else model for model in models]
    assert reply == REPLY and server.stats["asks"] == 1
    after = g4f_package_files()
    changed = [name for name in after if after[name] != before.get(name)]
    # g4f itself may rewrite its provider list when it builds it live; nothing of GPTalk's may be in it
    assert all(name == "providers.json" for name in changed), changed
    root = Path(importlib.util.find_spec("g4f").origin).parent  # type: ignore[arg-type, union-attr]
    assert all("GPTalk" not in (root / name).read_text() for name in changed)
    # g4f started without the plugin, as after its uninstall, shows GPTalk nowhere
    with running_g4f_api(*options, env={"G4F_GPTALK_AUTOLOAD": "0"}) as base:
        assert "GPTalk" not in [entry["name"] for entry in get_json(base + "/backend-api/v2/providers")]


@pytest.mark.skipif(G4F_MAJOR < 8, reason="g4f caches the GUI's model search from 8.x on")
def test_the_gui_lists_follow_install_state_whatever_g4f_cached(server, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(os.environ["G4F_CACHE_DIR"], cache)  # today's offline provider list
    all_models = cache / ".models" / importlib.metadata.version("g4f") / "all_models.json"
    all_models.parent.mkdir(parents=True, exist_ok=True)
    all_models.write_text(json.dumps({"Copilot": ["gpt-4"]}))  # what g4f cached before the plugin was installed
    env = {"G4F_CACHE_DIR": str(cache)}

    def gui_lists(base: str) -> tuple[list[Any], list[str], list[Any]]:
        models = get_json(base + "/backend-api/v2/models")
        providers = [entry["name"] for entry in get_json(base + "/backend-api/v2/providers")]
        return models.get("GPTalk"), providers, get_json(base + "/backend-api/v2/models/GPTalk")

    with running_g4f_api(env=env) as base:
        search, providers, own_models = gui_lists(base)
    assert search == ["gpt-3.5-turbo"] and "GPTalk" in providers and own_models
    assert json.loads(all_models.read_text()) == {"Copilot": ["gpt-4"]}  # g4f's cache kept as it was

    all_models.unlink()  # g4f builds its model search afresh while the plugin is installed
    with running_g4f_api(env=env) as base:
        assert gui_lists(base)[0] == ["gpt-3.5-turbo"]
    assert all_models.exists() and "GPTalk" not in all_models.read_text()

    with running_g4f_api(env={**env, "G4F_GPTALK_AUTOLOAD": "0"}) as base:  # as after an uninstall
        search, providers, own_models = gui_lists(base)
    assert (search, "GPTalk" in providers, own_models) == (None, False, [])


def test_the_openai_compatible_server_lists_and_answers_with_gptalk(g4f_api, server):
    from openai import OpenAI

    try:
        providers = {provider.get("id", provider.get("name")): provider
                     for provider in get_json(f"{g4f_api}/v1/providers")}
    except urllib.error.HTTPError as exc:
        assert exc.code == 404 and G4F_MAJOR == 0  # g4f 0.x before /v1/providers existed
    else:
        assert providers["GPTalk"]["url"] == server.url  # the service it will call, G4F_GPTALK_URL
    if hasattr(AsyncGeneratorProvider, "probe_health"):  # g4f 8's health routes, the API's and the GUI's
        for route in ("/api/GPTalk/health", "/backend-api/v2/health/GPTalk"):
            assert get_json(g4f_api + route) == {"url": server.url, "ok": True, "status": 200}
    client = OpenAI(base_url=f"{g4f_api}/v1", api_key="unused", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "Hello"}]
    whole = client.chat.completions.create(model="gpt-3.5-turbo", messages=messages, extra_body={"provider": "GPTalk"})
    assert whole.choices[0].message.content == REPLY
    if G4F_MAJOR >= 8:  # its answers name the provider and the model
        assert (whole.model, (whole.model_extra or {}).get("provider")) == ("gpt-3.5-turbo", "GPTalk")
    stream = client.chat.completions.create(
        model="gpt-3.5-turbo", messages=messages, stream=True, extra_body={"provider": "GPTalk"})
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert "".join(pieces) == REPLY and len([p for p in pieces if p]) > 10
    assert server.stats["asks"] == 2


def test_the_g4f_client_cli_prints_the_reply(server):
    result = subprocess.run(
        [sys.executable, "-m", "g4f.cli", "client", "-p", "GPTalk", "Hello"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    if "invalid choice: 'client'" in result.stderr:
        pytest.skip("this g4f has no `g4f client`")
    assert REPLY in result.stdout, result.stdout + result.stderr
    assert server.stats["asks"] == 1


def test_doctor_reports_every_path_and_a_login(server):
    result = subprocess.run(
        [sys.executable, "-m", "g4f_gptalk", "doctor"], capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line.split(":")[0] for line in lines] == [
        "ok    autoload", "ok    registry", "ok    provider list", "ok    selection", "ok    models", "ok    login",
        "ok    tokens"]
    assert server.stats["logins"] == 1


def test_doctor_fails_when_the_service_does_not_answer():
    result = subprocess.run(
        [sys.executable, "-m", "g4f_gptalk", "doctor", "--url", "http://127.0.0.1:9"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "FAIL  login: GPTalk login: cannot connect to http://127.0.0.1:9: Connection refused" in result.stdout.splitlines()


def test_doctor_offline_names_g4fs_own_download_and_the_remedy_and_still_checks_gptalk(server, tmp_path):
    # g4f's list download goes through a proxy where nothing listens: offline, without a packet leaving the machine
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "G4F_CACHE_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "g4f_gptalk", "doctor"], capture_output=True, text=True,
                            timeout=120, env=env)
    lines = {line.split(":")[0].split(maxsplit=1)[1]: line for line in result.stdout.splitlines()}
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines["login"].startswith("ok    login:") and lines["registry"].startswith("ok ")
    provider_list = lines["provider list"]
    if provider_list.startswith("warn"):  # g4f 8 downloads its provider list here; older releases do not
        assert "GPTalk is among g4f's" in provider_list and "g4f itself could not build its full provider list" \
            in provider_list and "set G4F_CACHE_DIR to a folder holding .models/" in provider_list
        said = provider_list.split("provider list (", 1)[1].split("). g4f downloads", 1)[0]
        assert said.count("'") % 2 == 0 and said.count('"') % 2 == 0, said  # the exception's words whole
    else:
        assert provider_list.startswith("ok    provider list:")


def test_doctor_reports_a_missing_registration_under_python_dash_o():
    result = subprocess.run([sys.executable, "-O", "-c", textwrap.dedent("""
        import g4f
        g4f.debug.version_check = False  # older g4f would ask PyPI while choosing a provider
        from g4f_gptalk import doctor as checks
        checks.GPTalk = type("NotTheRegisteredGPTalk", (), {})  # what g4f has registered is no longer it
        print(checks.run_checks()[1][0])
    """)], capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent)
    assert result.stdout.split() == ["FAIL"], result.stderr  # an assert-based check says "ok" under -O


def test_a_plugin_that_cannot_load_says_why_once_on_stderr_and_g4f_still_works(tmp_path):
    # what happens on a g4f too old for the plugin: importing the package fails
    (tmp_path / "g4f_gptalk").mkdir()
    (tmp_path / "g4f_gptalk" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'G4FError' from 'g4f.errors'\")\n")
    result = subprocess.run([sys.executable, "-c", "import g4f, g4f.models; print('g4f works')"],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent,
                            env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert result.stdout == "g4f works\n"
    assert result.stderr.splitlines() == [
        f"g4f-gptalk: GPTalk could not be registered with g4f {importlib.metadata.version('g4f')}: ImportError: "
        "cannot import name 'G4FError' from 'g4f.errors'. Install a g4f that g4f-gptalk supports, or set "
        "G4F_GPTALK_AUTOLOAD=0 to stop loading it."]


def test_gptalk_survives_a_reload_of_g4fs_provider_registry(server):
    out = run_python(textwrap.dedent("""
        import importlib, g4f, g4f.Provider
        importlib.reload(g4f.Provider)
        import g4f.Provider as P
        print(P.ProviderUtils.convert["GPTalk"].__module__)
        print(g4f.ChatCompletion.create("gpt-3.5-turbo", [{"role": "user", "content": "Hello"}], provider="GPTalk"))
    """))
    assert out.splitlines() == ["g4f_gptalk.provider", REPLY]


def test_a_second_bridge_in_the_same_group_stays_quiet(tmp_path):
    # another plugin package built the same way runs its own copy of the bridge after ours
    out = run_python(textwrap.dedent("""
        import importlib.util, warnings, g4f.Provider, g4f_gptalk.plugin.bridge as ours
        spec = importlib.util.spec_from_file_location("their_bridge", ours.__file__)
        theirs = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(theirs)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = theirs.load_plugins()
        print(sorted(found), [str(w.message) for w in caught])
    """))
    assert out.strip() == "[] []"


def test_a_test_suite_outside_the_project_gets_the_gptalk_server_fixture(tmp_path):
    (tmp_path / "test_app.py").write_text(textwrap.dedent("""
        import os
        import g4f

        from g4f_gptalk.testing.server import Faults, echo_reply

        g4f.debug.version_check = False
        HELLO = [{"role": "user", "content": "Hello"}]

        def test_a_chat_through_g4f_reaches_the_fixtures_server(gptalk_server):
            assert os.environ["G4F_GPTALK_URL"] == gptalk_server.url
            assert g4f.ChatCompletion.create(model="gpt-3.5-turbo", provider="GPTalk", messages=HELLO) \\
                == echo_reply("Hello")
            assert gptalk_server.stats["logins"] == 1 and gptalk_server.stats["asks"] == 1

        def test_its_faults_are_the_tests_to_set(gptalk_server):
            gptalk_server.faults = Faults(ask=["429"])
            try:
                g4f.ChatCompletion.create(model="gpt-3.5-turbo", provider="GPTalk", messages=HELLO)
            except g4f.errors.RateLimitError as error:
                assert "GPTalk ask: HTTP 429" in str(error)
            assert gptalk_server.stats["asks"] == 1

        def test_nothing_is_left_in_the_environment():
            assert "G4F_GPTALK_URL" not in os.environ
    """))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error::pytest.PytestWarning",
         "test_app.py"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
