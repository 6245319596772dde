"""The structure a reviewer can check, beside what `make test` runs before the suite (ruff's rules and the layers of
pyproject's import-linter contract): no function over 80 lines, no private name used outside its module."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"fltool": ROOT / "fltool", "fltool_plugins": ROOT / "plugins"}
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[str, Path]]:
    """(dotted module name, file) of every module of fltool and fltool_plugins."""
    found = []
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join([package, *parts]), path))
    return found


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _submodule(package: str, name: str) -> bool:
    """Whether ``package.name`` is a module of the package (a private compiled extension such as
    ``fltool_plugins._focal_ext`` is its package's own, like ``torch._C``)."""
    top, *rest = package.split(".")
    folder = PACKAGES.get(top)
    return folder is not None and any(folder.joinpath(*rest).glob(f"{name}.*"))


def test_no_function_is_longer_than_80_lines():
    long = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, "split these along their seams:\n" + "\n".join(long)


def test_no_private_name_is_used_outside_its_module():
    """``from fltool.x import _y`` and ``x._y`` on an imported fltool module: a private name is its module's own."""
    ours = {name for name, _ in _modules()}
    found = []
    for module, path in _modules():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> fltool module it names
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = _absolute(module, path, node)
                for alias in node.names:
                    if f"{source}.{alias.name}" in ours:
                        aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
                    elif source in ours and source != module and _private(alias.name) \
                            and not _submodule(source, alias.name):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {source}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in ours and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                    and aliases[node.value.id] != module and _private(node.attr):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    assert not found, "make these public in their module, or move the code that needs them there:\n" + \
        "\n".join(found)
