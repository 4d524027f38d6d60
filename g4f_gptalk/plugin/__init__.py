"""How GPTalk plugs into g4f: the bridge that registers ``g4f.providers`` entry points with g4f's registries and web
GUI. ``_g4f_gptalk_autoload``, outside the package, runs the bridge at start-up."""

import g4f  # noqa: F401 - g4f first: its import runs the start-up hook, which loads the provider module whole
