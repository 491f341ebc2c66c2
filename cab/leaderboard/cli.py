"""`cab leaderboard`: the command line of the leaderboard.

    cab leaderboard build [--results DIR] [--out DIR] [--normalisation FILE] [--freeze-normalisation]
    cab leaderboard serve [--dir DIR] [--port N]
    cab leaderboard table [--results DIR] [--pattern P] [--out FILE | --into DOC.md]   # the overview as markdown

Bad input is one line on stderr and exit code 2 (`UsageError`), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cab.leaderboard.markdown import markdown_tables, replace_tables_block
from cab.leaderboard.site import DEFAULT_NORMALISATION, UsageError, build, serve


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage and exits; we want one line
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cab leaderboard", description="Build or serve the static leaderboard site.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    b = sub.add_parser("build", help="turn a directory of result records into a static site")
    b.add_argument("--results", default="results", help="directory of JSON records, searched recursively (default: results)")
    b.add_argument("--out", default="site", help="output directory (default: site)")
    b.add_argument("--normalisation", default=None,
                   help=f"frozen z-score constants (default: the package's leaderboard/{DEFAULT_NORMALISATION})")
    b.add_argument("--freeze-normalisation", action="store_true",
                   help="write the normalisation file from the current records (never overwrites), then build")
    b.add_argument("-q", "--quiet", action="store_true", help="print nothing but problems")
    t = sub.add_parser("table", help="print the overview tables as markdown")
    t.add_argument("--results", default="results", help="directory of JSON records, searched recursively (default: results)")
    t.add_argument("--normalisation", default=None, help="frozen z-score constants (default: the package's)")
    t.add_argument("--pattern", default=None, help="one pattern only")
    t.add_argument("--out", default=None, help="write to this file instead of stdout")
    t.add_argument("--into", default=None, metavar="FILE.md",
                   help="replace the block between '<!-- tables:start... -->' and '<!-- tables:end -->' in FILE.md")
    s = sub.add_parser("serve", help="serve a built site on localhost")
    s.add_argument("--dir", default="site", help="the built site (default: site)")
    s.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    return parser


def _check_out(out: str, file: bool) -> None:
    """An unwritable --out is one line and exit 2 before any work (cab.config.writable_dir_problem)."""
    from cab.config import writable_dir_problem

    problem = writable_dir_problem(str(Path(out).parent) if file else out)
    if problem:
        raise UsageError(f"--out={out}: cannot create or write {'the file' if file else 'a directory'} there ({problem})")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UsageError("choose a command: build, table or serve (cab leaderboard build --help)")
        if args.command == "table":
            from cab.patterns import Pattern

            valid = [p.value for p in Pattern]
            if args.pattern is not None and args.pattern not in valid:
                raise UsageError(f"unknown pattern {args.pattern!r}; choose one of: {', '.join(valid)}")
            if args.out and not args.into:
                _check_out(args.out, file=True)
            text = markdown_tables(args.results, args.normalisation, args.pattern)
            if args.into:
                replace_tables_block(Path(args.into), text, f"cab leaderboard table --results {args.results}")
            elif args.out:
                Path(args.out).write_text(text + "\n")
            else:
                print(text)
            return 0
        if args.command == "build":
            _check_out(args.out, file=False)
            summary = build(args.results, args.out, args.normalisation, args.freeze_normalisation)
            if not args.quiet:
                print(f"Built {summary['out']}/index.html from {summary['records']} records "
                      f"({summary['skipped']} skipped, {summary['tables']} tables, "
                      f"{summary['efficiency_groups']} efficiency groups) in {summary['seconds']['total']:.2f} s")
                print(f"Open {Path(summary['out']).resolve() / 'index.html'} or run: cab leaderboard serve --dir {summary['out']}")
            return 0
        if not 0 <= args.port <= 65535:
            raise UsageError(f"port {args.port} is not in 0..65535")
        serve(args.dir, args.port)
        return 0
    except UsageError as exc:
        print(f"cab leaderboard: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2


if __name__ == "__main__":
    raise SystemExit(main())
