"""Build hooks only (all metadata is in setup.cfg): ship g4f_gptalk.pth at the root of every install.

The .pth imports the tiny `_g4f_gptalk_autoload` module at interpreter start-up, which registers GPTalk with g4f
once g4f is imported. A wheel gets the file from `build_py`; since setuptools 64 an editable install runs no
`build_py`, so `editable_wheel` adds it to the editable wheel as well.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH = Path(__file__).parent / "g4f_gptalk.pth"


class BuildPyWithPth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(PTH), str(Path(self.build_lib) / PTH.name))


class _StrategyWithPth:
    """Wraps setuptools' editable strategy so that the editable wheel also carries our .pth."""

    def __init__(self, strategy):
        self._strategy = strategy

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc_info):
        return self._strategy.__exit__(*exc_info)

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        wheel.writestr(PTH.name, PTH.read_text())


class EditableWheelWithPth(editable_wheel):
    def _select_strategy(self, *args, **kwargs):
        # Unless asked otherwise, a plain path entry: for a flat layout setuptools would install a meta path finder
        # that costs every interpreter ~18 ms and heavy importlib imports at start-up.
        self.mode = self.mode or "compat"
        return _StrategyWithPth(super()._select_strategy(*args, **kwargs))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})
