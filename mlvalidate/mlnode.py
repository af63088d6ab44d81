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
          ends the phase with the node's error. A real MLNode reports `in_progress`, then
          `completed` (is_running) or `failed`. After a failure its watcher (3 checks, 2 s
          apart) stops the manager, which blocks its event loop for 35 s (it answers nothing),
          then exits (os._exit(1)); under a restarting supervisor it comes back `not_started`.
          So while a deployment is starting, a status poll unanswered for SILENT_S, a refused
          connection, or `not_started` ends the phase at once with that cause. The MLNode says
          running when its first replica answers /health: the replicas its PoC status lists
          then are logged and recorded (others may still be starting).

Each returns a dict for the run bundle's `phases` entry and raises EngineError (one line)
when the phase fails.
"""

from __future__ import annotations

import time

from . import interrupts
from .http_client import HttpClient, Response, Unreachable
from .errors import EngineError, MlvalidateError

API = "/api/v1"
POLL_S = 5.0  # spec: poll every <= 5 s
SILENT_S = 10.0  # a deploy status unanswered this long while starting: the MLNode is in its failure path
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
        elif status in ("NOT_FOUND", "PARTIAL") and (seen_running or waited > NOT_FOUND_GRACE_S
                                                     or st.get("error_message")):  # it ran and failed between polls
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
def _up_status(http: HttpClient, starting: bool = False) -> dict:
    """The startup status; while a deployment is starting, a refused connection raises Unreachable
    at once and no answer within SILENT_S raises EngineError."""
    if not starting:
        return _answer(http.request("GET", f"{API}/inference/up/status"), "deploy status")
    return _answer(http.request("GET", f"{API}/inference/up/status", connect_grace_s=0,
                                deadline_s=min(SILENT_S, http.deadline_s)), "deploy status")


def _restarted(how: str, waited: float) -> EngineError:
    return EngineError(f"the deployment failed and the MLNode restarted: {how} after {waited:.0f} s of deploying "
                       "(an MLNode exits about 6 s after a failed deployment; a restarting supervisor brings it back "
                       "not_started)", "read the MLNode's log (vLLM's output): the deploy args, the model, memory")


def _replicas(http: HttpClient, until: float) -> list:
    """The ports of the replicas the MLNode's PoC status lists: the ones its health check (every
    2 s) has seen up. Right after `completed` it may list none yet (NO_BACKENDS): waited for, until `until`."""
    while True:
        r = http.request("GET", f"{API}/inference/pow/status", deadline_s=min(30.0, http.deadline_s))
        body = r.body if r.status == 200 and isinstance(r.body, dict) else {}
        backends = body.get("backends") if isinstance(body.get("backends"), list) else []
        if backends or body.get("status") != "NO_BACKENDS" or time.monotonic() > until:
            return [b.get("port") for b in backends if isinstance(b, dict)]
        interrupts.sleep(min(POLL_S, 0.5))


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
        try:
            st = _up_status(http, starting=True)
        except Unreachable:
            raise _restarted("it stopped answering (connection refused)", time.monotonic() - t0) from None
        except EngineError as e:
            raise EngineError(f"the deployment failed: the MLNode stopped answering its deploy status after "
                              f"{time.monotonic() - t0:.0f} s of deploying (after a failed deployment it answers "
                              f"nothing for 35 s, then exits): {e}",
                              "read the MLNode's log (vLLM's output): the deploy args, the model, memory") from None
        waited = time.monotonic() - t0
        if st.get("is_running"):
            ports = _replicas(http, t0 + timeout_s)
            log(f"    running after {waited:.0f} s; replicas answering: {', '.join(map(str, ports)) or 'none yet'} "
                "(the MLNode says running when its first replica is up)")
            return {"action": action, "args_applied": action == "deployed", "up_status": st, "replicas": ports,
                    "elapsed_s": round(waited, 3)}
        status = st.get("status")
        if status in ("failed", "cancelled"):
            raise EngineError(f"the deployment {status} after {waited:.0f} s: {st.get('error') or 'no error given'}",
                              "read the MLNode's log (vLLM's output: the MLNode's error keeps none of it) and fix the "
                              "deploy args; the MLNode exits about 6 s after a failed deployment")
        if status == "not_started" and not st.get("is_starting"):
            raise _restarted("it came back not_started", waited)
        if waited > timeout_s:
            raise EngineError(f"the deployment was not running within {timeout_s:g} s (status {status})",
                              "raise --deploy-timeout (large models take 20+ min to load)")
        if status != last:
            log(f"    {status}" + (f" ({st['elapsed_seconds']:.0f} s on the node)"
                                   if isinstance(st.get("elapsed_seconds"), (int, float)) else ""))
            last = status
        interrupts.sleep(POLL_S)


# ----------------------------------------------------------------------------------------
# what a result through an MLNode depends on
# ----------------------------------------------------------------------------------------
def stronger_rng_caveats(ref, verdict: str) -> list[str]:
    """A reference made with poc_stronger_rng, checked through an MLNode: builds older than
    v0.2.12 drop the flag without a word (lax request models, /versions 404), and their
    replicas then compute the default RNG's inputs."""
    if not getattr(ref, "stronger_rng", False):
        return []
    out = ["the reference needs poc_stronger_rng: MLNode builds older than v0.2.12 drop it silently (unknown request "
           "fields are ignored; /versions answers 404), so this result depends on the MLNode carrying the flag"]
    if verdict == "FAIL":
        out.append("possible cause of this FAIL: an MLNode that dropped poc_stronger_rng (its replicas then computed "
                   "the default RNG's inputs) — check the MLNode's version before calling it fraud")
    return out


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
