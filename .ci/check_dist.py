"""Build the sdist and the wheel, run ``twine check``, and assert what each one holds.

    python .ci/check_dist.py        (from the repository root, with build and twine installed)

The sdist ships the tests and everything they need (MANIFEST.in): its files are exactly the files git
tracks, less the CI scripts and .gitignore; its test suite is collected from the unpacked sdist (so
every module and the settings it imports came with it) and a few fast tests run there. The wheel
holds the ``epochauth`` package only, with ``py.typed``, templates and migrations, and the license.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Tracked files that stay out of the sdist: they drive CI and git, not the package or its tests.
NOT_SHIPPED = (".ci/", ".gitignore")
#: Files setuptools writes into every sdist.
GENERATED = ("PKG-INFO", "setup.cfg")


def run(*args: str | Path, cwd: Path = ROOT) -> None:
    print("+", " ".join(map(str, args)), flush=True)
    subprocess.run([str(a) for a in args], cwd=cwd, check=True)


def tracked_files() -> set[str]:
    out = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    return {name for name in out.splitlines() if not name.startswith(NOT_SHIPPED)}


def sdist_files(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        names = [m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()]
    return {n for n in names if n not in GENERATED and ".egg-info/" not in n}


def check_sdist(sdist: Path, expected: set[str]) -> list[str]:
    shipped = sdist_files(sdist)
    problems = [f"sdist lacks {name}" for name in sorted(expected - shipped)]
    problems += [f"sdist holds untracked {name}" for name in sorted(shipped - expected)]
    return problems


def check_wheel(wheel: Path, expected: set[str]) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    package = {n for n in expected if n.startswith("epochauth/")}
    problems = [f"wheel lacks {name}" for name in sorted(package - names)]
    problems += [
        f"wheel holds {name}, outside the package"
        for name in sorted(names)
        if not name.startswith(("epochauth/", "django_epochauth-"))
    ]
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("wheel lacks its LICENSE")
    if "epochauth/py.typed" not in names:
        problems.append("wheel lacks epochauth/py.typed")
    return problems


#: Tests run inside the unpacked sdist (fast ones that need no service): the docs build from it.
SDIST_TESTS = ("tests/test_docs.py", "tests/test_structure.py")


def test_sdist(sdist: Path, workdir: Path) -> None:
    """Collect the suite inside the unpacked sdist (a missing module, fixture or settings file fails),
    then run a few of its tests there."""
    with tarfile.open(sdist) as archive:
        archive.extractall(workdir, filter="data")
    (unpacked,) = workdir.iterdir()
    pytest = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider")
    run(*pytest, "-qq", "--collect-only", cwd=unpacked)
    run(*pytest, "-q", *SDIST_TESTS, cwd=unpacked)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
        (sdist,) = dist.glob("*.tar.gz")
        (wheel,) = dist.glob("*.whl")
        run(sys.executable, "-m", "twine", "check", "--strict", sdist, wheel)
        expected = tracked_files()
        problems = check_sdist(sdist, expected) + check_wheel(wheel, expected)
        for problem in problems:
            print(f"check_dist: {problem}", file=sys.stderr)
        if problems:
            return 1
        test_sdist(sdist, Path(tmp) / "unpacked")
    print(
        f"check_dist: {sdist.name} holds the {len(expected)} tracked files; {wheel.name} the package"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
