"""Print the table of a stored run and draw its plot again: `python -m bench.render RESULT.json [--png OUT.png]`."""

import argparse
import json
from pathlib import Path

from bench import report


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    p.add_argument("result", type=Path)
    p.add_argument("--png", type=Path, help="where to draw the plot (default: next to the JSON)")
    a = p.parse_args()
    r = json.loads(a.result.read_text())
    r["targets"] = report.targets(r)
    print(report.table(r))
    report.plot(r, a.png or a.result.with_suffix(".png"))


if __name__ == "__main__":
    main()
