"""`finsent push`: publish an adapter, a merged model or a GGUF export on the Hugging Face Hub.

    finsent push runs/train/adapter --repo-id user/finsent-smollm2-lora --dry-run
    finsent push runs/demo/merged_model --repo-id user/finsent-smollm2 --private

What a folder is decides what goes up: an adapter (adapter_config.json) or a merged model (config.json
and weights) sends its own files, without checkpoints, TensorBoard logs, optimizer states or temporary
files; a GGUF folder (an export's folder, which may be a whole run's) sends only the .gguf files, the
Modelfile, their parity certificates and the model card. Any other folder, or a model its parity check
rejected, is refused before anything touches the network. `--dry-run` lists the files, sizes and total
and never touches the network. The upload goes through huggingface_hub (HfApi.create_repo, then
upload_folder with exactly the listed files), with the token huggingface_hub finds (HF_TOKEN, or
`hf auth login`).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from finsent.core.artefacts import (
    ADAPTER_DIR,
    MERGED_MODEL_DIR,
    MODEL_CARD,
    MODELFILE,
    PARITY_SUFFIX,
    REJECTED_NOTE,
    REJECTED_SUFFIX,
    TENSORBOARD_DIR,
)
from finsent.core.errors import FinsentError

# never uploaded: training checkpoints and their states, logs, and what a killed write leaves behind
# (fsio's hidden `.NAME.*.tmp` files and `.NAME.partial-*` folders)
EXCLUDE = (
    "checkpoint-*",
    TENSORBOARD_DIR,
    "__pycache__",
    ".*",
    "*.tmp",
    "*.partial-*",
    f"*{REJECTED_SUFFIX}",
    f"*{REJECTED_SUFFIX}.txt",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "scaler.pt",
    "trainer_state.json",
    "training_args.bin",
    "*.lock",
)
WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")
GGUF_FILES = ("*.gguf", MODELFILE, f"*{PARITY_SUFFIX}", MODEL_CARD)


@dataclass
class Upload:
    """What `finsent push` would send: the folder's kind and its files (relative path, bytes)."""

    folder: Path
    kind: str  # "adapter", "merged" or "gguf"
    files: list[tuple[str, int]]

    @property
    def total(self) -> int:
        return sum(size for _, size in self.files)


def plan(folder: str | os.PathLike) -> Upload:
    """The kind of `folder` and the files to upload, or a one-line FinsentError for any other folder."""
    root = Path(folder)
    if not root.is_dir():
        raise FinsentError(f"{folder}: not a folder (push takes an adapter, merged model or GGUF folder)")
    if root.name.endswith(REJECTED_SUFFIX) or (root / REJECTED_NOTE).exists():
        raise FinsentError(f"{folder}: this model failed its parity check (see {REJECTED_NOTE}); not pushed")
    top = {p.name for p in root.iterdir() if p.is_file()}
    if "adapter_config.json" in top:
        kind = "adapter"
    elif "config.json" in top and any(fnmatch.fnmatch(n, w) for n in top for w in WEIGHTS):
        kind = "merged"
    elif any(n.endswith(".gguf") and not _excluded(n) for n in top):
        kind = "gguf"
    else:
        inside = [
            d.name for d in (root / ADAPTER_DIR, root / MERGED_MODEL_DIR) if (d / "config.json").is_file()
        ]
        inside += [d.name for d in (root / ADAPTER_DIR,) if (d / "adapter_config.json").is_file()]
        hint = f" (did you mean {root / inside[0]}?)" if inside else ""
        raise FinsentError(
            f"{folder}: not an adapter (adapter_config.json), merged model (config.json + weights) or "
            f"GGUF folder (*.gguf){hint}"
        )
    if kind == "gguf":
        _check_certified(root)
    files = []
    for path in sorted(_walk(root, top_only=kind == "gguf")):
        rel = path.relative_to(root).as_posix()
        if kind == "gguf" and not any(fnmatch.fnmatch(rel, g) for g in GGUF_FILES):
            continue  # a GGUF's folder may be a whole run: only the export and its card go up
        files.append((rel, path.stat().st_size))
    if kind == "adapter" and not any(fnmatch.fnmatch(n, "adapter_model*") for n, _ in files):
        raise FinsentError(f"{folder}: adapter_config.json without adapter weights (adapter_model.*)")
    return Upload(root, kind, files)


