"""GPTalk's protocol: the provider class and what it needs to speak to gptalk.net (tokens, the reply stream, the
service's errors, the checks of a call's arguments)."""
