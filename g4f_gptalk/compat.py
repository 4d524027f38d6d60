"""What older g4f releases lack, stood in for, so that one plugin serves g4f 0.2.9.9 to 8.x; the base module
below every layer of the package.

g4f before 0.5.9.0 has no common ``G4FError`` base (its errors are plain Exceptions) and no ``CloudflareError``;
before 0.4 no ``TimeoutError``; 0.2.x no ``debug.log``; older releases no ``ProviderInfo``. Each name here is g4f's
own where g4f has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import g4f.errors
from g4f import debug
from g4f.errors import ResponseError

from .redaction import scrub

if TYPE_CHECKING:
    from g4f.errors import CloudflareError, G4FError
    from g4f.errors import TimeoutError as G4FTimeoutError
else:
    G4FError = getattr(g4f.errors, "G4FError", Exception)
    CloudflareError = getattr(g4f.errors, "CloudflareError", None) or type(
        "CloudflareError", (ResponseError,), {"__doc__": "A Cloudflare challenge page instead of the answer."})
    G4FTimeoutError = getattr(g4f.errors, "TimeoutError", None) or type(
        "TimeoutError", (Exception,), {"__doc__": "A call ran out of time (g4f's own from 0.4 on)."})


try:
    from g4f.providers.response import ProviderInfo
except ImportError:  # older g4f: its Client names no provider
    ProviderInfo = None


def log(text: str) -> None:
    """``g4f.debug.log(text)``, every secret scrubbed: printed only while g4f's debug logging is on."""
    if not debug.logging:
        return
    if hasattr(debug, "log"):
        debug.log(scrub(text))
    else:
        print(scrub(text))
