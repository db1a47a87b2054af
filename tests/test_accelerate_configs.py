"""The shipped accelerate configs (configs/accelerate/): each opens with the command that uses it, parses
with accelerate's own config class, and its documented `--dry-run` line runs; the per-device memory model
of `finsent train --dry-run` for DDP, FSDP and ZeRO-3."""

import math
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.fixture()
def finsent(capsys, monkeypatch):
    """`finsent ARGS` in this process, from the repository root (the documented relative paths):
    returncode, stdout and stderr. A subprocess each re-imported torch and transformers for a dry run's
    arithmetic; tests/test_train.py::test_dry_run_through_the_command_line runs one as a command."""
    from finsent.cli import main

    monkeypatch.chdir(ROOT)

    def run(*args: str) -> SimpleNamespace:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's usage errors, exit status 2 as on the command line
            code = e.code
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)

    return run


def test_the_four_configs_are_shipped():
    assert [p.name for p in CONFIGS] == ["ddp.yaml", "deepspeed-zero3.yaml", "fsdp-qlora.yaml", "fsdp.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_opens_with_its_command(path):
    from accelerate.commands.config.config_args import ClusterConfig

    first, second = path.read_text().splitlines()[:2]
    assert (
        f"accelerate launch --config_file configs/accelerate/{path.name} -m finsent train --config " in first
    )
    assert (
        second.startswith("# finsent train ")
        and f"--accelerate-config configs/accelerate/{path.name}" in second
    )
    raw = yaml.safe_load(path.read_text())
    cc = ClusterConfig.from_yaml_file(str(path))  # refuses unknown keys
    assert cc.num_processes == raw["num_processes"] >= 2
    kind = str(getattr(cc.distributed_type, "value", cc.distributed_type))
    assert (
        kind
        == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "fsdp-qlora": "FSDP", "deepspeed-zero3": "DEEPSPEED"}[
            path.stem
        ]
    )
    if kind == "FSDP":
        fc = raw["fsdp_config"]
        # train.fast needs FSDP1; PEFT's recipe: flat parameters with LoRA wrapped apart
        assert fc["fsdp_version"] == 1 and fc["fsdp_use_orig_params"] is False
        assert fc["fsdp_cpu_ram_efficient_loading"] is True and fc["fsdp_sync_module_states"] is True
    if path.stem == "fsdp-qlora":
        assert "--model.bnb_4bit_quant_storage bfloat16" in first and "--dtype bfloat16" in first
    if kind == "DEEPSPEED":
        assert raw["deepspeed_config"]["zero_stage"] == 3 and "finsent[deepspeed]" in first


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_documented_dry_run_runs(path, finsent):
    """The file's second line, as written, prints per-device memory for its processes and sharding."""
    second = path.read_text().splitlines()[1]
    args = shlex.split(second.lstrip("# "))
    assert args[:2] == ["finsent", "train"]
    r = finsent(*args[1:])
    assert r.returncode == 0, r.stderr[-2000:]
    n = yaml.safe_load(path.read_text())["num_processes"]
    assert f"processes        {n}, " in r.stdout and f"(from configs/accelerate/{path.name})" in r.stdout
    assert "per device" in r.stdout and "memory estimate" in r.stdout
    if path.stem == "ddp":
        assert "DDP (replicated)" in r.stdout and "(whole)" in r.stdout
    else:
        assert f"1/{n}" in r.stdout
    if path.stem == "fsdp-qlora":
        assert "weights offloaded to CPU" in r.stdout and "in CPU RAM" in r.stdout


def _mem(cfg, processes, strategy, offload=False):
    from finsent.training.dryrun import Parallelism, dry_run

    return dry_run(cfg, Parallelism(processes, strategy, offload))


