"""finsent push: an adapter, merged model or GGUF folder, with its model card, to the Hugging Face Hub."""

from dataclasses import dataclass

from finsent.core.artefacts import ADAPTER_DIR, MERGED_MODEL_DIR
from finsent.core.fields import opt

HELP = "upload an adapter, merged model or GGUF folder with its model card to the Hugging Face Hub"
EXAMPLE = (
    f"finsent push runs/demo/{MERGED_MODEL_DIR} --repo-id user/finsent-smollm2 --dry-run\n"
    f"  finsent push runs/train/{ADAPTER_DIR} --repo-id user/finsent-smollm2-lora --private"
)


@dataclass
class Args:
    folder: str = opt(None, "adapter, merged model or GGUF folder", metavar="DIR", positional=True)
    repo_id: str = opt(None, "hub repository, user/name (created when missing)", required=True)
    private: bool = opt(False, "create the repository private")
    revision: str | None = opt(None, "branch to commit to, created when missing (default: main)")
    commit_message: str | None = opt(None, "commit message (default: one naming what was pushed)")
    dry_run: bool = opt(False, "list the files, sizes and total that would be uploaded; no network")


def main(args: Args, cfg: None) -> int:
    from finsent.deploy.push import push

    push(args.folder, args.repo_id, args.private, args.revision, args.commit_message, args.dry_run)
    return 0
