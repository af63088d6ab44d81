"""The MLNode's management API (spec §5.2) as two validate phases: download, deploy.

download  `POST /api/v1/models/status {hf_repo, hf_commit}` -> DOWNLOADED | DOWNLOADING |
          NOT_FOUND | PARTIAL. Unless DOWNLOADED: `POST /api/v1/models/download` (202; 409 =
          already downloading, benign; 429 = too many concurrent downloads), then poll the
          status every POLL_S until DOWNLOADED. It fails when the status falls back to
          NOT_FOUND/PARTIAL after the download was seen running, or is still NOT_FOUND after
          NOT_FOUND_GRACE_S (the download never started), or past the timeout.
deploy    `GET /api/v1/inference/up/status`: running -> nothing to do, and the deploy args are
          NOT applied (the running deployment keeps its own); starting -> wait for it; else
          `POST /api/v1/inference/up/async {model, dtype, additional_args}` (409 = someone
          else started it, benign) and poll every POLL_S until running; `failed`/`cancelled`
          ends the phase with the node's error.

Each returns a dict for the run bundle's `phases` entry and raises EngineError (one line)
when the phase fails.
"""

from __future__ import annotations

import time

from . import interrupts
from .engines.http import HttpClient, Response
from .errors import EngineError, MlvalidateError

API = "/api/v1"
POLL_S = 5.0  # spec: poll every <= 5 s
NOT_FOUND_GRACE_S = 30.0


def _log_default(msg: str) -> None:
    print(msg, flush=True)


def _answer(r: Response, what: str) -> dict:
    if r.status not in (200, 201, 202) or not isinstance(r.body, dict):
        hint = " — is --url the MLNode API (port 8080)?" if r.status == 404 else ""
        raise EngineError(f"{what}: HTTP {r.status}: {r.detail()}{hint}")
    return r.body


# ----------------------------------------------------------------------------------------
# download
# ----------------------------------------------------------------------------------------
def ensure_downloaded(http: HttpClient, hf_repo: str, hf_commit: str | None, *, timeout_s: float,
                      log=_log_default) -> dict:
    body = {"hf_repo": hf_repo, "hf_commit": hf_commit}
    label = f"{hf_repo}@{hf_commit}" if hf_commit else f"{hf_repo} (no commit pinned)"
    t0 = time.monotonic()
    st = _answer(http.request("POST", f"{API}/models/status", body), "model status")
    status = st.get("status")
    if status == "DOWNLOADED":
        log(f"    {label} is already downloaded on the node")
        return {"action": "already_downloaded", "last_status": st, "elapsed_s": round(time.monotonic() - t0, 3)}
    log(f"    {label} is {status} on the node: asking it to download")
    r = http.request("POST", f"{API}/models/download", body)
    if r.status == 409:
        log("    a download of it is already running (HTTP 409): waiting for it")
    elif r.status == 429:
        raise EngineError(f"the MLNode refused the download of {label}: too many downloads at once (HTTP 429: "
                          f"{r.detail()})", "wait for the running downloads to finish, then run again")
    else:
        task = _answer(r, "model download")
        if task.get("status") == "IGNORED":
            raise EngineError(f"the MLNode ignored the download of {label} (status IGNORED: HF_HUB_OFFLINE?)",
                              "put the weights into the node's HF cache, or let it go online")
        log(f"    download started (task {task.get('task_id')}); polling every {POLL_S:g} s, "
            f"for at most {timeout_s:g} s")
    t_start, seen_running, last_print = time.monotonic(), False, None
    while True:
        st = _answer(http.request("POST", f"{API}/models/status", body), "model status")
        status = st.get("status")
        waited = time.monotonic() - t_start
        if status == "DOWNLOADED":
            log(f"    downloaded after {waited:.0f} s")
            return {"action": "downloaded", "last_status": st, "elapsed_s": round(time.monotonic() - t0, 3)}
        if status == "DOWNLOADING":
            seen_running = True
        elif status in ("NOT_FOUND", "PARTIAL") and (seen_running or waited > NOT_FOUND_GRACE_S):
            why = st.get("error_message") or ("the download stopped" if seen_running else "the download never started")
            raise EngineError(f"the download of {label} failed: status back to {status} after {waited:.0f} s ({why})",
                              "see the MLNode's log; check the repo, the commit, the disk space and HF access")
        elif status not in ("NOT_FOUND", "PARTIAL"):
            raise EngineError(f"model status of {label}: unexpected answer {str(st)[:200]}")
        if waited > timeout_s:
            raise EngineError(f"the download of {label} did not finish within {timeout_s:g} s (status {status})",
                              "raise --download-timeout, or download it first")
        if status != last_print or waited // 60 != (waited - POLL_S) // 60:
            prog = st.get("progress") or {}
            log(f"    {status}" + (f" ({prog['elapsed_seconds']:.0f} s on the node)"
                                    if isinstance(prog.get("elapsed_seconds"), (int, float)) else ""))
            last_print = status
        interrupts.sleep(POLL_S)


