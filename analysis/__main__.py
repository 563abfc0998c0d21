"""python -m analysis DIR/STUDY [--out OUT] [--allow-partial] [--seed S] [--resamples B] [--no-figures]"""

from __future__ import annotations

import argparse
import sys

from analysis import AnalysisSettings, TrustError, analyze


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__)
    parser.add_argument("study_dir", help="the study folder holding records/ and cells.json")
    parser.add_argument("--out", default=None, help="output folder (default: STUDY/analysis)")
    parser.add_argument("--allow-partial", action="store_true", help="analyse despite missing or failed cells")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000)")
    parser.add_argument("--no-figures", action="store_true", help="write fits, tables and report only")
    args = parser.parse_args(argv)
    chosen = {"bootstrap_resamples": args.resamples} if args.resamples is not None else {}
    settings = AnalysisSettings.from_dict(chosen | ({"figures": False} if args.no_figures else {}))
    try:
        out = analyze(args.study_dir, out=args.out, allow_partial=args.allow_partial, seed=args.seed, settings=settings)
    except TrustError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 2
    print(f"analysis written to {out} (report: {out / 'report.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
