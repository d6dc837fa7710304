"""``python -m bench``: run every benchmark on throwaway servers and write docs/benchmarks.md.

    python -m bench [--out docs/benchmarks.md] [--img docs/img] [--smoke] [--backends sqlite,mysql]
                    [--save FILE] [--load FILE]

``--smoke`` runs each benchmark on a tiny size (what tests/test_bench_smoke.py does);
``--save`` keeps the raw results (a pickle) and ``--load`` writes the page from such a file
without measuring again.

Before measuring, the run compiles the bytecode of ``gomaster`` and ``bench`` once, as installing
a package does: where ``PYTHONDONTWRITEBYTECODE`` is set (it is on the development machine),
Python never writes a ``.pyc`` itself, so each process that imports a module without one (a
target's process loading its module at each start) would compile that module again.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import pickle
import sys
from pathlib import Path

import bench
import gomaster
from bench import report, suite


def compile_bytecode() -> None:
    """Write the ``.pyc`` of every module of ``gomaster`` and ``bench`` that lacks a fresh one."""
    for directory in (*gomaster.__path__, *bench.__path__):
        compileall.compile_dir(directory, quiet=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--img", type=Path, default=Path("docs/img"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, SQLite only (seconds)")
    parser.add_argument("--backends", help="comma-separated subset of the backends to run")
    parser.add_argument("--save", type=Path, help="also keep the raw results here")
    parser.add_argument("--load", type=Path, help="write the page from saved results instead")
    args = parser.parse_args(argv)
    if args.load is not None:
        results: suite.Results = pickle.loads(args.load.read_bytes())
    else:
        compile_bytecode()
        plan = suite.SMOKE if args.smoke else suite.FULL
        if args.backends:
            plan = dataclasses.replace(plan, backends=tuple(args.backends.split(",")))
        results = suite.run(plan, say=lambda text: print(text, file=sys.stderr, flush=True))
        if args.save is not None:
            args.save.parent.mkdir(parents=True, exist_ok=True)
            args.save.write_bytes(pickle.dumps(results))
    report.write(results, args.out, args.img)
    print(f"wrote {args.out} and plots in {args.img}", file=sys.stderr)


if __name__ == "__main__":
    main()
