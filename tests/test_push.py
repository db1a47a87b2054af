"""`finsent push`: what goes up for each kind of folder, the dry run, and the upload through a fake HfApi
(nothing here touches the network); train.push_to_hub / hub_model_id reach SFTConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finsent.cli import main
from finsent.core.errors import FinsentError
from finsent.deploy.push import plan, push


def touch(folder: Path, *names: str, size: int = 10) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)


def adapter_folder(tmp_path: Path) -> Path:
    """An adapter as finsent train writes it, plus what must never go up: a checkpoint, TensorBoard
    logs, fsio's temporary file and partial folder."""
    folder = tmp_path / "train" / "adapter"
    touch(folder, "adapter_config.json", "tokenizer.json", "tokenizer_config.json", "finsent_config.yaml")
    touch(folder, "adapter_model.safetensors", size=2_000_000)
    touch(folder, "README.md", "calibration.json")
    touch(folder, "checkpoint-10/optimizer.pt", "checkpoint-10/adapter_model.safetensors")
    touch(folder, "runs/Jan01/events.out.tfevents.1", ".README.md.abc123.tmp", ".adapter.partial-x/a.bin")
    touch(folder, "optimizer.pt", "trainer_state.json", "training_args.bin")
    return folder


ADAPTER_FILES = [
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "calibration.json",
    "finsent_config.yaml",
    "tokenizer.json",
    "tokenizer_config.json",
]


@pytest.fixture(autouse=True)
def no_real_hub(monkeypatch):
    """Any real HfApi would reach the network: constructing one fails the test."""
    import huggingface_hub

    class Refuse:  # a class, so that annotations such as `HfApi | None` in other modules still work
        def __init__(self, *a, **k):
            raise AssertionError("a real HfApi was created")

    monkeypatch.setattr(huggingface_hub, "HfApi", Refuse)


def test_adapter_plan_leaves_out_checkpoints_and_temporary_files(tmp_path):
    up = plan(adapter_folder(tmp_path))
    assert up.kind == "adapter"
    assert [p for p, _ in up.files] == ADAPTER_FILES
    assert up.total == 2_000_000 + 6 * 10


def test_dry_run_lists_paths_sizes_and_total(tmp_path, capsys):
    folder = adapter_folder(tmp_path)
    code = main(["push", str(folder), "--repo-id", "someone/finsent-lora", "--private", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"would upload adapter folder {folder} to someone/finsent-lora (private):"
    assert lines[1:-1] == [
        f"  {p:<25}  {'2.0 MB' if p == 'adapter_model.safetensors' else '10 B':>9}" for p in ADAPTER_FILES
    ]
    assert lines[-1] == "  7 files, 2.0 MB in all"
    assert "checkpoint" not in out and "tfevents" not in out and ".tmp" not in out


def test_merged_and_gguf_folders(tmp_path):
    merged = tmp_path / "merged_model"
    touch(merged, "config.json", "generation_config.json", "model.safetensors", "tokenizer.json")
    touch(merged, "README.md", "merge_parity.json", "metrics.json", "finsent_config.yaml")
    up = plan(merged)
    assert up.kind == "merged" and len(up.files) == 8
    # an export's folder can be a whole run: only the GGUF, its Modelfile, certificate and card go up
    run = tmp_path
    touch(run, "finsent-q8_0.gguf", "Modelfile", "README.md", "report.md")
    touch(run, "summary.json", "zero_shot/metrics.json")
    (run / "finsent-q8_0.parity.json").write_text('{"passed": true, "bytes": 10}')
    up = plan(run)
    assert up.kind == "gguf"
    assert [p for p, _ in up.files] == [
        "Modelfile",
        "README.md",
        "finsent-q8_0.gguf",
        "finsent-q8_0.parity.json",
    ]


def test_a_gguf_without_its_passing_parity_record_for_its_bytes_is_not_pushed(tmp_path):
    """export renames the GGUF into place once checked and then writes its record: a file under a .gguf
    name with no passing record of its size (copied in, cut off, a kill between the two) stays here."""
    touch(tmp_path, "m.gguf", "Modelfile")
    with pytest.raises(FinsentError, match=r"m.gguf: no passing parity record \(m.parity.json\)"):
        plan(tmp_path)
    (tmp_path / "m.parity.json").write_text('{"passed": false, "bytes": 10}')
    with pytest.raises(FinsentError, match="no passing parity record"):
        plan(tmp_path)
    (tmp_path / "m.parity.json").write_text('{"passed": true, "bytes": 270885568}')
    with pytest.raises(FinsentError, match="10 bytes, but its parity record .* checked a file of 270885568"):
        plan(tmp_path)
    (tmp_path / "m.parity.json").write_text('{"passed": true, "bytes": 10}')
    assert plan(tmp_path).kind == "gguf"
    # the record names the very file: another of the same size is refused (records without a hash: size)
    from finsent.core.fsio import sha256_of

    (tmp_path / "m.parity.json").write_text(
        json.dumps({"passed": True, "bytes": 10, "sha256": sha256_of(tmp_path / "m.gguf")})
    )
    assert plan(tmp_path).kind == "gguf"
    (tmp_path / "m.gguf").write_bytes(b"y" * 10)
    with pytest.raises(FinsentError, match="not the file its parity record"):
        plan(tmp_path)
    # a killed export's hidden, unchecked file is neither pushed nor in the way
    (tmp_path / "m.gguf").write_bytes(b"x" * 10)
    touch(tmp_path, ".m.gguf.unchecked.gguf")
    assert ".m.gguf.unchecked.gguf" not in [p for p, _ in plan(tmp_path).files]


def test_other_folders_are_refused_in_one_line(tmp_path, capsys):
    touch(tmp_path / "notes", "a.txt")
    touch(tmp_path / "train" / "adapter", "adapter_config.json", "adapter_model.safetensors")
    touch(tmp_path / "m.rejected", "config.json", "model.safetensors", "REJECTED.txt")
    touch(tmp_path / "empty_adapter", "adapter_config.json")
    cases = {
        "notes": "not an adapter (adapter_config.json), merged model (config.json + weights) or GGUF folder",
        "train": "did you mean",
        "m.rejected": "failed its parity check",
        "empty_adapter": "without adapter weights",
        "missing": "not a folder",
    }
    for name, message in cases.items():
        code = main(["push", str(tmp_path / name), "--repo-id", "a/b", "--dry-run"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith("finsent push: error: ") and message in err
    with pytest.raises(FinsentError, match="expected user/name"):
        push(adapter_folder(tmp_path), "no-slash", dry_run=True)


class FakeApi:
    """HfApi's create_repo / create_branch / upload_folder, recorded; upload_folder picks files as the
    real one does (huggingface_hub's own filter over allow_patterns and its default ignores)."""

    def __init__(self, fail: Exception | None = None):
        self.calls: list[tuple[str, dict]] = []
        self.uploaded: list[str] = []
        self.fail = fail

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))
        if self.fail:
            raise self.fail
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, repo_id, **kw):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kw}))

    def upload_folder(self, **kw):
        from huggingface_hub.utils import filter_repo_objects
        from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

        self.calls.append(("upload_folder", kw))
        root = Path(kw["folder_path"])
        every = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        self.uploaded = list(
            filter_repo_objects(
                every, allow_patterns=kw["allow_patterns"], ignore_patterns=DEFAULT_IGNORE_PATTERNS
            )
        )
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{kw['repo_id']}/commit/abc"})()


