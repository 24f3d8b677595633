"""Run pytest in a child process and leave with its verdict.

Two interpreter faults are kept from turning a passing run into a failing one:
- The Temporal SDK's Rust core can abort the interpreter at exit after every test passed (sdk-python
  issue 300): the child leaves with `os._exit` as soon as pytest's exit code is known.
- CPython 3.11.7 (this machine's) can raise `SystemError: AST constructor recursion depth mismatch`
  when two threads build ASTs at once (cpython gh-106905, fixed in later 3.11 releases); pytest then
  stops with an internal error (exit code 3) although no test failed. The suite is run once more
  then, and only then: a test failure (exit code 1) is never retried.
"""

import os
import subprocess
import sys

import pytest

INTERNAL_ERROR = int(pytest.ExitCode.INTERNAL_ERROR)


def run_child(args: list[str]) -> int:
    return subprocess.run([sys.executable, __file__, "--child", *args]).returncode


def main(args: list[str]) -> int:
    code = run_child(args)
    if code == INTERNAL_ERROR:
        print("run_tests: pytest stopped with an internal error (see above); running the suite once more", flush=True)
        code = run_child(args)
    return code


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        exit_code = pytest.main(sys.argv[2:])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(exit_code))
    sys.exit(main(sys.argv[1:]))
