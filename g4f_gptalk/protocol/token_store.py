"""Where a service's tokens and their counted asks are kept: in this process's memory, or in a file that every
process of the machine shares, ``g4f.cookies.get_cookies_dir()/auth_GPTalk.json``, as g4f's own providers keep
their auth (``AuthFileMixin``), but locked, written whole or not at all, and private (0600).

The file holds, for each service URL, the tokens with asks left: ``{"services": {url: [{"token", "expires_at",
"asks"}, ...]}}``. An ask is claimed under an advisory lock (``fcntl.flock``), so that no token is sent a sixth ask
whatever the number of processes; a process killed at any moment leaves the file whole (it is rewritten by one
write within its first page, or past that written aside and moved into place), or, killed before its first write,
empty: no tokens. A file that cannot be read is ignored and rewritten; a folder that cannot be written or locked
leaves the process with its memory, as without the file. The folder is g4f's as it is set at each chat.
``docs/design.md`` ("Tokens") says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from ..compat import log
from .auth import CLOCK_SKEW, MAX_ASKS_PER_TOKEN, Token

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, so no shared file
    fcntl = None  # type: ignore[assignment]

SETTING = "G4F_GPTALK_SHARED_TOKENS"
"""``0`` keeps tokens in each process's memory only."""
FILE_NAME = "auth_GPTalk.json"
SOON = 60.0
"""Seconds: a token that expires within them is as good as gone when deciding to log in ahead of need."""
LOGIN_POLL = 0.02
"""Seconds between a waiting process's tries for the login lock that another process holds while it logs in."""

Entry = dict[str, Any]


def _usable(entry: Entry, now: float) -> bool:
    return entry["asks"] < MAX_ASKS_PER_TOKEN and now < entry["expires_at"] - CLOCK_SKEW


def _claim(entries: list[Entry], now: float) -> Token | None:
    """One ask of the usable token with the fewest asks left (so that tokens are used up one at a time)."""
    usable = [entry for entry in entries if _usable(entry, now)]
    if not usable:
        return None
    entry = max(usable, key=lambda entry: entry["asks"])
    entry["asks"] += 1
    return Token(entry["token"], entry["expires_at"], entry["asks"])


def _left(entries: list[Entry], now: float) -> int:
    """The asks left on tokens that stay usable for ``SOON`` seconds more."""
    return sum(MAX_ASKS_PER_TOKEN - entry["asks"] for entry in entries if _usable(entry, now + SOON))


def _kept(entries: list[Entry], now: float) -> list[Entry]:
    return [entry for entry in entries if _usable(entry, now)]


class MemoryStore:
    """A service's tokens in this process's memory."""

    def __init__(self, folder: str | None = None) -> None:
        self._entries: list[Entry] = []
        self.left = 0
        """The asks left (on tokens not about to expire) after the last ``claim``."""
        self.folder = folder
        """The cookies folder this store was chosen for; None where the choice did not depend on one."""

    def moved(self) -> bool:
        """Whether g4f's cookies folder is another one now (``g4f.cookies.set_cookies_dir``): then the next chat
        takes the store of the new one, as g4f's own providers follow it."""
        return self.folder is not None and _cookies_config is not None and _cookies_config.cookies_dir != self.folder

    def _change(self, change: Callable[[list[Entry]], Any]) -> Any:
        result = change(self._entries)
        self._entries = _kept(self._entries, time.time())
        return result

    @contextlib.asynccontextmanager
    async def login_turn(self, wait: float) -> AsyncIterator[None]:
        """Held while this process logs in: in memory, nothing to wait for (one login at a time is the cache's)."""
        yield

    def where(self) -> str:
        return "memory"

    # The operations, the same for both stores.

    def claim(self) -> Token | None:
        """One ask of a usable token, counted; None if there is none."""
        def claiming(entries: list[Entry]) -> Token | None:
            now = time.time()
            token = _claim(entries, now)
            self.left = _left(entries, now)
            return token
        return self._change(claiming)

    def asks_left(self) -> int:
        """The asks left on tokens not about to expire."""
        return self._change(lambda entries: _left(entries, time.time()))

    def add(self, token: Token) -> None:
        """A fresh token, ``token.asks`` of its asks counted already."""
        self._change(lambda entries: entries.append(
            {"token": token.value, "expires_at": token.expires_at, "asks": token.asks}))

    def give_back(self, token: Token) -> None:
        """One ask of ``token`` counted for a chat that did not send it."""
        def give(entries: list[Entry]) -> None:
            for entry in entries:
                if entry["token"] == token.value and entry["asks"] > 0:
                    entry["asks"] -= 1
        self._change(give)

    def drop(self, token: Token) -> None:
        """Forget ``token``: the service rejected it."""
        def without(entries: list[Entry]) -> None:
            entries[:] = [entry for entry in entries if entry["token"] != token.value]
        self._change(without)

    def forget(self) -> None:
        self._change(lambda entries: entries.clear())


