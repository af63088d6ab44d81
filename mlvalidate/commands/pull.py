"""`mlvalidate pull`: the chain's pinned weights, downloaded, recorded and verified."""

from __future__ import annotations

from ._common import EXIT_PASS, Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "pull",
        help="download the chain's pinned weights (resumable), record and verify them",
        description="Download a model repository at one commit (default: the chain's pin, hf_repo @ hf_commit "
        "of configs/chain/minimaxai-minimax-m2.7.yaml) into DIR with huggingface_hub, "
        "after checking the free disk space against the listed file sizes. Files finished by an earlier run "
        "are kept; run it again after an interruption. Writes DIR/.mlvalidate-pull.json, then runs the "
        "verify-weights checks. Only a full 40-hex commit is accepted as --revision. Honours HF_ENDPOINT "
        "and HF_TOKEN.\n\n"
        "exit codes: 0 pulled and verified; 2 the download or the verification found a problem",
        formatter_class=Formatter,
    )
    p.add_argument("--dir", default=None, metavar="DIR", help="target directory, models/<owner>--<name> when not given")
    p.add_argument("--revision", default=None, metavar="COMMIT", help="full commit sha, the chain's pin when not given")
    p.add_argument("--repo", default=None, help="hub repository, the chain's (MiniMaxAI/MiniMax-M2.7) when not given")
    p.set_defaults(func=run)


def run(args) -> int:
    """Pull (each phase on one line), then run verify-weights' checks on the result. Exit 0 when
    both succeed, 2 when the checks find problems (a PullError, printed by cli, for the rest)."""
    from ..hub.plan import human_bytes
    from ..hub.pull import pull
    from ..hub.verify import verify_weights
    from .verify_weights import print_report

    result = pull(args.dir, repo=args.repo, revision=args.revision, echo=print)
    print(f"verify: checking {result.local_dir} (headers, dtypes and shapes, commit)")
    code = print_report(verify_weights(result.local_dir, revision=result.commit, repo=result.repo))
    if code == EXIT_PASS:
        print(
            f"done: {len(result.files)} files, {human_bytes(result.total_bytes)} "
            f"({human_bytes(result.downloaded_bytes)} downloaded) in {result.elapsed_s:.1f} s"
        )
    return code