# ----------------------------------------------------------------------------------------
# deploy
# ----------------------------------------------------------------------------------------
def _up_status(http: HttpClient) -> dict:
    return _answer(http.request("GET", f"{API}/inference/up/status"), "deploy status")


def ensure_deployed(http: HttpClient, model: str, *, dtype: str, additional_args: list[str], timeout_s: float,
                    log=_log_default) -> dict:
    t0 = time.monotonic()
    st = _up_status(http)
    if st.get("is_running"):
        log("    vLLM is already running on the node: deploy args NOT applied (the running deployment keeps its "
            "own; redeploy it to apply them)")
        return {"action": "already_running", "args_applied": False, "up_status": st,
                "elapsed_s": round(time.monotonic() - t0, 3)}
    if st.get("is_starting"):
        action = "waited_for_start"
        log("    a deployment is already starting: waiting for it (deploy args NOT applied)")
    else:
        req = {"model": model, "dtype": dtype, "additional_args": list(additional_args)}
        r = http.request("POST", f"{API}/inference/up/async", req)
        if r.status == 409:
            action = "waited_for_start"
            log(f"    the node is already starting or running a deployment (HTTP 409: {r.detail()}): waiting for it "
                "(deploy args NOT applied)")
        else:
            _answer(r, "deploy (up/async)")
            action = "deployed"
            log(f"    deploying {model} (dtype {dtype}) with {len(additional_args)} args; polling every {POLL_S:g} s, "
                f"for at most {timeout_s:g} s")
    last = None
    while True:
        st = _up_status(http)
        waited = time.monotonic() - t0
        if st.get("is_running"):
            log(f"    running after {waited:.0f} s")
            return {"action": action, "args_applied": action == "deployed", "up_status": st,
                    "elapsed_s": round(waited, 3)}
        status = st.get("status")
        if status in ("failed", "cancelled"):
            raise EngineError(f"the deployment {status} after {waited:.0f} s: {st.get('error') or 'no error given'}",
                              "see the MLNode's log (vLLM's output) and fix the deploy args")
        if waited > timeout_s:
            raise EngineError(f"the deployment was not running within {timeout_s:g} s (status {status})",
                              "raise --deploy-timeout (large models take 20+ min to load)")
        if status != last:
            log(f"    {status}" + (f" ({st['elapsed_seconds']:.0f} s on the node)"
                                   if isinstance(st.get("elapsed_seconds"), (int, float)) else ""))
            last = status
        interrupts.sleep(POLL_S)


# ----------------------------------------------------------------------------------------
# what the download and deploy phases ask for
# ----------------------------------------------------------------------------------------
def model_source(ref, prof) -> tuple[str, str | None, str]:
    """hf_repo, hf_commit and where they came from: the chain definition of the reference's
    model (the profile's, or configs/chain/), else the model id itself with no commit."""
    from .serving.chain_model import load_chain

    chains = [prof.chain] if prof is not None and prof.chain is not None else []
    try:
        chains.append(load_chain(ref.model))
    except MlvalidateError:
        pass
    for chain in chains:
        if chain.model_id == ref.model:
            return chain.hf_repo, chain.hf_commit, f"chain {chain.id}"
    return ref.model, None, "the reference's model id (no chain definition, so no commit)"


def deploy_args(ref, prof, commit: str | None) -> tuple[list[str], str]:
    if prof is not None:
        return prof.vllm_args(), f"profile {prof.name}"
    args, source = list(ref.additional_args), "the reference's additional_args"
    if commit and not any(a == "--revision" or a.startswith("--revision=") for a in args):
        args += ["--revision", commit]  # serve the commit the download phase fetched, not whatever 'main' is
        source += " + --revision from the chain"
    return args, source
