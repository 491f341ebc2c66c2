"""The `cab` command.

    cab run  [-m] attention=NAME task=NAME pattern=PATTERN [trainer=smoke|cpu|paper] [seed=N] [results_dir=DIR]
    cab bench [-m] attention=NAME pattern=PATTERN [lengths=[...]]
    cab bench table --results DIR --out FILE.md
    cab generate checkpoint=PATH [prompt=TEXT] [tokens=N] [temperature=T]
    cab list
    cab data list | download [NAME...] [--dir DIR]
    cab leaderboard build [--results DIR] [--out DIR]
    cab leaderboard serve [--dir DIR] [--port N]

`run` and `bench` are Hydra apps (every Hydra flag works: -m, --cfg job, hydra/launcher=...).
Heavy imports (torch, hydra, wandb, datasets, fvcore) happen inside the subcommands.
"""

from __future__ import annotations

import sys

USAGE = __doc__.split("\n\n")[1] if __doc__ else ""

HELP = f"""cab: a benchmark harness and static leaderboard for attention mechanisms.

usage:
{USAGE}

Examples:
    cab run attention=linear task=mqar pattern=causal_self trainer=smoke
    cab run -m attention=softmax,linear pattern=causal_self,noncausal_self trainer=smoke
    cab run attention=softmax --cfg job          # show the resolved config
    cab leaderboard build --results results --out site

Docs: {{docs}} (adding an attention or a task, clusters, reading results, record schema, real tasks' data).
"""


def _docs() -> str:
    """Where the docs are: installed with the package as `cab.docs` (the repository's docs/)."""
    try:
        from importlib.resources import files

        return str(files("cab.docs"))
    except (ImportError, TypeError):  # pragma: no cover - an install without them
        return "docs/ in the source repository"


def _fail(message: str, code: int = 2) -> int:
    print(f"cab: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP.format(docs=_docs()))
        return 0
    command, rest = argv[0], argv[1:]
    from cab.registry import ChoiceError

    try:
        if command == "run":
            return _run(rest)
        if command == "bench":
            from cab.bench.job import main as bench_main

            return bench_main(rest)
        if command == "generate":
            from cab.run.generate import main as generate_main

            return generate_main(rest)
        if command == "list":
            from cab.listing import print_listing

            print_listing()
            return 0
        if command == "leaderboard":
            from cab.leaderboard.cli import main as leaderboard_main

            return leaderboard_main(rest)
        if command == "data":
            from cab.download import main as data_main

            return data_main(rest)
    except ChoiceError as exc:
        return _fail(str(exc))
    return _fail(f"unknown command {command!r}; valid commands: run, bench, generate, list, data, leaderboard")


def _run(args: list[str]) -> int:
    if any(a in ("-h", "--help") for a in args):
        print(HELP.format(docs=_docs()))
        return 0
    from cab.config import check_overrides, preimport, register_configs

    multirun = "-m" in args or "--multirun" in args
    preimport(args)
    register_configs()
    check_overrides(args, multirun)
    from cab.run.app import run_app

    sys.argv = ["cab run", *args]
    try:
        run_app()
    except SystemExit as exc:  # Hydra exits after a sweep; keep its code
        return int(exc.code or 0) if not isinstance(exc.code, str) else _fail(exc.code, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
