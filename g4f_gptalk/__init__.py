"""GPTalk (gptalk.net) chat provider for g4f.

After ``pip install g4f-gptalk`` g4f finds it by name (``provider="GPTalk"``) with no import in user code; importing
this package registers it too, for environments where the start-up hook is off (``G4F_GPTALK_AUTOLOAD=0``).
"""

import g4f  # noqa: F401 - g4f first: its import runs the start-up hook, which may load our provider module

from .plugin import bridge
from .protocol.provider import GPTalk

__version__ = "0.1.0"
__all__ = ["GPTalk", "__version__"]

bridge.load_plugins()
bridge.register_models()
