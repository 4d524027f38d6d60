"""The package's layers: each module imports only from its own layer or those below it, so that the hook-up into
g4f stands on top of the rest and never the reverse (docs/design.md, "The tree")."""

from __future__ import annotations

import ast
from pathlib import Path

import g4f_gptalk

LAYERS = [
    ("g4f_gptalk.compat", "g4f_gptalk.redaction"),  # what older g4f lacks; what is never shown: below everything
    ("g4f_gptalk.runtime",),                      # event loops and pooled connections, knowing nothing of GPTalk
    ("g4f_gptalk.protocol",),                     # GPTalk's tokens, stream, errors and arguments
    ("g4f_gptalk.provider",),                     # the GPTalk class and its requests
    ("g4f_gptalk.plugin", "g4f_gptalk.testing"),  # the hook-up into g4f; the testing kit
    ("g4f_gptalk",),                              # the package itself, the CLI and doctor
]


def layer_of(module: str) -> int:
    """The layer of the most specific prefix ``module`` has."""
    matches = [(len(prefix), index) for index, prefixes in enumerate(LAYERS) for prefix in prefixes
               if module == prefix or module.startswith(prefix + ".")]
    return max(matches)[1]


def imports_of(path: Path, module: str) -> set[str]:
    """The package's modules that ``module`` (at ``path``) imports, anywhere in it (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
            found |= {name if name.rpartition(".")[2][:1].islower() and name in MODULES else base for name in names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.split(".")[0] == "g4f_gptalk"}


ROOT = Path(g4f_gptalk.__file__).parent
MODULES = {".".join(("g4f_gptalk", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__"): path
           for path in ROOT.rglob("*.py")}


def test_no_module_imports_from_a_layer_above_its_own():
    upward = sorted(f"{module} imports {imported}"
                    for module, path in MODULES.items() for imported in imports_of(path, module)
                    if layer_of(imported) > layer_of(module))
    assert upward == []
    assert len(MODULES) > 15  # the walk found the package
