"""Configs that fltool finds on its own are read as data: parsed, never executed.

MMEngine runs a ``.py`` config to read it (``Config.fromfile`` executes the file). That is right for a config the
user names (``fltool train CONFIG``, ``--config``), and wrong for one that comes with a file the user hands over: the
config text a checkpoint stores in ``meta['cfg']``, the config beside a checkpoint in a work dir, the one an ONNX
file's metadata names. Those are read here with :mod:`ast` as data, the form in which MMEngine writes every config it
dumps (``Config.pretty_text``): top-level assignments of literals, tuples, lists, dicts and ``dict(key=value)``.
Anything else (an import, another call, a name, an attribute, an operator, an f-string) is refused, and so is a
data config that would make MMEngine import or call something on its own: a ``type`` that is not a registered name
(MMEngine imports a dotted ``type='pkg.func'`` and calls it), or ``custom_imports`` beyond fltool's own plugins.
``--trust-checkpoint`` lifts the refusal for that run: the text is then executed as MMEngine would, from a temporary
file that is removed again.

MMEngine also rewrites ``{{ fileDirname }}``-style templates in a config's text when it reads a file, so a class
named ``{{ fileDirname }}`` came back as a folder name. :func:`config_text` writes a config so that MMEngine reads
every string back as it was (see :func:`escape_templates`); configs read here are never rewritten.
"""
from __future__ import annotations

import ast
import io
import tempfile
import tokenize
from pathlib import Path
from typing import Any, Iterator, Optional

from fltool.errors import ConfigError

#: What ``custom_imports`` may name in a config read as data: the module that registers fltool's own types.
ALLOWED_IMPORTS = ("fltool_plugins",)
#: Registry scopes a data config may prefix a type with (``mmdet.Resize``, ``mmdet::Resize``).
KNOWN_SCOPES = ("mmdet", "mmengine", "mmcv")
#: ``model.test_cfg.nms.type`` names an MMCV op, not a registry entry (fltool.engine.runner does the same).
_OP_TYPES = {"nms", "soft_nms"}


