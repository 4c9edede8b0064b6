"""A study's code fingerprint: a hash of the code that produces its results, so a cached run is never stale.

The fingerprint covers the study's module and every ``overparam`` module whose code it uses, directly or through
others, found by reading ``import`` statements (those inside functions too) without importing anything. A name
imported from a package is followed to the module that defines it (``from overparam.train import train`` counts
``overparam/train/loop.py``, not every module the package re-exports). Each module counts by its syntax tree
without docstrings: editing a comment or a docstring keeps cached runs, any change to what the code does gives
new run ids. Third-party libraries are not covered (their versions belong to the environment).
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

ROOT_PACKAGE = "overparam"
_ROOT = Path(__file__).resolve().parents[1]   # .../overparam


def source_path(module: str) -> Path | None:
    """The file of an overparam module or package, or None."""
    parts = module.split(".")
    if parts[0] != ROOT_PACKAGE:
        return None
    base = _ROOT.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=None)
def _tree(module: str) -> ast.Module | None:
    path = source_path(module)
    return ast.parse(path.read_text(), filename=str(path)) if path is not None else None


def _package_of(module: str) -> str:
    path = source_path(module)
    return module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = _package_of(module).split(".")
    return ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))


@lru_cache(maxsize=None)
def _bindings(module: str) -> dict[str, tuple[str, str | None]]:
    """Top-level names a module imports: name -> (source module, name there or None for a module)."""
    tree = _tree(module)
    out: dict[str, tuple[str, str | None]] = {}
    for node in (tree.body if tree is not None else []):
        if isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            for alias in node.names:
                out[alias.asname or alias.name] = (base, alias.name)
    return out


def _defining_modules(module: str, name: str, depth: int = 0) -> set[str]:
    """Where ``name`` imported from ``module`` is defined: a submodule, a re-export's origin, or ``module``."""
    if source_path(f"{module}.{name}") is not None:
        return {f"{module}.{name}"}
    bound = _bindings(module).get(name)
    if bound is not None and bound[0].split(".")[0] == ROOT_PACKAGE and depth < 20:
        return _defining_modules(bound[0], bound[1], depth + 1)
    return {module} if source_path(module) is not None else set()


@lru_cache(maxsize=None)
def imported_modules(module: str) -> frozenset[str]:
    """The overparam modules whose code ``module`` uses through its imports."""
    tree = _tree(module)
    found: set[str] = set()
    for node in (ast.walk(tree) if tree is not None else ()):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if source_path(a.name) is not None}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            if base.split(".")[0] != ROOT_PACKAGE:
                continue
            for alias in node.names:
                found |= {base} if alias.name == "*" else _defining_modules(base, alias.name)
    return frozenset(found - {module})


def closure(module: str) -> list[str]:
    """``module`` and every overparam module reachable from it, sorted."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(imported_modules(name) - seen)
    return sorted(seen)


def _without_docstrings(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


@lru_cache(maxsize=None)
def module_hash(module: str) -> str:
    path = source_path(module)
    if path is None:
        return ""
    tree = _without_docstrings(ast.parse(path.read_text()))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


def fingerprint(module: str) -> str:
    """A short hash of ``module`` and of the overparam code it uses."""
    digest = hashlib.sha256()
    for name in closure(module):
        digest.update(name.encode() + b"\0" + module_hash(name).encode() + b"\0")
    return digest.hexdigest()[:12]