def _check_certified(root: Path) -> None:
    """Every GGUF in `root` has its passing parity record (export writes it once the file is in place),
    for a file of the size and bytes it checked: a file copied in, cut off or replaced since is not pushed."""
    from finsent.deploy.records import certified

    for gguf in sorted(p for p in root.glob("*.gguf") if not _excluded(p.name)):
        certified(gguf)


def _walk(root: Path, top_only: bool):
    """Files under `root`, minus EXCLUDE (matched against every part of the path, so a checkpoint
    folder goes with everything in it); symlinked files are followed, symlinked folders are not."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [] if top_only else sorted(d for d in dirnames if not _excluded(d))
        for name in filenames:
            if not _excluded(name):
                yield Path(dirpath) / name


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in EXCLUDE)


def describe(upload: Upload, repo_id: str, private: bool, revision: str | None) -> str:
    """The dry run's listing: kind, target, one line per file with its size, and the total."""
    width = max(len(p) for p, _ in upload.files)
    target = f"{repo_id}{'@' + revision if revision else ''}{' (private)' if private else ''}"
    lines = [f"would upload {upload.kind} folder {upload.folder} to {target}:"]
    lines += [f"  {path:<{width}}  {_size(size):>9}" for path, size in upload.files]
    lines.append(f"  {len(upload.files)} files, {_size(upload.total)} in all")
    if MODEL_CARD not in {p for p, _ in upload.files}:
        lines.append(f"  note: no {MODEL_CARD} model card in this folder; the hub will show none")
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def push(
    folder: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    api=None,
) -> dict:
    """Upload `folder` (see plan) to the hub model repository `repo_id`, creating it when missing
    (private with `private`) and the branch `revision` when given. `dry_run` prints the listing and
    returns without touching the network. `api`: an HfApi (tests pass a fake). Returns
    {repo_id, kind, files, bytes, url}."""
    upload = plan(folder)
    _check_repo_id(repo_id)
    result = {"repo_id": repo_id, "kind": upload.kind, "files": len(upload.files), "bytes": upload.total}
    if dry_run:
        print(describe(upload, repo_id, private, revision))
        return result | {"url": None}
    if api is None:
        from huggingface_hub import HfApi, constants

        if constants.HF_HUB_OFFLINE:
            raise FinsentError("HF_HUB_OFFLINE is set: unset it to push (or use --dry-run to list the files)")
        api = HfApi()
    import glob

    try:
        url = api.create_repo(repo_id, private=private, repo_type="model", exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(upload.folder),
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"finsent push: {upload.kind} ({len(upload.files)} files)",
            # exactly the listed files (escaped: a name may hold glob characters)
            allow_patterns=[glob.escape(path) for path, _ in upload.files],
        )
    except Exception as e:  # huggingface_hub's HTTP, auth and validation errors: one line
        raise FinsentError(f"push to {repo_id} failed: {_reason(e)}") from None
    print(f"pushed {upload.kind} {upload.folder} ({len(upload.files)} files, {_size(upload.total)}) to {url}")
    return result | {"url": str(url), "commit": getattr(commit, "commit_url", str(commit))}


def _check_repo_id(repo_id: str) -> None:
    """user/name, as the hub spells it: checked here so that a typo fails before any upload."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    ok = isinstance(repo_id, str) and repo_id.count("/") == 1
    if ok:
        try:
            validate_repo_id(repo_id)
        except HFValidationError:
            ok = False
    if not ok:
        raise FinsentError(f"--repo-id {repo_id!r}: expected user/name (or organisation/name)")


def _reason(e: Exception) -> str:
    """The first line of an error, with a hint for the usual one: no token."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "401" in text or "Unauthorized" in text or type(e).__name__ == "LocalTokenNotFoundError":
        text += " (log in with `hf auth login` or set HF_TOKEN)"
    return text
