"""GPTalk's protocol: one chat's requests (``chat``) and what they need to speak to gptalk.net (tokens, the reply
stream, the service's errors, the checks of a call's arguments)."""

import g4f  # noqa: F401 - g4f first: its import runs the start-up hook, which loads the provider module whole
