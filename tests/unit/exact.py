"""Exact equality for the equivalence tests: values, types, float bits and dict order."""

from __future__ import annotations

from typing import Any

import msgspec


def assert_exactly_equal(new: Any, old: Any, where: str = "result") -> None:
    """Deep equality that also compares types, float bits and dict order (Structs by field, by class name)."""
    if isinstance(old, msgspec.Struct):
        assert type(new).__name__ == type(old).__name__, where
        assert isinstance(new, msgspec.Struct), where
        for field in old.__struct_fields__:
            assert_exactly_equal(getattr(new, field), getattr(old, field), f"{where}.{field}")
        assert new.__struct_fields__ == old.__struct_fields__, where
    elif isinstance(old, dict):
        assert type(new) is dict, where
        assert list(new) == list(old), f"{where}: keys or their order differ"
        for key in old:
            assert_exactly_equal(new[key], old[key], f"{where}[{key!r}]")
    elif isinstance(old, list | tuple):
        assert type(new) is type(old), f"{where}: {type(new).__name__} != {type(old).__name__}"
        assert len(new) == len(old), f"{where}: lengths {len(new)} != {len(old)}"
        for index, (a, b) in enumerate(zip(new, old, strict=True)):
            assert_exactly_equal(a, b, f"{where}[{index}]")
    else:
        assert type(new) is type(old), f"{where}: {type(new).__name__} != {type(old).__name__}"
        assert repr(new) == repr(old), f"{where}: {new!r} != {old!r}"
