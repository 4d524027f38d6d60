"""``g4f-gptalk`` (also ``python -m g4f_gptalk``): chat through g4f, run the local server, check the install.

    g4f-gptalk chat "Hello" [--url URL]   stream GPTalk's reply through g4f
    g4f-gptalk demo ["Hello"]             the same against a local GPTalk server (or G4F_GPTALK_URL, if set)
    g4f-gptalk serve [--port N]           run a local GPTalk server on 127.0.0.1 (--host H --public for others)
    g4f-gptalk doctor [--url URL]         which of g4f's ways to pick a provider see GPTalk; does the URL log in
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's, which costs ~15 ms to import: see below
# Nothing heavier is imported before main() runs: Ctrl-C while g4f and aiohttp load is handled there like any other.
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

URL_ENV = "G4F_GPTALK_URL"  # provider.URL_ENV, which is not imported before main() runs
DEFAULT_PROMPT = "Hello, GPTalk! Say something in a few languages."


class _Output:
    """stdout, remembering whether its last line is unfinished (so that what follows starts on a new one)."""

    mid_line = False

    @classmethod
    def write(cls, text: str) -> None:
        if text:
            cls.mid_line = not text.endswith("\n")  # first: Ctrl-C may interrupt right after the write
            sys.stdout.write(text)
            sys.stdout.flush()

    @classmethod
    def end_line(cls) -> None:
        if cls.mid_line:
            cls.write("\n")


def chat(prompt: str, model: str, timeout: float | None) -> None:
    """Stream GPTalk's reply to ``prompt`` through ``g4f.ChatCompletion`` to stdout as it arrives."""
    import g4f

    from .provider import GPTalk

    messages = [{"role": "user", "content": prompt}]
    for chunk in g4f.ChatCompletion.create(model, messages, provider=GPTalk, stream=True, timeout=timeout):
        if isinstance(chunk, str):
            _Output.write(chunk)
    _Output.write("\n")


def demo(prompt: str, model: str, timeout: float | None) -> None:
    """``chat`` against G4F_GPTALK_URL if set, else against a local GPTalk server started for the occasion."""
    import os

    if os.environ.get(URL_ENV):
        chat(prompt, model, timeout)
        return
    from .testing.server import ServerThread

    with ServerThread() as server:
        os.environ[URL_ENV] = server.url
        print(f"(local GPTalk server at {server.url})", file=sys.stderr)
        chat(prompt, model, timeout)


def serve(port: int, host: str, public: bool) -> None:
    """Run a local GPTalk server until Ctrl-C."""
    import asyncio

    from .protocol.errors import InvalidRequestError
    from .testing.server import serve_forever

    if not public and host not in ("127.0.0.1", "localhost", "::1"):
        raise InvalidRequestError(f"--host {host} would serve beyond this machine; add --public to mean it")

    def ready(url: str) -> None:
        print(f"GPTalk server listening on {url}", flush=True)

    asyncio.run(serve_forever(port, host, ready))


def doctor() -> bool:
    """Print one line per check; True when all pass."""
    from .doctor import run_checks

    results = run_checks()
    for outcome, name, detail in results:
        print(f"{outcome:<4}  {name}: {detail}")
    return all(outcome != "FAIL" for outcome, _, _ in results)


def port_number(text: str) -> int:
    """``--port``: a TCP port, 0 to 65535."""
    import argparse

    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0 to 65535)")
    return int(text)


