"""The package's public names: loaded lazily (see __init__.py), so the table of where each is
defined, the imports type checkers read and __all__ must agree, or a name would be missing
at run time or untyped."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import boruta_client
import pytest


def type_checking_imports() -> dict[str, str]:
    """Name to module of the imports in __init__.py's `if TYPE_CHECKING:` block."""
    tree = ast.parse(Path(boruta_client.__file__).read_text())
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    )
    return {
        alias.name: (node.module or "").removeprefix("boruta_client.")
        for node in block.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }


def test_the_lazy_table_the_typed_imports_and_all_name_the_same() -> None:
    assert type_checking_imports() == boruta_client._MODULE_OF
    assert sorted(boruta_client._MODULE_OF) == sorted(boruta_client.__all__)


@pytest.mark.parametrize("name", boruta_client.__all__)
def test_every_public_name_is_its_modules_object(name: str) -> None:
    module = importlib.import_module(f"boruta_client.{boruta_client._MODULE_OF[name]}")
    assert getattr(boruta_client, name) is getattr(module, name)
    assert name in dir(boruta_client)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Clinet'"):
        _ = boruta_client.Clinet  # type: ignore[attr-defined]
    with pytest.raises(ImportError):
        from boruta_client import Clinet  # type: ignore[attr-defined]  # noqa: F401