class FileStore(MemoryStore):
    """A service's tokens in the machine's shared file; this process's memory once the file fails it."""

    def __init__(self, url: str, folder: str) -> None:
        super().__init__(folder)
        self.url = url
        self.path = Path(folder) / FILE_NAME
        self._opened: dict[str, tuple[int, int]] = {}  # file name -> (pid, descriptor), opened once per process
        self._known: tuple[bytes, dict[str, list[Entry]]] = (b"", {})
        """The file's bytes as this process last read or wrote them, and their tokens: the same bytes again (no
        other process wrote meanwhile) need no parsing."""
        self.failed = False

    def where(self) -> str:
        return "memory" if self.failed else str(self.path)

    def _change(self, change: Callable[[list[Entry]], Any]) -> Any:
        if self.failed:
            return super()._change(change)
        try:
            with self._locked():
                raw, descriptor = self._read()
                services = _copy(self._known[1]) if raw == self._known[0] else _parse(raw, self.path)
                entries = services.setdefault(self.url, [])
                before = [dict(entry) for entry in entries]
                result = change(entries)
                services[self.url] = _kept(entries, time.time())
                if services[self.url] != before:
                    self._write(descriptor, {key: value for key, value in services.items() if value}, len(raw))
                return result
        except OSError as exc:
            self.failed = True
            log(f"GPTalk: the shared token file cannot be used ({exc.strerror or exc}); tokens stay in this "
                f"process's memory")
            return super()._change(change)

    def _descriptor(self, name: str, flags: int = os.O_RDWR) -> int:
        """A descriptor of ``name`` in the folder, opened once per process (a forked child opens its own: a lock
        belongs to the open file, which a child shares with its parent)."""
        held = self._opened.get(name)
        if held is not None and held[0] == os.getpid():
            return held[1]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(self.path.with_name(name), flags | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._opened[name] = (os.getpid(), descriptor)
        return descriptor

    @contextlib.contextmanager
    def _locked(self) -> Any:
        descriptor = self._descriptor(FILE_NAME + ".lock")
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)

    def _read(self) -> tuple[bytes, int]:
        """The file's bytes and a descriptor of it, under the lock; opened again (made again if need be) if the one
        held was replaced or removed meanwhile: then it has no name left."""
        descriptor = self._descriptor(FILE_NAME)
        held = os.fstat(descriptor)
        if held.st_nlink == 0:
            os.close(descriptor)
            del self._opened[FILE_NAME]
            descriptor = self._descriptor(FILE_NAME)
            held = os.fstat(descriptor)
        return os.pread(descriptor, held.st_size, 0), descriptor

    def _write(self, descriptor: int, services: dict[str, list[Entry]], size: int) -> None:
        """Write the tokens so that a process killed at any moment leaves the file whole: in place, in one write
        within the file's first page, which the kernel makes at once (padded with spaces over what was longer);
        past a page, written aside and moved into place (``os.replace``)."""
        data = json.dumps({"services": services}).encode()
        if max(len(data), size) <= IN_PLACE_BYTES:
            data = data.ljust(size)
            os.pwrite(descriptor, data, 0)
            self._known = (data, _copy(services))
            return
        aside = self.path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
        with open(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as file:
            file.write(data)
        os.replace(aside, self.path)
        self._known = (data, _copy(services))

    def forget(self) -> None:
        if self.path.exists():  # forgetting makes no file
            super().forget()

    def forget_every_service(self) -> None:
        if not self.path.exists():
            return
        try:
            with self._locked():
                raw, descriptor = self._read()
                self._write(descriptor, {}, len(raw))
        except OSError:
            pass

    @contextlib.asynccontextmanager
    async def login_turn(self, wait: float) -> AsyncIterator[None]:
        """Held while this process logs in, so that the machine's processes log in one at a time: the others wait
        (polling, at most ``wait`` seconds) and then find the token this one stored. A process that dies holding it
        lets it go with its descriptor."""
        try:
            descriptor = None if self.failed else self._descriptor(FILE_NAME + ".login")
        except OSError:
            descriptor = None
        if descriptor is None:
            yield
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if loop.time() >= deadline:
                    raise TimeoutError from None
                await asyncio.sleep(LOGIN_POLL)
        try:
            yield
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)


