"""Loading a module that may have a compiled (mypyc) build, never using the build when it is stale.

``setup.py`` compiles a few hot modules with mypyc when a C compiler is available. Python's import system
prefers an extension module to the ``.py`` beside it, so an edited source would silently keep running the
old compiled code. :func:`load_fresh` prevents that: the build stamps the sha256 of the exact source bytes
it compiled into the module's ``SOURCE_SHA256``; on import, when the ``.py`` beside it hashes differently,
the compiled module is dropped and the ``.py`` is loaded explicitly, with one warning naming the rebuild
command. A missing build (no C compiler at install time) warns once too: everything works, only slower.

Standard library only: ``setup.py`` uses :func:`source_sha256` from here at build time, before any
dependency is installed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import logging
import sys
from pathlib import Path
from types import ModuleType
from typing import Final

log = logging.getLogger(__name__)

HASH_ATTRIBUTE: Final = "SOURCE_SHA256"
"""The module-level string the build stamps (empty in the source itself)."""
loaded: dict[str, str] = {}
"""What :func:`load_fresh` chose per module name: ``compiled``, ``source: no build`` or ``source: stale build``."""
REBUILD_COMMAND: Final = "pip install --no-deps -e . (make test does it when a compiled source changed)"


def source_sha256(source: bytes) -> str:
    """The hash the build stamps and :func:`load_fresh` compares: sha256 of the source file's bytes, hex."""
    return hashlib.sha256(source).hexdigest()


def is_compiled(module: ModuleType) -> bool:
    """Whether the module was loaded from an extension (a compiled build) rather than from source."""
    origin = getattr(module, "__file__", None) or ""
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def load_fresh(name: str) -> ModuleType:
    """Import ``name``: its compiled build when that was built from the current source, else the ``.py``.

    Edge cases: a build without a ``.py`` beside it (installed without sources) is trusted; a build without
    the stamp counts as stale. The fallback replaces the entry in ``sys.modules``, so later imports of
    ``name`` get the same (source) module; later calls return what the first one chose, without warning
    again.
    """
    if name in loaded:  # decided already (several modules use one core)
        return sys.modules[name]
    module = importlib.import_module(name)
    if not is_compiled(module):
        loaded[name] = "source: no build"
        log.warning("%s: no compiled build, running the pure-Python source (slower); build: %s", name, REBUILD_COMMAND)
        return module
    source = source_path(module)
    built_from = getattr(module, HASH_ATTRIBUTE, "")
    if not source.is_file() or built_from == source_sha256(source.read_bytes()):
        loaded[name] = "compiled"
        return module
    loaded[name] = "source: stale build"
    log.warning(
        "%s: the compiled build is stale (%s changed since it was built); running the pure-Python source "
        "instead (slower). Rebuild: %s",
        name,
        source,
        REBUILD_COMMAND,
    )
    sys.modules[name] = fallback = load_source(name, source)
    return fallback


def source_path(module: ModuleType) -> Path:
    """The ``.py`` beside a module's file (for a compiled module: the source it should have been built from)."""
    name = module.__name__.rpartition(".")[2]
    return Path(module.__file__ or "").parent / f"{name}.py"


def load_source(name: str, path: Path) -> ModuleType:
    """Execute the ``.py`` at ``path`` as a fresh module named ``name``, bypassing any compiled build.

    The module is not registered in ``sys.modules`` (the caller decides). Raises what executing it raises.
    """
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a source loader
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