def test_memory_per_device_sharded_against_replicated():
    from finsent.core.options import Config

    cfg = Config()
    cfg.data.data = "fpb"
    cfg.model.model, cfg.model.dtype = "meta-llama/Llama-2-7b-hf", "bfloat16"
    one = _mem(cfg, 1, "ddp")
    ddp, fsdp, zero3 = _mem(cfg, 8, "ddp"), _mem(cfg, 8, "fsdp"), _mem(cfg, 8, "zero3")
    whole = one["memory_estimate_gb"]
    assert whole["weights"] == pytest.approx(6.74 * 2, rel=0.01)  # 6.74B parameters in bf16
    assert ddp["memory_estimate_gb"] == whole  # DDP replicates everything
    layer = 202_383_360 * 2 / 1e9  # one Llama-2-7B decoder layer in bf16
    m = fsdp["memory_estimate_gb"]
    assert m["weights"] == pytest.approx(whole["weights"] / 8 + 2 * layer, abs=0.01)
    assert m["lora_and_optimizer"] == pytest.approx(whole["lora_and_optimizer"] / 8, abs=0.01)
    assert m["activations"] == whole["activations"]  # activations follow the per-device batch
    assert zero3["memory_estimate_gb"] == m
    epochs = math.ceil(cfg.train.num_train_epochs)  # steps per epoch: every process's batch counts
    per_epoch = ddp["optimizer_steps"] // epochs
    assert per_epoch * 8 >= one["optimizer_steps"] // epochs > (per_epoch - 1) * 8
    off = _mem(cfg, 8, "fsdp", offload=True)["memory_estimate_gb"]
    assert off["weights"] == pytest.approx(2 * layer, abs=0.01)
    assert off["cpu_ram_per_process"] == pytest.approx(whole["weights"] / 8, abs=0.01)


def test_qlora_70b_fits_two_24gb_cards_with_fsdp_offload():
    """The recipe's claim, by finsent's estimate: Llama-2-70B in 4-bit, 2 processes, offloaded."""
    from finsent.core.options import Config

    cfg = Config()
    cfg.data.data = "fpb"
    cfg.model.model, cfg.model.dtype, cfg.model.load_in_4bit = "meta-llama/Llama-2-70b-hf", "bfloat16", True
    cfg.train.per_device_train_batch_size, cfg.train.gradient_checkpointing = 1, True
    whole = _mem(cfg, 1, "ddp")["memory_estimate_gb"]
    assert 34 < whole["weights"] < 40  # 69B weights at ~4.1 bits, embeddings and head in bf16
    shard = _mem(cfg, 2, "fsdp", offload=True)["memory_estimate_gb"]
    assert shard["total"] < 24 and shard["cpu_ram_per_process"] == pytest.approx(
        whole["weights"] / 2, abs=0.01
    )


def test_flags_override_the_accelerate_config():
    from finsent.training.dryrun import parallelism

    par = parallelism(None, None, str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    assert (par.processes, par.strategy, par.offload_params) == (8, "fsdp", False)
    par = parallelism(4, "ddp", str(ROOT / "configs" / "accelerate" / "fsdp.yaml"))
    assert (par.processes, par.strategy) == (4, "ddp")
    par = parallelism(None, None, str(ROOT / "configs" / "accelerate" / "deepspeed-zero3.yaml"))
    assert (par.processes, par.strategy) == (8, "zero3")


def test_bad_input_is_one_line(tmp_path, finsent):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: FSDP\nnum_processes: 2\nno_such_key: 1\n")
    for args, message in [
        (["--accelerate-config", str(bad)], "had unknown keys (['no_such_key'])"),
        (["--accelerate-config", str(tmp_path / "missing.yaml")], "no such file"),
        (["--num-processes", "0"], "out of range"),
        (["--strategy", "zero2"], "invalid choice"),
    ]:
        r = finsent("train", "--model", "meta-llama/Llama-2-7b-hf", "--dry-run", *args)
        assert r.returncode == 2 and message in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    r = finsent("train", "--num-processes", "8")  # without --dry-run: nothing to estimate, nothing trained
    assert r.returncode == 2 and "go with --dry-run" in r.stderr and len(r.stderr.strip().splitlines()) == 1