class NotData(Exception):
    """The text is not a config of plain data; ``what`` says where and why."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _where(node: ast.AST) -> str:
    return f"line {getattr(node, 'lineno', '?')}"


def _value(node: ast.AST) -> Any:
    """The Python value of a literal expression, or NotData."""
    if isinstance(node, ast.Constant) and not isinstance(node.value, type(Ellipsis)):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_value(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise NotData(f"{_where(node)}: '**' unpacking in a dict")
        try:
            return {_value(key): _value(value) for key, value in zip(node.keys, node.values)}
        except TypeError:
            raise NotData(f"{_where(node)}: a dict key that is not a plain value") from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
            and all(kw.arg is not None for kw in node.keywords) \
            and (not node.args or (len(node.args) == 1 and isinstance(node.args[0], ast.Dict))):
        # dict(a=1) and, for keys that are no identifiers, dict({'a b': 1}): both as MMEngine's pretty_text writes
        found = _value(node.args[0]) if node.args else {}
        found.update({kw.arg: _value(kw.value) for kw in node.keywords})
        return found
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float, complex):
        return -node.operand.value if isinstance(node.op, ast.USub) else node.operand.value
    if isinstance(node, ast.Call):
        func = ast.unparse(node.func)[:40]
        raise NotData(f"{_where(node)}: a call of {func}()")
    if isinstance(node, ast.Name):
        raise NotData(f"{_where(node)}: the name {node.id}")
    if isinstance(node, ast.Attribute):
        raise NotData(f"{_where(node)}: the attribute {ast.unparse(node)[:40]}")
    raise NotData(f"{_where(node)}: {type(node).__name__.lower()} expression")


def parse_config_data(text: str) -> dict:
    """The assignments of a config text as a dict, read without running anything; NotData otherwise."""
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise NotData(f"line {exc.lineno}: not valid Python ({exc.msg})") from None
    except (RecursionError, MemoryError, ValueError):
        raise NotData("nested too deeply to read") from None
    data: dict = {}
    try:
        for i, stmt in enumerate(tree.body):
            if i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                continue  # a docstring
            if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)):
                kind = {ast.Import: "an import", ast.ImportFrom: "an import"}.get(type(stmt), type(stmt).__name__)
                raise NotData(f"{_where(stmt)}: {kind} statement, not an assignment of a value")
            data[stmt.targets[0].id] = _value(stmt.value)
    except RecursionError:
        raise NotData("nested too deeply to read") from None
    if "_base_" in data:
        raise NotData("it inherits from _base_ files (a config to run, not a dumped one)")
    return data


def _types(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        if "type" in node:
            yield (f"{path}.type" if path else "type"), node["type"]
        for key, value in node.items():
            yield from _types(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _types(value, f"{path}.{i}" if path else str(i))


def _registered(name: Any, names: set) -> bool:
    if not isinstance(name, str):
        return False
    for sep in ("::", "."):
        scope, found, bare = name.partition(sep)
        if found:
            return scope in KNOWN_SCOPES and bare in names
    return name in names or name in _OP_TYPES


def check_config_data(data: dict) -> None:
    """NotData where reading ``data`` as a config would make MMEngine import or call something of its choosing."""
    imports = (data.get("custom_imports") or {}).get("imports", []) if isinstance(data.get("custom_imports"), dict) \
        else data.get("custom_imports")
    imports = [imports] if isinstance(imports, str) else list(imports or [])
    foreign = [str(m) for m in imports if m not in ALLOWED_IMPORTS]
    if foreign:
        raise NotData(f"custom_imports names {', '.join(foreign[:3])} (only {', '.join(ALLOWED_IMPORTS)} is imported "
                      "for a config that is not yours)")
    from fltool.engine.runner import registry_names

    names = registry_names()
    for path, name in _types(data):
        if not _registered(name, names):
            raise NotData(f"{path} = {str(name)[:60]!r} is not a registered type (MMEngine would import it)")


def _executed(text: str, filename: str) -> Any:
    """The config as MMEngine reads it, by running the text (trusted input only); no file is left behind."""
    from mmengine.config import Config

    with tempfile.TemporaryDirectory(prefix="fltool-cfg-") as tmp:
        path = Path(tmp) / Path(filename).name
        path.write_text(text)
        try:
            return Config.fromfile(str(path), lazy_import=False)
        except Exception as exc:  # noqa: BLE001 - whatever the trusted text raises is named in one line
            raise ConfigError(f"cannot load the config of {filename}: {type(exc).__name__}: {exc}") from None


def read_found_config(text: str, source: str, filename: str, trust: bool = False) -> Any:
    """The ``mmengine.Config`` of a config fltool found (see the module docstring): read as data, executed only
    with ``trust``. ``source`` names where the text came from (for the error); ``filename`` is the name the config
    gets (the Runner dumps it under that name)."""
    from mmengine.config import Config

    try:
        data = parse_config_data(text)
        check_config_data(data)
    except NotData as exc:
        if trust:
            return _executed(text, filename)
        raise ConfigError(f"the config {source} is not plain data ({exc.what}); fltool does not run code that comes "
                          "with a file you give it",
                          "give the config to use with --config, or rerun with --trust-checkpoint if you trust "
                          "where the file came from") from None
    try:
        return Config(data, cfg_text=text, filename=filename)
    except KeyError as exc:  # a reserved key (filename, text, pretty_text) used as a variable name
        raise ConfigError(f"the config {source} uses a reserved name: {exc}") from None


def read_found_config_file(path: Path, trust: bool = False) -> Any:
    """A config file fltool found beside a checkpoint or model, read as data (see :func:`read_found_config`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config {path}: {exc}", "give the config with --config") from None
    return read_found_config(text, f"{path.name} found beside the model", str(path), trust)


# ------------------------------------------------------------------------------------------------ writing
def _split_templates(value: str) -> list:
    """``value`` in pieces none of which holds ``{{`` (cut between the two braces)."""
    pieces, start = [], 0
    for i in range(1, len(value)):
        if value[i - 1] == "{" and value[i] == "{":
            pieces.append(value[start:i])
            start = i
    pieces.append(value[start:])
    return pieces


def escape_templates(text: str) -> str:
    """Config text in which no string literal holds ``{{``, so that ``Config.fromfile`` reads every string back
    unchanged: a literal with ``{{`` becomes an implicit concatenation, ``'a{{b'`` -> ``('a{' '{b')``, the same
    value. MMEngine rewrites ``{{ fileDirname }}``, ``{{ $ENV }}`` and ``{{ _base_.x }}`` in the text it reads."""
    if "{{" not in text:
        return text
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    edits = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type != tokenize.STRING or "{{" not in tok.string:
            continue
        value = ast.literal_eval(tok.string)
        if not isinstance(value, str):
            continue
        start = offsets[tok.start[0] - 1] + tok.start[1]
        end = offsets[tok.end[0] - 1] + tok.end[1]
        edits.append((start, end, "(" + " ".join(repr(p) for p in _split_templates(value)) + ")"))
    for start, end, new in reversed(edits):
        text = text[:start] + new + text[end:]
    return text


def config_text(cfg: Any) -> str:
    """``cfg.pretty_text`` as a file that MMEngine reads back to the same values (:func:`escape_templates`)."""
    return escape_templates(cfg.pretty_text)


def config_filename(checkpoint: Path) -> str:
    """The name a config stored in ``checkpoint`` goes by: ``<checkpoint stem>_config.py`` beside it."""
    return str(Path(checkpoint).parent / f"{Path(checkpoint).stem}_config.py")


def stored_config_text(ckpt: Any) -> Optional[str]:
    """The config text MMEngine stored in a loaded checkpoint's ``meta['cfg']``, or None."""
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    text = meta.get("cfg") if isinstance(meta, dict) else None
    return text if isinstance(text, str) and text.strip() else None
