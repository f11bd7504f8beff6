"""``@streaming``'s default consumer name does not depend on how its file is
run: ``python jobs.py`` and ``import jobs`` keep the same position."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from minibatch_rx import Stream
from minibatch_rx.compat import default_consumer

pytestmark = pytest.mark.timeout(120)

JOBS = '''
import os
from minibatch_rx import streaming

@streaming("jobs", size=1, keep=True, url=os.environ["JOBS_URL"], max_windows=1)
def process(window):
    print(window.data)
'''


def run(args: list[str], cwd: Path, url: str) -> None:
    env = {**os.environ, "JOBS_URL": url}
    subprocess.run([sys.executable, *args], cwd=cwd, env=env, check=True, timeout=60,
                   capture_output=True)


def test_a_script_run_and_an_import_share_one_position(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'jobs.db'}"
    Stream.get_or_create("jobs", url=url).extend([{"n": 1}, {"n": 2}])
    (tmp_path / "jobs.py").write_text(JOBS)

    run(["jobs.py"], tmp_path, url)  # __name__ == '__main__'
    run(["-c", "import jobs"], tmp_path, url)  # __name__ == 'jobs'

    # One consumer, so the second run continued where the first stopped.
    assert Stream("jobs", url=url).positions() == {"jobs.process": 2}


def test_the_default_name_is_the_file_stem_and_qualified_name() -> None:
    def inner() -> None:
        """Nested: the qualified name says where."""

    assert default_consumer(inner) == (
        "test_compat_consumer_name.test_the_default_name_is_the_file_stem_and_qualified_name"
        ".<locals>.inner"
    )
    assert default_consumer(len) == "builtins.len"  # no source file: the module name
