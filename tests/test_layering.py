"""The package's layers import one way (README, "Layout"): cli → tools → api → encoder →
decoder → engines and dash → models and io → process → bitstream → errors.

Every `import` in every module, at the top or inside a function, is checked, so a
shortcut such as the command line or the conformance runner importing helpers from
`api`, or `bitstream` importing torch-side code, fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Repository folders installed under the libpromptus namespace (pyproject.toml's package-dir).
TOP_LEVEL = ("bitstream", "cli", "engines", "conformance")
#: Each layer's height: a module may import its own layer and the layers below it.
#: `models` and `io` stand side by side and do not import each other; so do `engines` and `dash`.
HEIGHT = {"errors": 0, "bitstream": 1, "process": 2, "models": 3, "io": 3, "engines": 4, "dash": 4, "decoder": 5,
          "encoder": 6, "api": 7, "conformance": 8, "evaluation": 8, "cli": 9}


def _modules() -> list[tuple[str, bool, Path]]:
    """(dotted name, is a package's __init__, path) of every module of the package."""
    found = []
    for folder in ("libpromptus", *TOP_LEVEL):
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[0] in TOP_LEVEL:
                parts = ["libpromptus", *parts]
            package = parts[-1] == "__init__"
            found.append((".".join(parts[:-1] if package else parts), package, path))
    return found


def _layer(module: str) -> str | None:
    """The layer of `libpromptus.X...`; a `__main__` module is a command line, of the cli layer."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] == "__version__":    # the root package itself
        return None
    return "cli" if parts[-1] == "__main__" else parts[1]


def _imports(module: str, package: bool, path: Path) -> list[str]:
    """The libpromptus modules `path` imports (relative imports resolved)."""
    base = module.split(".") if package else module.split(".")[:-1]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            stem = node.module if not node.level else ".".join(
                base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            names.extend([stem] if node.module else [f"{stem}.{alias.name}" for alias in node.names])
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [name for name in names if name.startswith("libpromptus.")]


def test_every_module_is_in_a_layer():
    unplaced = sorted({_layer(module) for module, _, _ in _modules()} - set(HEIGHT) - {None})
    assert unplaced == []


def test_imports_run_one_way():
    wrong = []
    for module, package, path in _modules():
        mine = _layer(module)
        if mine is None:            # libpromptus/__init__.py: the public surface, above every layer
            continue
        for target in _imports(module, package, path):
            theirs = _layer(target)
            if theirs is None or theirs == mine:
                continue
            if theirs not in HEIGHT or HEIGHT[theirs] >= HEIGHT[mine]:
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert wrong == []


@pytest.mark.parametrize("source, expected", [
    ("from ..api import encode", ["libpromptus.api"]),
    ("from .. import api", ["libpromptus.api"]),
    ("def f():\n    from ..encoder.job import encode", ["libpromptus.encoder.job"]),
    ("import numpy", []),
    ("import libpromptus.cli.common", ["libpromptus.cli.common"]),
])
def test_the_import_reader_resolves_relative_imports(tmp_path, source, expected):
    path = tmp_path / "module.py"
    path.write_text(source)
    assert _imports("libpromptus.decoder.module", False, path) == expected
