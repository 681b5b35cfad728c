"""Build hook: compile the hot modules with mypyc when a C compiler is there, else install pure Python.

Everything else about the package is in pyproject.toml. ``pip install -e .`` (and ``make test``, whose
install stamp runs it) builds the extension in place, next to its source; ``pip install .`` puts it in
the wheel. The build compiles a copy of each source with ``SOURCE_SHA256`` set to the sha256 of the
original file, so that ``shared.compiled.load_fresh`` can tell when the ``.py`` has changed since and fall
back to it. Without mypyc or a working compiler the install still succeeds, with one warning, and the
modules run as Python (about 4x slower; see bench/analysis.py).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path
from typing import Any, cast

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
COMPILED = ["shared/analysis_core.py"]
"""The modules compiled with mypyc (relative to the project root): only what the profiles show matters."""
STAMP_LINE = 'SOURCE_SHA256: Final = ""'
"""The line in each compiled source that the build replaces with the source's hash."""
BUILD_DIR = Path("build") / "mypyc"


def stamped_copies(sources: list[str], into: Path) -> list[str]:
    """Copies of ``sources`` under ``into`` (same package layout), each stamped with its source's sha256.

    Raises ValueError when a source lacks :data:`STAMP_LINE` (the loader could never trust its build).
    """
    if into.exists():
        shutil.rmtree(into)
    copies = []
    for source in sources:
        text = (ROOT / source).read_bytes()
        digest = hashlib.sha256(text).hexdigest()  # as shared.compiled.source_sha256
        decoded = text.decode()
        if decoded.count(STAMP_LINE + "\n") != 1:
            raise ValueError(f"{source} must hold the line {STAMP_LINE!r} exactly once")
        copy = into / source
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(decoded.replace(STAMP_LINE, f'SOURCE_SHA256: Final = "{digest}"'))
        package = Path(source).parent
        while str(package) not in ("", "."):  # the packages above it, empty, so that the module keeps its name
            (into / package / "__init__.py").touch()
            package = package.parent
        copies.append(str(copy))
    return copies


class BuildMypyc(build_ext):
    """``build_ext`` that compiles :data:`COMPILED` with mypyc, or warns once and builds nothing."""

    def finalize_options(self) -> None:
        try:
            from mypyc.build import mypycify

            copies = stamped_copies(COMPILED, BUILD_DIR / "src")
            # separate: each module's runtime library next to it (not one at the top level)
            extensions = mypycify(copies, target_dir=str(BUILD_DIR / "c"), separate=True)
            self.distribution.ext_modules = cast(Any, extensions)  # the stubs name one class two ways
        except (Exception, SystemExit) as error:  # mypyc exits on a type error; any failure only costs speed
            self.distribution.ext_modules = []
            self.skip(error)
        super().finalize_options()

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # a missing or failing C compiler only costs speed
            self.skip(error)

    def skip(self, error: BaseException) -> None:
        """Build nothing, remove any earlier build of the modules (it must not shadow them), warn once."""
        self.extensions = []
        for module in COMPILED:
            for built in (ROOT / module).parent.glob(Path(module).stem + "*" + ext_suffix()):
                built.unlink()
        names = ", ".join(COMPILED)
        print(
            f"WARNING: kafka-tracing: could not compile {names} with mypyc ({type(error).__name__}: "
            f"{str(error)[:300]}); "
            "installing them as pure Python, which works but is slower",
            file=sys.stderr,
        )


def ext_suffix() -> str:
    import sysconfig

    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def placeholder_extensions() -> list[Extension]:
    """One Extension per compiled module, so that setuptools runs build_ext (BuildMypyc replaces them) and
    knows that the package is platform-specific."""
    return [Extension(module[: -len(".py")].replace("/", "."), sources=[]) for module in COMPILED]


setup(cmdclass={"build_ext": BuildMypyc}, ext_modules=placeholder_extensions())
