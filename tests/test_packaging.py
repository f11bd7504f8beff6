"""Packaging as a user meets it: the README's editable install in a fresh virtualenv,
then ``mypy --strict`` on the user's own code, outside the repository; and the wheel
that ``pip install .`` builds (typed, licensed, built without deprecation warnings)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

USER_CODE = """\
from minibatch_rx import Message, stream

readings = stream('user.readings', url='memory://user')
seq: int = readings.append({'temp': 21})
latest: list[Message] = list(readings.read())
print(seq, latest[0].data)
"""

# The same code with a wrong annotation: mypy must see the package's real types to catch it.
USER_TYPE_ERROR = USER_CODE.replace("seq: int =", "seq: str =")


def run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``args`` without this session's PYTHONPATH, so only the install under test counts."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (
        f"{result.args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout + result.stderr


def test_the_readme_set_up_commands_use_separate_ignored_virtualenvs() -> None:
    first_screen = (REPO / "README.md").read_text().split("## Contents")[0]
    commands = re.findall(r"```bash\n(.*?)```", first_screen, flags=re.S)
    venvs = [re.search(r"python3 -m venv (\S+) && \. \1/bin/activate", c) for c in commands]

    names = [match.group(1) for match in venvs if match]
    assert len(commands) == len(names) == 2, commands  # the quickstart's and the tests'
    assert len(set(names)) == 2, f"both set-up commands create {names[0]}: the second replaces the first"
    patterns = [line.strip().rstrip("/") for line in (REPO / ".gitignore").read_text().splitlines()]
    for name in names:
        assert any(fnmatch(name, pattern) for pattern in patterns if pattern), f"{name}/ is not in .gitignore"


@pytest.fixture(scope="module")
def editable_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the README's editable install of this repository."""
    root = tmp_path_factory.mktemp("editable")
    checked(run([sys.executable, "-m", "venv", str(root / "venv")], cwd=root))
    python = root / "venv" / "bin" / "python"
    checked(run([str(python), "-m", "pip", "install", "--quiet", "-e", str(REPO)], cwd=root))
    return python


def mypy_strict(python: Path, code: str, where: Path) -> subprocess.CompletedProcess[str]:
    """``mypy --strict`` on ``code`` saved in ``where`` (outside the repository), resolving
    imports the way ``python`` does (mypy asks that interpreter for its search path)."""
    where.mkdir()
    (where / "app.py").write_text(code)
    return run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--python-executable", str(python), "app.py"],
        cwd=where,
    )


@pytest.mark.slow
def test_users_strict_type_check_finds_the_editable_install(editable_venv: Path, tmp_path: Path) -> None:
    result = mypy_strict(editable_venv, USER_CODE, tmp_path / "project")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found in 1 source file" in result.stdout
    # And the program runs from there, importing the same install.
    assert checked(run([str(editable_venv), "app.py"], cwd=tmp_path / "project")) == "1 {'temp': 21}\n"


@pytest.mark.slow
def test_users_type_check_sees_the_real_types_not_any(editable_venv: Path, tmp_path: Path) -> None:
    result = mypy_strict(editable_venv, USER_TYPE_ERROR, tmp_path / "project")

    assert result.returncode == 1
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in (
        result.stdout
    )
    assert "import-not-found" not in result.stdout


@pytest.mark.slow
def test_the_wheel_ships_py_typed_with_an_spdx_license_and_builds_without_warnings(tmp_path: Path) -> None:
    output = checked(run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", str(REPO), "-w", str(tmp_path)],
        cwd=tmp_path,
    ))

    assert "deprecated" not in output.lower()  # e.g. setuptools on a `project.license` table
    (wheel,) = tmp_path.glob("minibatch_rx-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "minibatch_rx/py.typed" in names
    assert "minibatch_rx/testing.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "benchmarks/"))]
    assert "License-Expression: MIT" in metadata
