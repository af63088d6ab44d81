"""Reading a PoC node's /generate answers: the artifacts of an answer, and a hint for a failure
whose text Gonka's server is known to send. Shared by the wait=true and the queued fetch."""

from __future__ import annotations

from ..errors import EngineError

# Gonka's fork, when its engine cannot compute a chunk: under wait=true it retries for 60 s and
# answers 503 "Timeout after 60.0s"; a queued job fails with "Timeout waiting for engine ...".
ENGINE_TIMEOUTS = ("Timeout after", "Timeout waiting for engine")


def explain_failure(message: str) -> str:
    """A hint for a request that failed after its retries (EngineError text), or ''."""
    if any(t in message for t in ENGINE_TIMEOUTS):
        return ("the node's engine could not compute a chunk within Gonka's 60 s chunk timeout "
                "(POC_GENERATE_CHUNK_TIMEOUT_SEC) — read the node's log")
    return ""


def artifacts_of(body, where: str):
    """The `artifacts` of a /generate answer (whatever JSON value it is: the intake judges it);
    an answer that is not a JSON object with that key is an error."""
    if not isinstance(body, dict) or "artifacts" not in body:
        raise EngineError(f"{where}: unexpected /generate answer: {clip(body)}",
                          "is the URL a Gonka PoC node? (expected a JSON object with 'artifacts')")
    return body["artifacts"]


def clip(x, n: int = 200) -> str:
    """One line of at most n characters of any value, for messages."""
    text = " ".join(str(x).split())
    return text if len(text) <= n else text[: n - 1] + "…"
