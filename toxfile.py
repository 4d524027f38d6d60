"""tox's inline plugin: the py312 and py313 envs take any installed 3.12.x and 3.13.x, from PATH or from pyenv's
builds, with no patch release written down. pyenv's shims are skipped: they answer only for a selected version.
Where none is installed, the env fails saying which interpreter it could not find."""

from __future__ import annotations

import glob
import os
from typing import Any

from tox.config.loader.memory import MemoryLoader
from tox.plugin import impl

VERSIONS = {"py312": "3.12", "py313": "3.13"}


def interpreters(version: str) -> list[str]:
    """The executables of Python ``version`` on this machine: those on PATH first, then pyenv's, newest first."""
    name = f"python{version}"
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    on_path = [os.path.join(directory, name) for directory in os.environ.get("PATH", "").split(os.pathsep)
               if directory and os.path.basename(os.path.normpath(directory)) != "shims"]  # pyenv's, asdf's
    builds = sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", name)),
                    key=lambda path: [int(part) if part.isdigit() else -1 for part in
                                      path.split(os.sep)[-3].split(".")], reverse=True)
    return [path for path in on_path + builds if os.path.isfile(path) and os.access(path, os.X_OK)]


@impl
def tox_add_env_config(env_conf: Any, state: Any) -> None:
    version = VERSIONS.get(env_conf.name)
    if version is not None and (found := interpreters(version)):
        env_conf.loaders.insert(0, MemoryLoader(base_python=found))
