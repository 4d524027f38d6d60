"""GPTalk's protocol: the provider class and what it needs to speak to gptalk.net (tokens, the reply stream, the
service's errors, the checks of a call's arguments)."""

import g4f  # noqa: F401 - g4f first: its import runs the start-up hook, which loads the provider module whole
