"""What every command shares: exit codes, the help formatter, signals."""

from __future__ import annotations

import argparse
import signal

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; an option's default is shown as `(default: X)` once, and only when it
    says something: never for a flag (store_true), for an empty default (None, [], ""), or when the
    option's own help already says what its default is (`--out ... (default: mlvalidate-runs/...)`)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is argparse.SUPPRESS or default is None or default is False or default in ("", [], ())
                or action.nargs == 0 or "default" in text.lower() or "%(default)" in text):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def add_stat_test_args(p) -> None:
    g = p.add_argument_group("stat test (overrides; default: the reference's values, else the server defaults)")
    g.add_argument("--threshold", type=float, dest="dist_threshold", default=None, help="L2 distance gate")
    g.add_argument("--p-mismatch", type=float, default=None, help="expected honest mismatch rate")
    g.add_argument("--fraud-threshold", type=float, default=None, help="p-value below which fraud is declared")


def stop_on_sigterm():
    """SIGTERM ends a run like Ctrl-C: the node's generation is stopped and the bundle written.
    Returns the handler it replaced. (`interrupts.handling_signals` does it for both signals.)"""
    from ..interrupts import on_signal

    return signal.signal(signal.SIGTERM, on_signal)


EXTRAS = {"reference": ("torch", "transformers")}  # what each extra of pyproject.toml brings


def require_extra(extra: str, command: str) -> None:
    """One line, exit 2, when a command needs an extra that is not installed."""
    import importlib.util

    from ..errors import MlvalidateError

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        raise MlvalidateError(f"`mlvalidate {command}` needs {' and '.join(missing)}, which this Python does not have",
                              f"pip install 'mlvalidate[{extra}]'")


def add_in_flight_arg(p) -> None:
    """--in-flight, shared by `validate` and `fleet`."""
    from ..defaults import DEFAULT_IN_FLIGHT

    p.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT, metavar="N",
                   help="chunks queued on the node at a time (POST /generate wait=false, polled), so the node never "
                   "waits for the harness; each chunk is still computed alone at --batch-size. 0: one wait=true "
                   "request at a time (nodes without the /generate queue)")


def add_gpus_arg(p, what: str) -> None:
    """--gpus, shared by `validate` and `fleet`: the operator's word for a remote node's GPUs."""
    p.add_argument("--gpus", default=None, metavar='"MODEL x N"',
                   help=f'{what}: GPU model and count, e.g. "H100 x4" or "CPU", recorded as the operator\'s word in '
                   "environment.json where the node does not say it itself (a Gonka MLNode's GPU routes do) and does not "
                   "run on this machine; a remote node's hardware is never taken from this machine")


def add_nvml_arg(p, default: str) -> None:
    """--nvml, shared by `validate` and `run`: which of this host's GPUs are the node's (serving/energy.py)."""
    p.add_argument("--nvml", default=None, metavar="INDICES",
                   help="the node's GPUs on this host, as NVML numbers them (nvidia-smi's indices, or GPU-UUIDs): "
                   "e.g. 0,1,2,3; `all`; `none` (measure nothing). Over the throughput phase's window NVML's "
                   "total-energy counter is read at both ends (the power readings integrated where a GPU has none) "
                   "and power, SM clock, temperature and throttle reasons are sampled: joules per nonce, average "
                   f"watts per GPU, thermal or power throttling flagged. Default: {default}")


def gpus_option(args) -> str | None:
    """--gpus checked (one line before anything runs)."""
    if args.gpus is None:
        return None
    from ..serving.node_hardware import parse_gpus

    parse_gpus(args.gpus)
    return args.gpus


def add_stop_on_exit_arg(p, whose: str = "the node's") -> None:
    """--stop-on-exit, shared by `validate` and `fleet`."""
    p.add_argument("--stop-on-exit", action="store_true",
                   help=f"when a run ends before every queued chunk came back (Ctrl-C, SIGTERM, --timeout, a node "
                   f"error), POST /pow/stop so {whose} queue drops them. /pow/stop clears the node's whole /generate "
                   "queue and stops its generation loop: only for a node no other client uses. Default: the chunks "
                   "(at most --in-flight) are left to compute; the bundle says which choice was made")


def node_run_options(args, **positive):
    """What `validate` and `fleet` share, checked (a usage error is one line, before anything
    runs): the numbers that must be positive (`positive`: more of the command's own, by flag),
    --in-flight, --warmup-seconds; returns the throughput phase's options (None when skipped)."""
    from ..errors import MlvalidateError
    from ..pipeline import ThroughputOptions

    positive = {"--batch-size": args.batch_size, "--timeout": args.timeout, "--connect-grace": args.connect_grace,
                "--sample-interval": args.sample_interval, "--measure-seconds": args.measure_seconds,
                "--throughput-batch-size": args.throughput_batch_size or 1, **positive}
    for flag, v in positive.items():
        if not 0 < v < float("inf"):
            raise MlvalidateError(f"{flag} must be a positive number, got {v}")
    if not 0 <= args.in_flight <= 64:
        raise MlvalidateError(f"--in-flight must be 0..64, got {args.in_flight}", "the default, 4, keeps the node busy")
    if not 0 <= args.warmup_seconds < float("inf"):
        raise MlvalidateError(f"--warmup-seconds must be >= 0, got {args.warmup_seconds}")
    if args.skip_throughput:
        return None
    return ThroughputOptions(batch_size=args.throughput_batch_size or args.batch_size, warmup_s=args.warmup_seconds,
                             measure_s=args.measure_seconds, sample_interval_s=args.sample_interval,
                             callback_host=args.callback_host)


def add_throughput_args(p, whom: str = "the node") -> None:
    """The throughput phase's options, shared by `validate` and `fleet`."""
    t = p.add_argument_group("throughput phase (runs before the validation unless skipped)")
    t.add_argument("--skip-throughput", action="store_true", help="only validate")
    t.add_argument("--throughput-batch-size", type=int, default=None, help="generation batch (default: --batch-size)")
    t.add_argument("--warmup-seconds", type=float, default=30.0, help="generation time before the first sample")
    t.add_argument("--measure-seconds", type=float, default=60.0,
                   help="measuring window after the warm-up; the steady rate is taken between the moments the "
                   "node's counter changed in it")
    t.add_argument("--sample-interval", type=float, default=10.0,
                   help="about this many seconds between samples (shortened so the window holds at least 3 "
                   "intervals); the counter is also read every ~1/40 of it, 0.02 to 0.25 s")
    t.add_argument("--callback-host", default="127.0.0.1",
                   help=f"address {whom} can reach this machine at, for the spot-check callbacks")
