"""
Tests that pin the public API: every exported name exists, is documented and
is the object its private module defines.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

import txstateproto

PUBLIC_MODULES = ["txstateproto", "txstateproto.testing", "txstateproto.tap"]


def _exported(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_names_exist(module_name: str) -> None:
    """Every name in __all__ is an attribute of its module."""
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_names_have_docstrings(module_name: str) -> None:
    """Every exported class and function has a docstring of its own."""
    undocumented = [
        name
        for name, obj in _exported(module_name)
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and not (obj.__doc__ or "").strip()
    ]
    assert undocumented == []


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_methods_have_docstrings(module_name: str) -> None:
    """Every public method of an exported class has a docstring."""
    undocumented = []
    for name, obj in _exported(module_name):
        if not inspect.isclass(obj):
            continue
        for attr, value in vars(obj).items():
            if attr.startswith("_") or not callable(value):
                continue
            if not (getattr(value, "__doc__", None) or "").strip():
                undocumented.append(f"{name}.{attr}")
    assert undocumented == []


def test_exports_are_the_private_objects() -> None:
    """The package re-exports its private modules' objects, not copies."""
    from txstateproto import _coroutine, _errors, _protocol, _tls

    for name in txstateproto.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(txstateproto, name)
        homes = [m for m in (_coroutine, _errors, _protocol, _tls) if name in m.__all__]
        assert len(homes) == 1, name
        assert getattr(homes[0], name) is obj


def test_exported_names_say_public_module() -> None:
    """Exported classes and functions report the public module path."""
    wrong = [
        name
        for name, obj in _exported("txstateproto")
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and obj.__module__ != "txstateproto"
    ]
    assert wrong == []


def test_no_camel_case_aliases() -> None:
    """Our API has one spelling per name: no camelCase twins of snake_case."""
    for name, obj in _exported("txstateproto"):
        if not inspect.isclass(obj):
            continue
        names = set(vars(obj))
        for attr in names:
            if "_" in attr.strip("_"):
                parts = attr.split("_")
                camel = parts[0] + "".join(p.title() for p in parts[1:])
                assert camel not in names, f"{name}.{camel} duplicates {attr}"
