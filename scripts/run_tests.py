"""Run pytest and leave with its exit code, skipping interpreter teardown.

The Temporal SDK's Rust core can abort the interpreter at exit after every test passed
(sdk-python issue 300); `os._exit` keeps pytest's verdict.
"""

import os
import sys

import pytest

if __name__ == "__main__":
    code = pytest.main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))
