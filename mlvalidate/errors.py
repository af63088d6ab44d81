"""Exceptions whose message is one line that says what went wrong and what to do next.

The CLI prints `error: <message>` and exits with `exit_code` (2: error / incomplete run).
"""


class MlvalidateError(Exception):
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        msg = " ".join(str(self).split())
        return f"{msg} — {self.hint}" if self.hint else msg


class ReferenceError_(MlvalidateError):
    """A golden reference (or a file of computed vectors) is missing or malformed."""


class CheckpointError(MlvalidateError):
    """A local checkpoint directory cannot be used."""


class EngineError(MlvalidateError):
    """The system under test could not produce vectors."""


class PullError(MlvalidateError):
    """Pinned weights could not be pulled from the hub (network, disk, revision, access)."""


class LaunchError(MlvalidateError):
    """A vLLM server could not be launched, became unready, or could not be stopped."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stops like on Ctrl-C (the node's generation is stopped, the
    bundle written, exit 2); `signal_name` says which."""

    def __init__(self, signal_name: str = "SIGINT (Ctrl-C)"):
        super().__init__(signal_name)
        self.signal_name = signal_name
