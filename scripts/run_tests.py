"""Run pytest in a child process and leave with its verdict.

The Temporal SDK's Rust core can abort the interpreter at exit after every test passed (sdk-python issue
300): the child leaves with `os._exit` as soon as pytest's exit code is known, so the verdict is pytest's.
"""

import os
import subprocess
import sys

import pytest


def main(args: list[str]) -> int:
    """Run the suite once in a child process; its exit code is pytest's."""
    return subprocess.run([sys.executable, __file__, "--child", *args]).returncode


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        exit_code = pytest.main(sys.argv[2:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(exit_code))
    sys.exit(main(sys.argv[1:]))
