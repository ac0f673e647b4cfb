"""`distill push`: publish a student (full, merged or LoRA adapter) or a filtered dataset on the Hub, with a card.

    distill push runs/sft --repo-id me/student-7b [--private] [--checkpoints] [--eval results.json]
    distill push runs/filter --repo-id me/traces --dry-run --stage-dir /tmp/stage   # look before uploading
    python -m pipeline.push.hub runs/sft --repo-id me/student-7b                          # the same, no console script

The folder is staged first (pipeline/push/release.py: the files worth publishing and a card written from the
manifests, one folder per revision: `main`, and `checkpoint-N` branches with `--checkpoints`), listed with
sizes, then sent as one `upload_folder` commit per revision. The token (HF_TOKEN or the saved login) is never
printed: errors and log lines that pass through us are scrubbed of it, and a staged text file holding it stops
the push. Exit codes: 0 done, 2 bad input (no token, unknown folder kind, ...), 1 the upload failed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

from pipeline import logs
from pipeline.errors import UserError
from pipeline.handoff import is_stage_output, require_complete
from pipeline.push.lineage import REPO_ID
from pipeline.push.release import (
    PushError,
    Revision,
    detect_kind,
    print_listing,
    refuse_secret,
    stage_dataset,
    stage_model,
    stage_root,
)

HELP = (
    "upload a student model, LoRA adapter or filtered dataset to the Hugging Face Hub with a generated card"
)
TOKEN_PATTERN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="an sft / kd / opd output (or its merged/ folder), or a filter output")
    parser.add_argument("--repo-id", required=True, help="owner/name on the Hub")
    parser.add_argument(
        "--kind", choices=("model", "dataset"), help="default: from the folder's manifest stage"
    )
    parser.add_argument(
        "--private", action="store_true", help="create the repo private (refuse a public one)"
    )
    parser.add_argument(
        "--checkpoints", action="store_true", help="also push each checkpoint-N to branch checkpoint-N"
    )
    parser.add_argument("--endpoint", help="Hub URL (default: $HF_ENDPOINT, else huggingface.co)")
    parser.add_argument(
        "--dry-run", action="store_true", help="stage and list the files and card; upload nothing"
    )
    parser.add_argument("--stage-dir", help="where to stage (default: a temporary folder)")
    parser.add_argument(
        "--allow-incomplete",
        action="store_true",
        help="push a folder without its manifest.json (the remains of a killed or failed run)",
    )
    parser.add_argument("--eval", help="eval results JSON for the card (default: <model>/eval/results.json)")
    parser.add_argument("--base-model", help="the base's Hub id, when the recipe trained from a local folder")
    parser.add_argument(
        "--license", help="license for the card (default: the base model card's, when on disk)"
    )
    parser.add_argument(
        "--dataset-id", action="append", default=[], help="Hub dataset the model was trained on"
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="upload files matching this glob even if skipped by default (e.g. 'runs/*')",
    )


# --- the token, and the upload ---------------------------------------------------------------------------


class Redactor(logging.Filter):
    """Replaces the token (and anything shaped like a Hub token) in text and in log records."""

    def __init__(self, token: str | None) -> None:
        super().__init__()
        self.token = token

    def scrub(self, text: str) -> str:
        text = text.replace(self.token, "***") if self.token else text
        return TOKEN_PATTERN.sub("hf_***", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.scrub(record.getMessage()), None
        if record.exc_info:
            record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
        return True


@contextlib.contextmanager
def redacted_logs(redactor: Redactor) -> Iterator[None]:
    """Scrub every record our handlers emit (huggingface_hub's own and the root's), warnings included."""
    import huggingface_hub  # noqa: F401  (configures its library logger and handler)

    handlers = {*logging.getLogger().handlers, *logging.getLogger("huggingface_hub").handlers}
    for handler in handlers:
        handler.addFilter(redactor)
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        for handler in handlers:
            handler.removeFilter(redactor)


def upload(args: argparse.Namespace, kind: str, revisions: list[Revision], token: str | None) -> str:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=args.endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    # private=None, not False, without --private: a new repo then follows the owner's default visibility.
    url = api.create_repo(args.repo_id, repo_type=kind, private=True if args.private else None, exist_ok=True)
    if args.private and api.repo_info(args.repo_id, repo_type=kind).private is False:
        raise PushError(
            f"{args.repo_id} already exists and is public; make it private first or drop --private"
        )
    for rev in revisions:
        if rev.name != "main":
            api.create_branch(args.repo_id, branch=rev.name, repo_type=kind, exist_ok=True)
        # A branch starts as a copy of main: delete what the checkpoint does not hold, so it is exactly that.
        api.upload_folder(
            repo_id=args.repo_id,
            repo_type=kind,
            folder_path=rev.folder,
            revision=rev.name,
            commit_message=f"Upload {kind} ({rev.name}) with distill push",
            delete_patterns="*" if rev.name != "main" else None,
        )
        print(f"pushed {rev.name} ({len(rev.files)} files)")
    return str(url)


def hub_token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def run_push(args: argparse.Namespace) -> int:
    """Stage, list, and (unless --dry-run) upload; 0 on success, 2 on bad input, 1 when the upload fails."""
    redactor = Redactor(None)
    try:
        redactor.token = hub_token()
        return push(args, redactor)
    except UserError as e:
        print(f"error: {redactor.scrub(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # the Hub refused or could not be reached (its HTTP errors are OSErrors): one line
        print(f"error: push failed: {type(e).__name__}: {redactor.scrub(str(e))}", file=sys.stderr)
        return 1
    except (
        Exception
    ):  # a bug of ours: the whole traceback, scrubbed (it can quote tokens and request headers)
        print(redactor.scrub(traceback.format_exc()), end="", file=sys.stderr)
        return 1


PUBLISHED = ("sft", "kd", "opd", "filter")  # the stages whose outputs push publishes


def push(args: argparse.Namespace, redactor: Redactor) -> int:
    from huggingface_hub import constants

    folder, token = Path(args.folder), redactor.token
    if not folder.is_dir():
        raise PushError(f"{folder}: no such folder")
    if not args.dry_run and not token:
        raise PushError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (or use --dry-run)")
    if not args.dry_run and constants.HF_HUB_OFFLINE:
        raise PushError("HF_HUB_OFFLINE is set: unset it (or set it to 0) to push")
    if not REPO_ID.match(args.repo_id):
        raise PushError(f"--repo-id {args.repo_id!r}: expected owner/name")
    if is_stage_output(folder):  # not a finished sft / kd / filter output: refuse to publish part of one
        require_complete(folder, PUBLISHED, allow_incomplete=args.allow_incomplete, field="folder")
    kind = detect_kind(folder, args.kind)
    with redacted_logs(redactor), stage_root(args) as root:
        revisions = (stage_model if kind == "model" else stage_dataset)(args, folder, root)
        print(f"{kind} card: {revisions[0].folder / 'README.md'}")
        print_listing(revisions)
        refuse_secret(revisions, token)
        if args.dry_run:
            print("dry run: nothing uploaded")
        else:
            print(f"pushed to {upload(args, kind, revisions, token)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distill push", description=HELP)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logs.setup()
    return run_push(args)


if __name__ == "__main__":
    sys.exit(main())