IN_PLACE_BYTES = 4096
"""A file up to this size is rewritten in place, in one write within its first page."""


def _parse(raw: bytes, path: Path) -> dict[str, list[Entry]]:
    """The file's tokens by service URL; an empty table if the file is empty, or unreadable or of another shape."""
    if not raw.strip():
        return {}
    try:
        services = json.loads(raw.decode("utf-8"))["services"]
        if not isinstance(services, dict):
            raise TypeError
        return {str(url): [_entry(item) for item in items] for url, items in services.items()}
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        log(f"GPTalk: ignored {path}: not a token file of this plugin's; the next login rewrites it")
        return {}


def _copy(services: dict[str, list[Entry]]) -> dict[str, list[Entry]]:
    return {url: [dict(entry) for entry in entries] for url, entries in services.items()}


def _entry(item: Any) -> Entry:
    token, expires_at, asks = item["token"], item["expires_at"], item["asks"]
    if not isinstance(token, str) or not token or isinstance(expires_at, bool) or isinstance(asks, bool) \
            or not isinstance(expires_at, (int, float)) or not isinstance(asks, int):
        raise TypeError
    return {"token": token, "expires_at": float(expires_at), "asks": asks}


def store_for(url: str) -> MemoryStore:
    """The store of ``url``'s tokens: the shared file, unless ``G4F_GPTALK_SHARED_TOKENS=0`` or this g4f has no
    cookies folder (before 0.4), or it is a relative folder that does not exist (g4f 0.4's ``./har_and_cookies``)."""
    global _cookies_config
    if os.environ.get(SETTING, "1") == "0" or fcntl is None:
        return MemoryStore()
    try:
        from g4f.cookies import CookiesConfig, get_cookies_dir
    except ImportError:
        return MemoryStore()
    _cookies_config, folder = CookiesConfig, get_cookies_dir()
    if not os.path.isabs(folder) and not os.path.isdir(folder):
        return MemoryStore(folder)
    return FileStore(url, folder)


_cookies_config: Any = None
"""``g4f.cookies.CookiesConfig``, once a store was chosen: where g4f keeps its cookies folder."""


def forget(url: str | None = None) -> None:
    """Forget the tokens of the service at ``url`` (of every service if None), in memory and in the shared file."""
    from .arguments import InvalidRequestError, checked_url
    from .auth import caches

    if url is None:
        caches.clear()
        store = store_for("")
        if isinstance(store, FileStore):
            store.forget_every_service()
        return
    try:
        url = checked_url(url, "base_url")
    except InvalidRequestError:
        return
    caches.pop(url, None)
    store_for(url).forget()
