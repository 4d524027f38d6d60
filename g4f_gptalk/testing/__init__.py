"""A testing kit for apps built on g4f: a local server that speaks the GPTalk protocol (``server``), what it can do
wrong on demand (``faults``), and the ``gptalk_server`` pytest fixture (``pytest_plugin``)."""
