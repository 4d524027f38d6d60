"""``g4f-gptalk`` (also ``python -m g4f_gptalk``): chat through g4f, run the local server, check the install.

    g4f-gptalk chat "Hello" [--url URL]   stream GPTalk's reply through g4f
    g4f-gptalk demo ["Hello"]             the same against a local GPTalk server (or G4F_GPTALK_URL, if set)
    g4f-gptalk serve [--port N]           run a local GPTalk server on 127.0.0.1
    g4f-gptalk doctor [--url URL]         which of g4f's ways to pick a provider see GPTalk; does the URL log in
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

from g4f import debug
from g4f.errors import G4FError

from .arguments import URL_ENV
from .provider import GPTalk

DEFAULT_PROMPT = "Hello, GPTalk! Say something in a few languages."


def chat(prompt: str, model: str, timeout: float | None) -> None:
    """Stream GPTalk's reply to ``prompt`` through ``g4f.ChatCompletion`` to stdout as it arrives."""
    import g4f

    messages = [{"role": "user", "content": prompt}]
    for chunk in g4f.ChatCompletion.create(model, messages, provider=GPTalk, stream=True, timeout=timeout):
        if isinstance(chunk, str):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    sys.stdout.write("\n")


def demo(prompt: str, model: str, timeout: float | None) -> None:
    """``chat`` against G4F_GPTALK_URL if set, else against a local GPTalk server started for the occasion."""
    if os.environ.get(URL_ENV):
        chat(prompt, model, timeout)
        return
    from .server import ServerThread

    with ServerThread() as server:
        os.environ[URL_ENV] = server.url
        print(f"(local GPTalk server at {server.url})", file=sys.stderr)
        chat(prompt, model, timeout)


def serve(port: int, host: str) -> None:
    from .server import serve_forever

    def ready(url: str) -> None:
        print(f"GPTalk server listening on {url}", flush=True)

    try:
        asyncio.run(serve_forever(port, host, ready))
    except KeyboardInterrupt:
        pass


def doctor() -> bool:
    """Print one line per check; True when all pass."""
    from .checks import run_checks

    results = run_checks()
    for ok, name, detail in results:
        print(f"{'ok  ' if ok else 'FAIL'}  {name}: {detail}")
    return all(ok for ok, _, _ in results)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="g4f-gptalk", description="GPTalk provider for g4f")
    commands = root.add_subparsers(dest="command", required=True)
    for name, help_text in (("chat", "stream a reply through g4f"), ("demo", "chat against a local GPTalk server")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("prompt", nargs="?" if name == "demo" else None, default=DEFAULT_PROMPT)
        command.add_argument("--model", default=GPTalk.default_model)
        command.add_argument("--timeout", type=float, default=None, help="seconds for the whole reply")
        if name == "chat":
            command.add_argument("--url", help=f"service address (default: ${URL_ENV} or {GPTalk.url})")
    serve_command = commands.add_parser("serve", help="run a local GPTalk server")
    serve_command.add_argument("--port", type=int, default=8765)
    serve_command.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    doctor_command = commands.add_parser("doctor", help="check that g4f finds GPTalk and the service answers")
    doctor_command.add_argument("--url", help=f"service address (default: ${URL_ENV} or {GPTalk.url})")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    debug.version_check = False  # g4f's update notice would land in the middle of our output on stdout
    if getattr(args, "url", None):
        os.environ[URL_ENV] = args.url
    actions: dict[str, Callable[[], object]] = {
        "chat": lambda: chat(args.prompt, args.model, args.timeout),
        "demo": lambda: demo(args.prompt, args.model, args.timeout),
        "serve": lambda: serve(args.port, args.host),
        "doctor": doctor,
    }
    try:
        result = actions[args.command]()
    except (G4FError, ValueError, OSError) as exc:
        sys.stdout.flush()
        print(f"\ng4f-gptalk: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 1 if result is False else 0


if __name__ == "__main__":
    sys.exit(main())
