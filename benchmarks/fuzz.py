"""The whole fuzzing corpus (``tests/fuzz_corpus.py``) through ``pdmfuse fuse``: every damaged
input must end within the time bound with its outputs or one sentence (exit 2, nothing written).

Prints the seed, the counts by input and outcome, the time per run (median, 99th percentile,
largest) and every finding (a traceback, another exit status, stray output, leftovers, a run
past the bound, a worker that died); ``--out FILE.json`` keeps every case's result.

    nice -n 15 python benchmarks/fuzz.py                    # seed 1, 2000 cases, 60 s bound
    python benchmarks/fuzz.py --seed 7 --count 500 --bound 30
    python benchmarks/fuzz.py --cases 8,1207                # re-run single cases
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import fuzz_corpus  # noqa: E402


def kind(message: str) -> str:
    """A refusal with its file names and numbers left out, to count refusals by kind."""
    message = re.sub(r"\S*/in/\S*", "FILE", message)
    message = re.sub(r"\(\d+(, \d+)*\)", "(…)", message)
    return re.sub(r"\d+×\d+(×\d+)? \w+", "H×W TYPE", message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--bound", type=float, default=60.0, help="seconds a run may take")
    parser.add_argument("--cases", help="comma-separated case numbers instead of 0..count-1")
    parser.add_argument("--out", type=Path, help="every case's result, as JSON")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()), flush=True)
    cases = [int(c) for c in args.cases.split(",")] if args.cases else range(args.count)
    runner = fuzz_corpus.Runner(args.seed, args.bound)
    results = []
    began = time.perf_counter()
    try:
        for number, index in enumerate(cases, 1):
            results.append(runner.run(index))
            if results[-1]["outcome"] == "finding":
                print(f"finding: {json.dumps(results[-1])}", flush=True)
            if number % 100 == 0:
                print(f"{number} cases, {time.perf_counter() - began:.0f} s", flush=True)
    finally:
        runner.close()
    total = time.perf_counter() - began
    counts = collections.Counter((r["original"], r["outcome"]) for r in results)
    outcomes = ("fused", "refused", "finding")
    print(f"\nseed {args.seed}, {len(results)} cases, bound {args.bound:g} s, {total:.0f} s in all")
    print("| input | " + " | ".join(outcomes) + " |\n|---|" + "---|" * len(outcomes))
    for original in fuzz_corpus.ORIGINALS:
        row = [str(counts[(original, o)]) for o in outcomes]
        if any(n != "0" for n in row):
            print(f"| {original} | " + " | ".join(row) + " |")
    print("| all | " + " | ".join(str(sum(counts[(g, o)] for g in fuzz_corpus.ORIGINALS))
                                  for o in outcomes) + " |")  # fmt: skip
    seconds = np.array([r["seconds"] for r in results])
    print(f"seconds per run: median {np.median(seconds):.2f}, 99th percentile "
          f"{np.percentile(seconds, 99):.2f}, largest {seconds.max():.2f}")  # fmt: skip
    messages = collections.Counter(kind(r["why"]) for r in results if r["outcome"] == "refused")
    print(f"{len(messages)} kinds of refusal:")
    for message, n in messages.most_common():
        print(f"  {n:5d}  {message[:160]}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
