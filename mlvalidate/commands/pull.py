"""`mlvalidate pull`: the chain's pinned weights, verified."""

from __future__ import annotations

from ._common import Formatter


def register(sub) -> None:
    p = sub.add_parser(
        "pull",
        help="download the chain's pinned weights (resumable), record and verify them",
        description="Download a model repository at one commit (default: the chain's pin, hf_repo @ hf_commit "
        "of configs/chain/minimaxai-minimax-m2.7.yaml) into DIR with huggingface_hub, "
        "after checking the free disk space against the listed file sizes. Files finished by an earlier run "
        "are kept; run it again after an interruption. Writes DIR/.mlvalidate-pull.json, then runs the "
        "verify-weights checks. Only a full 40-hex commit is accepted as --revision. Honours HF_ENDPOINT "
        "and HF_TOKEN.",
        formatter_class=Formatter,
    )
    p.add_argument("--dir", default=None, metavar="DIR", help="target directory, models/<owner>--<name> when not given")
    p.add_argument("--revision", default=None, metavar="COMMIT", help="full commit sha, the chain's pin when not given")
    p.add_argument("--repo", default=None, help="hub repository, the chain's (MiniMaxAI/MiniMax-M2.7) when not given")

    def run(args) -> int:
        from ..hub.pull import run_pull

        return run_pull(args.dir, revision=args.revision, repo=args.repo)

    p.set_defaults(func=run)