def test_upload_sends_exactly_the_planned_files(tmp_path, capsys):
    folder = adapter_folder(tmp_path)
    touch(folder, "weird[1].json")  # a glob character in a name: uploaded as itself, nothing more
    touch(folder, "weird1.json")
    api = FakeApi()
    result = push(
        folder, "someone/finsent-lora", private=True, revision="v1", commit_message="first", api=api
    )
    assert [c for c, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][1] == {
        "repo_id": "someone/finsent-lora",
        "private": True,
        "repo_type": "model",
        "exist_ok": True,
    }
    assert api.calls[1][1]["branch"] == "v1"
    upload = api.calls[2][1]
    assert upload["revision"] == "v1" and upload["commit_message"] == "first"
    assert upload["repo_type"] == "model" and upload["folder_path"] == str(folder)
    assert api.uploaded == sorted(ADAPTER_FILES + ["weird1.json", "weird[1].json"])
    assert result["files"] == 9 and result["commit"].endswith("/commit/abc")
    assert "pushed adapter" in capsys.readouterr().out


def test_upload_errors_are_one_line_and_offline_refuses(tmp_path, monkeypatch):
    folder = adapter_folder(tmp_path)
    api = FakeApi(fail=RuntimeError("401 Client Error: Unauthorized for url\nmore detail"))
    with pytest.raises(
        FinsentError, match=r"^push to a/b failed: 401 Client Error: Unauthorized for url \(log in"
    ):
        push(folder, "a/b", api=api)
    # no fake: the real client would be used, but HF_HUB_OFFLINE (set for every test) stops it first
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FinsentError, match="HF_HUB_OFFLINE is set"):
        push(folder, "a/b")


def test_train_push_to_hub_passes_through_to_sft_config(tmp_path):
    from finsent.core.config import build_config
    from finsent.training.args import sft_config

    cfg = build_config(
        None,
        {
            "train.output_dir": str(tmp_path / "t"),
            "train.report_to": "none",
            "train.extra": json.dumps(
                {"push_to_hub": True, "hub_model_id": "someone/finsent-lora", "hub_private_repo": True}
            ),
        },
    )
    args = sft_config(cfg, on_cuda=False, n_eval=0)
    assert args.push_to_hub is True
    assert args.hub_model_id == "someone/finsent-lora" and args.hub_private_repo is True
