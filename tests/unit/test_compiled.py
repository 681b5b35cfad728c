"""The mypyc build of the analysis core: used in CI, and never used once its source has changed.

The stale-build test runs a copy of the package in a temporary directory, in a fresh interpreter: the
compiled files as built, next to a copy of the source that is first left as it is (the build must load)
and then edited (the source must load, with a warning naming the rebuild command).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import shared
from shared import analysis, compiled
from tests.prerequisites import IN_CI, missing

CORE = "shared.analysis_core"
PACKAGE = Path(shared.__file__).parent
BUILT = sorted(PACKAGE.glob("analysis_core*.so"))


def require_build() -> None:
    """Skip outside CI when nothing is built (no C compiler at install time); in CI that is a failure."""
    if not BUILT:
        missing("no compiled build of shared/analysis_core.py: the install did not build it (no C compiler?)")


def test_ci_runs_the_compiled_core_built_from_the_current_source() -> None:
    if not IN_CI and compiled.loaded.get(CORE) != "compiled":
        pytest.skip(f"not CI, and the analysis runs from source here ({compiled.loaded.get(CORE)})")
    module = sys.modules[CORE]
    assert compiled.loaded[CORE] == "compiled"
    assert compiled.is_compiled(module)
    built_from = getattr(module, compiled.HASH_ATTRIBUTE)
    assert built_from == compiled.source_sha256((PACKAGE / "analysis_core.py").read_bytes())
    assert analysis.analyze("t", []).span_count == 0  # and it is the one shared.analysis uses


PROBE = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
from shared import compiled
module = compiled.load_fresh("shared.analysis_core")
print(compiled.loaded["shared.analysis_core"], module.__file__, getattr(module, "EDITED", False))
assert sys.modules["shared.analysis_core"] is module
"""


def probe(root: Path) -> tuple[str, str]:
    """Load the core the way shared.analysis does, in a fresh interpreter whose ``shared`` is ``root``'s."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), result.stderr


def test_an_edited_source_is_detected_as_stale_and_the_source_runs(tmp_path: Path) -> None:
    require_build()
    package = tmp_path / "shared"
    package.mkdir()
    for name in ("__init__.py", "compiled.py", "analysis_core.py", *(path.name for path in BUILT)):
        shutil.copy2(PACKAGE / name, package / name)

    out, err = probe(tmp_path)
    assert out.startswith("compiled ") and out.endswith(" False"), (out, err)
    assert str(package) in out  # the copy's build, not the installed one

    source = package / "analysis_core.py"
    source.write_text(source.read_text() + "\nEDITED = True\n")
    out, err = probe(tmp_path)
    assert out == f"source: stale build {source} True", (out, err)
    assert "stale" in err and compiled.REBUILD_COMMAND in err and str(source) in err


def test_a_build_without_its_source_next_to_it_is_trusted(tmp_path: Path) -> None:
    require_build()
    package = tmp_path / "shared"
    package.mkdir()
    for name in ("__init__.py", "compiled.py", *(path.name for path in BUILT)):
        shutil.copy2(PACKAGE / name, package / name)
    out, _ = probe(tmp_path)
    assert out.startswith("compiled "), out


def test_without_a_build_the_source_runs_and_says_so(tmp_path: Path) -> None:
    package = tmp_path / "shared"
    package.mkdir()
    for name in ("__init__.py", "compiled.py", "analysis_core.py"):
        shutil.copy2(PACKAGE / name, package / name)
    out, err = probe(tmp_path)
    assert out == f"source: no build {package / 'analysis_core.py'} False", (out, err)
    assert err.count("no compiled build") == 1, err


def setup_constant(name: str) -> object:
    """A literal assigned at the top of setup.py (which cannot be imported: it runs the build)."""
    tree = ast.parse((PACKAGE.parent / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no {name}")


def test_every_compiled_source_can_be_stamped_and_the_makefile_rebuilds_it() -> None:
    sources = setup_constant("COMPILED")
    stamp = setup_constant("STAMP_LINE")
    assert isinstance(sources, list) and sources and isinstance(stamp, str)
    for source in sources:
        assert (PACKAGE.parent / source).read_text().count(stamp + "\n") == 1, source
    makefile = (PACKAGE.parent / "Makefile").read_text().splitlines()
    listed = next(line for line in makefile if line.startswith("COMPILED :="))
    assert listed.split(":=")[1].split() == sources
    assert any(line.startswith("$(STAMP):") and "$(COMPILED)" in line and "setup.py" in line for line in makefile)