def parser() -> argparse.ArgumentParser:
    import argparse

    from . import __version__
    from .provider import GPTalk

    formatter = argparse.ArgumentDefaultsHelpFormatter
    root = argparse.ArgumentParser(prog="g4f-gptalk", description="GPTalk provider for g4f", formatter_class=formatter)
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    for name, help_text in (("chat", "stream a reply through g4f"), ("demo", "chat against a local GPTalk server")):
        command = commands.add_parser(name, help=help_text, formatter_class=formatter)
        command.add_argument("prompt", nargs="?" if name == "demo" else None, default=DEFAULT_PROMPT, help="what to say")
        command.add_argument("--model", default=GPTalk.default_model, help="model name")
        command.add_argument("--timeout", type=float, default=GPTalk.timeout, help="seconds for the whole reply")
        if name == "chat":
            command.add_argument("--url", default=argparse.SUPPRESS,
                                 help=f"service address (default: ${URL_ENV}, else {GPTalk.default_url})")
    serve_command = commands.add_parser("serve", help="run a local GPTalk server", formatter_class=formatter)
    serve_command.add_argument("--port", type=port_number, default=8765, help="port to listen on; 0 picks a free one")
    serve_command.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve_command.add_argument("--public", action="store_true",
                               help="allow a --host beyond loopback (the /_local/ control endpoints stay loopback-only)")
    doctor_command = commands.add_parser("doctor", help="check that g4f finds GPTalk and the service answers",
                                         formatter_class=formatter)
    doctor_command.add_argument("--url", default=argparse.SUPPRESS,
                                help=f"service address (default: ${URL_ENV}, else {GPTalk.default_url})")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; exits 0, 1 on a failure (one line on stderr), 2 on bad usage, 130 on Ctrl-C."""
    import functools

    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_interrupt_again, previous_hook=previous_hook)
    try:
        return _run(argv)
    except BaseException as exc:
        if not _interrupted(exc):
            raise
        _Output.end_line()
        return 130
    finally:
        sys.unraisablehook = previous_hook


def _interrupt_again(unraisable: Any, previous_hook: Callable[[Any], object]) -> None:
    """A Ctrl-C that landed in a callback Python runs on its own (a weak reference's, as importlib's module locks
    have, or a ``__del__``), where Python would print it and go on, is made again in the main thread once this hook
    has returned (made while it runs, it would land in the hook and be printed the same way); anything else is the
    previous hook's."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        import _thread
        import threading  # here: imported first in another thread, it would take that thread for the main one

        main_thread = threading.main_thread().ident
        assert main_thread is not None  # it runs this
        # a bare thread: threading's would hold this hook until it runs, and a busy machine may run it late
        _thread.start_new_thread(_interrupt_after_the_hook, (main_thread,))
    else:
        previous_hook(unraisable)


def _interrupt_after_the_hook(ident: int) -> None:
    """SIGINT to the main thread (``ident``) once it no longer runs ``_interrupt_again``, as Ctrl-C does; and again
    while it stays where it was: a signal that comes just before a blocking call begins (``time.sleep``, a lock's
    wait) does not wake it. A main thread that took the signal has left that place before this thread looks again:
    Python runs the handler and unwinds without letting another thread run."""
    import time

    while _in_the_hook(sys._current_frames().get(ident)):
        time.sleep(HOOK_POLL)
    for _ in range(INTERRUPT_TRIES):
        where = _where(ident)
        _signal_main_thread(ident)
        time.sleep(INTERRUPT_AGAIN_AFTER)
        if _where(ident) != where:
            return


def _signal_main_thread(ident: int) -> None:
    import signal

    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(ident, signal.SIGINT)
    else:  # Windows: the main thread is interrupted at its next Python instruction
        import _thread

        _thread.interrupt_main()


def _in_the_hook(frame: Any) -> bool:
    while frame is not None:
        if frame.f_code is _interrupt_again.__code__:
            return True
        frame = frame.f_back
    return False


def _where(ident: int) -> tuple[Any, int] | None:
    """The thread ``ident``'s frame and instruction."""
    frame = sys._current_frames().get(ident)
    return None if frame is None else (frame, frame.f_lasti)


HOOK_POLL = 0.001
"""Seconds between looks at whether the main thread has left the hook that makes a swallowed Ctrl-C again."""
INTERRUPT_AGAIN_AFTER = 0.1
"""Seconds after which a Ctrl-C made again is made once more if the main thread has not moved."""
INTERRUPT_TRIES = 20


def _interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Ctrl-C, or an error raised while handling it (g4f's own import turns a Ctrl-C during it
    into an UnboundLocalError)."""
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _run(argv: Sequence[str] | None) -> int:
    import os

    from g4f import debug

    from .protocol.arguments import checked_url
    from .protocol.errors import G4FError

    args = parser().parse_args(argv)
    debug.version_check = False  # g4f's update notice would land in the middle of our output on stdout
    actions: dict[str, Callable[[], object]] = {
        "chat": lambda: chat(args.prompt, args.model, args.timeout),
        "demo": lambda: demo(args.prompt, args.model, args.timeout),
        "serve": lambda: serve(args.port, args.host, args.public),
        "doctor": doctor,
    }
    try:
        if getattr(args, "url", None):
            os.environ[URL_ENV] = checked_url(args.url, "--url")
        result = actions[args.command]()
    except (G4FError, ValueError, OSError) as exc:
        _Output.end_line()
        print(f"g4f-gptalk: error: {exc}", file=sys.stderr)
        return 1
    return 1 if result is False else 0


if __name__ == "__main__":
    sys.exit(main())
