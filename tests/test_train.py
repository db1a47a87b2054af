"""Training, merging and resuming on the tiny random Llama (real PEFT, real SFTTrainer)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from finsent.core.config import build_config, load_saved_config
from finsent.core.errors import FinsentError
from finsent.core.options import Config
from finsent.data.dataset import Example

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["profit", "loss", "contract", "sales", "jobs", "company", "value", "period"]


def toy_splits(n_per_label: int = 24):
    """A learnable task: the label is decided by one word of the sentence."""
    import random

    rng = random.Random(0)
    key = {"positive": "rose", "negative": "fell", "neutral": "said"}
    out = {"train": [], "eval": [], "test": []}
    row = 0
    for split, n in (("train", n_per_label), ("eval", 6), ("test", 6)):
        for label, verb in key.items():
            for _ in range(n):
                text = f"The {rng.choice(WORDS)} {verb} {rng.choice(WORDS)} ."
                out[split].append(Example(row, text, label))
                row += 1
    return out


def toy_csv(path: Path, n_per_label: int) -> Path:
    """toy_splits() written as one text,label CSV (for `finsent run`, which splits it itself)."""
    import csv

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for split in toy_splits(n_per_label).values():
            w.writerows([e.text, e.label] for e in split)
    return path


def tiny_config(model_dir, out, **train) -> Config:
    cfg = build_config(ROOT / "configs" / "smollm2-cpu.yaml")
    cfg.model.model = str(model_dir)
    cfg.model.dtype = "float32"
    cfg.train.output_dir = str(out)
    cfg.train.report_to = "none"
    cfg.train.logging_steps = 1
    cfg.train.learning_rate = 5e-3
    cfg.lora.r = 8
    cfg.lora.lora_alpha = 16
    cfg.train.method = "lora"  # the CPU config fully fine-tunes; these tests are about LoRA unless told
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_only_lora_weights_change_and_loss_falls(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from finsent.training.train import train

    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=4.0)
    adapter = train(cfg, toy_splits())
    weights = load_file(adapter / "adapter_model.safetensors")
    assert weights and all("lora_" in k for k in weights)
    # the weights keep the user's usual mode, as every output (transformers writes them 0600)
    mask = os.umask(0)
    os.umask(mask)
    assert (adapter / "adapter_model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask
    # the base folder is untouched: every base weight equals the saved tiny model's
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    from peft import PeftModel

    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), adapter
    )
    base_sd = base.state_dict()
    for name, p in tuned.named_parameters():
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, base_sd[key]), name
    log = json.loads((tmp_path / "t" / "train_log.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    assert any("eval_accuracy" in h for h in log["log_history"])
    assert load_saved_config(adapter).model.model == str(tiny_model_dir)


def test_save_load_identical_logits_and_merged_equals_unmerged(tiny_model_dir, tmp_path):
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from finsent.training.args import lora_config

    cfg = tiny_config(tiny_model_dir, tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(base, lora_config(cfg, base))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # B starts at zero; make the adapter do something
    model.eval()
    ids = torch.tensor([[1, 5, 9, 30, 42, 7]])
    before = model(input_ids=ids).logits
    model.save_pretrained(tmp_path / "a")
    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), tmp_path / "a"
    ).eval()
    after = loaded(input_ids=ids).logits
    assert torch.equal(before, after)
    base_logits = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(
        input_ids=ids
    ).logits
    assert not torch.allclose(before, base_logits, atol=1e-3)
    merged = loaded.merge_and_unload()
    torch.testing.assert_close(merged(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)


def test_merge_command_checks_parity(tiny_model_dir, tmp_path):
    from finsent.deploy.merge import merge
    from finsent.training.train import train

    splits = toy_splits(8)
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    adapter = train(cfg, splits)
    parity = merge(cfg, adapter, tmp_path / "merged", eval_examples=splits["eval"])
    assert parity["agreement"] == 1.0 and parity["max_probability_difference"] < 1e-4
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert load_saved_config(tmp_path / "merged").model.model == str((tmp_path / "merged").resolve())
    assert parity["reference"] == "adapter on a float32 base"
    # the temperature fitted on the eval split after training travels with the merged model
    from finsent.modeling.calibration import Calibration

    cal = Calibration.load(adapter)
    assert cal is not None and cal.fitted_on == "eval split (18 sentences)" and cal.temperature > 0
    assert cal.train_priors == [1 / 3] * 3 and cal.labels == ["positive", "neutral", "negative"]
    assert Calibration.load(tmp_path / "merged") == cal
    # the merge replaces --out whole: only an earlier merge's folder (or a new or empty one) is replaced;
    # a killed merge's staging copy goes when the next merge there starts
    (tmp_path / ".merged.partial-abc123").mkdir()
    merge(cfg, adapter, tmp_path / "merged", eval_examples=splits["eval"])
    assert not (tmp_path / ".merged.partial-abc123").exists()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep")
    (tmp_path / "afile").write_text("keep")
    for out, why in (
        (tmp_path / "t", f"--out {tmp_path / 't'} holds the adapter {adapter}"),
        (tmp_path / "notes", "holds files that are not a merged model finsent wrote (no merge_parity.json)"),
        (tmp_path / "afile", "is a file, not a folder"),
    ):
        with pytest.raises(FinsentError, match=re.escape(why)):
            merge(cfg, adapter, out, eval_examples=splits["eval"])
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep" and (
        adapter / "adapter_config.json"
    ).is_file()


def test_qlora_merge_names_the_pair_it_compared(tiny_model_dir, tmp_path, capsys):
    """A QLoRA adapter is compared with what was trained (its 4-bit base) where CUDA + bitsandbytes
    exist; on this CPU the merge says in one line that it compares against a float32 base instead."""
    import torch

    from finsent.deploy.merge import merge
    from finsent.training.train import train

    splits = toy_splits(8)
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    adapter = train(cfg, splits)
    cfg.model.load_in_4bit = True  # as the notebooks' QLoRA config says
    capsys.readouterr()
    parity = merge(cfg, adapter, tmp_path / "merged", eval_examples=splits["eval"])
    err = capsys.readouterr().err
    if torch.cuda.is_available():
        assert parity["reference"] == "adapter on its 4-bit base (as trained)"
    else:
        assert [ln for ln in err.splitlines() if "4-bit base" in ln] == [
            "note: the adapter was trained on a 4-bit base, which needs CUDA + bitsandbytes: comparing the "
            "merged model with the adapter on a float32 base instead"
        ]
        assert parity["reference"].startswith("adapter on a float32 base (the 4-bit base")
    assert (
        json.loads((tmp_path / "merged" / "merge_parity.json").read_text())["reference"]
        == parity["reference"]
    )


def test_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from finsent.training.train import train

    splits = toy_splits(24)  # 72 examples, batch 16: 5 steps per epoch, a checkpoint per epoch
    full = tiny_config(tiny_model_dir, tmp_path / "full", num_train_epochs=2.0, save_total_limit=0)
    train(full, splits)
    reference = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    ref_log = json.loads((tmp_path / "full" / "train_log.json").read_text())
    # "kill" the run after its first checkpoint: keep checkpoint-5 only, then resume
    checkpoints = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert [p.name for p in checkpoints] == ["checkpoint-5", "checkpoint-10"]
    shutil.rmtree(checkpoints[1])
    shutil.rmtree(tmp_path / "full" / "adapter")
    resumed = tiny_config(tiny_model_dir, tmp_path / "full", num_train_epochs=2.0, resume=True)
    train(resumed, splits)
    log = json.loads((tmp_path / "full" / "train_log.json").read_text())
    assert log["global_step"] == 10
    assert log["resumed_from"] == "checkpoint-5"
    again = load_file(tmp_path / "full" / "adapter" / "adapter_model.safetensors")
    for k in reference:
        torch.testing.assert_close(again[k], reference[k], atol=1e-5, rtol=1e-4)
    last = [h["loss"] for h in ref_log["log_history"] if "loss" in h][-1]
    assert [h["loss"] for h in log["log_history"] if "loss" in h][-1] == pytest.approx(last, rel=1e-4)


def test_truncation_guard(tiny_model_dir, tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.training.train import train

    cfg = tiny_config(tiny_model_dir, tmp_path, max_seq_length=20)
    with pytest.raises(FinsentError, match="cut off the label"):
        train(cfg, toy_splits(2))


def dry_run_args(name: str) -> list[str]:
    text = (ROOT / "configs" / name).read_text()
    assert text.startswith("# finsent "), "each config opens with the command that runs it"
    # configs for your own data name none
    return ["train", "--config", f"configs/{name}", "--dry-run"] + (
        [] if "\n  data: " in text or "\n  sources:" in text else ["--data", "fpb"]
    )


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_every_shipped_config_parses_and_dry_runs(name, capsys, monkeypatch):
    """In this process (a subprocess each re-imported torch and transformers for some arithmetic);
    test_dry_run_through_the_command_line runs one as a command."""
    from finsent.cli import main

    monkeypatch.chdir(ROOT)  # the documented relative paths
    assert main(dry_run_args(name)) == 0
    out = capsys.readouterr().out
    assert "trainable" in out and "optimizer steps" in out and "memory estimate" in out


def test_dry_run_through_the_command_line(capsys, monkeypatch):
    """`python -m finsent.cli train --config ... --dry-run` as a command prints what main() prints."""
    from finsent.cli import main

    args = dry_run_args("llama-3.2-1b-notebook.yaml")
    r = subprocess.run(
        [sys.executable, "-m", "finsent.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    monkeypatch.chdir(ROOT)
    assert main(args) == 0
    assert r.stdout == capsys.readouterr().out and "memory estimate" in r.stdout


def test_notebook_names_map_onto_todays_api(tiny_model_dir, tmp_path):
    from finsent.training.args import sft_config

    cfg = build_config(ROOT / "configs" / "llama-3.2-1b-notebook.yaml")
    cfg.train.output_dir = str(tmp_path)
    args = sft_config(cfg, on_cuda=False, n_eval=10)
    assert args.optim == "adamw_torch" and not args.fp16  # CUDA-only choices swapped on CPU, with a note
    assert args.warmup_steps == pytest.approx(0.03)  # warmup_ratio
    assert args.train_sampling_strategy == "group_by_length"  # group_by_length
    assert args.eval_strategy == "epoch"  # evaluation_strategy
    assert args.max_length == 512  # max_seq_length
    assert args.gradient_accumulation_steps == 8 and args.max_grad_norm == 0.3
    assert args.lr_scheduler_type == "cosine" and args.weight_decay == 0.001


def test_4bit_config_is_the_notebooks(tiny_model_dir):
    from finsent.modeling.load import bnb_config

    cfg = build_config(ROOT / "configs" / "llama-2-7b-notebook.yaml")
    q = bnb_config(cfg.model)
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.float16


def test_evaluate_reads_base_model_and_labels_from_the_adapter(tiny_model_dir, tmp_path, all_data):
    """`finsent evaluate --adapter DIR` needs no --model, --labels or --template: the adapter's config has them."""
    from finsent.cli import main
    from finsent.training.train import train

    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    cfg.prompt.label_words = "positive=up,negative=down,neutral=flat"
    adapter = train(cfg, toy_splits(4))
    out = tmp_path / "ev"
    assert (
        main(
            [
                "evaluate",
                "--adapter",
                str(adapter),
                "--data",
                str(all_data),
                "--limit",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == str(tiny_model_dir) and m["adapter"] == str(adapter) and m["n"] == 6
    assert load_saved_config(out).prompt.label_words == "positive=up,negative=down,neutral=flat"


def test_run_pipeline_reports_every_stage(tiny_model_dir, tmp_path):
    """`finsent run` end to end: zero-shot, train, adapter and merged evaluations, parity on the test split."""
    from finsent.pipeline.run import run

    data = toy_csv(tmp_path / "toy.csv", 30)
    rows = data.read_text().splitlines()[1:]  # the toy sentences repeat: a flaw the report must carry
    assert len(rows) > len(set(rows))
    copies = f"duplicate sentences: {len(rows) - len(set(rows))} extra copies"
    cfg = tiny_config(tiny_model_dir, tmp_path / "unused", num_train_epochs=6.0)
    cfg.data.data, cfg.data.split, cfg.data.test_size = str(data), "stratified", 0.2
    summary = run(cfg, tmp_path / "run")
    assert summary["data_flaws"] == [copies]
    n_test = summary["baseline"]["n"]
    assert n_test == summary["finetuned"]["n"] == summary["merged"]["n"] > 0
    assert summary["finetuned"]["accuracy"] > summary["baseline"]["accuracy"]
    parity = summary["merged"]["merge_parity"]
    assert parity["split"] == "test split" and parity["n"] == n_test and parity["agreement"] == 1.0
    assert set(summary["timings"]) == {"data", "baseline", "train", "finetuned", "merge", "merged", "total"}
    out = tmp_path / "run"
    assert "Merge parity (test split): 100.0%" in (out / "report.md").read_text()
    assert json.loads((out / "merged_model" / "merge_parity.json").read_text()) == parity
    for f in ("summary.json", "loss_curve.png", "finsent_config.yaml", "merged_model/model.safetensors"):
        assert (out / f).is_file(), f
    # calibration: fitted after training, applied to both tuned evaluations, none for the zero-shot model
    cal = summary["merged"]["calibration"]
    assert cal["temperature"] == summary["finetuned"]["calibration"]["temperature"] > 0
    assert cal["ece_after"] is not None and summary["baseline"]["calibration"]["temperature"] is None
    report = (out / "report.md").read_text()
    assert f"- data: {copies}" in report
    assert (
        "| merged |" in report and "ECE before" in report and (out / "merged" / "reliability.png").is_file()
    )
    assert ("Most confident mistakes" in report) == (summary["merged"]["accuracy"] < 1)
    assert (out / "merged" / "errors.csv").is_file() and (out / "merged_model" / "calibration.json").is_file()
    # certified in a staging folder before it took its name: its card and metrics name the final folder
    card = (out / "merged_model" / "README.md").read_text()
    assert str((out / "merged_model").resolve()) in card and ".partial-" not in card
    assert json.loads((out / "merged_model" / "metrics.json").read_text())["model"] == str(
        out / "merged_model"
    )
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_parity_check_fails_below_the_required_agreement(tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.core.parity import certify

    def check(before, after):
        report = tmp_path / "merge_parity.json"
        return certify(before, after, report, where="eval split", what="merged", min_agreement=0.995)

    adapter = (["positive", "negative"], [[0.9, 0.1], [0.2, 0.8]])
    same = check(adapter, adapter)
    assert same["agreement"] == 1.0 and same["max_probability_difference"] == 0.0
    flipped = (["positive", "positive"], [[0.9, 0.1], [0.6, 0.4]])
    with pytest.raises(FinsentError, match="only 50.0% of the eval split"):
        check(adapter, flipped)
    assert json.loads((tmp_path / "merge_parity.json").read_text())["agreement"] == 0.5


def test_parse_layers():
    from finsent.core.errors import FinsentError
    from finsent.training.args import parse_layers

    assert parse_layers("all") is None
    assert parse_layers("15-17") == [15, 16, 17]
    assert parse_layers("0, 2,4-5") == [0, 2, 4, 5]
    for bad in ("top", "5-2", "-1", "1-x", ""):
        with pytest.raises(FinsentError, match="lora.layers_to_transform"):
            parse_layers(bad)


def test_lora_on_the_top_layers_only(tiny_model_dir, tmp_path):
    """layers_to_transform with all-linear: every linear layer of layer 1 gets LoRA, none of layer 0,
    the adapter trains and reloads."""
    from safetensors.torch import load_file

    from finsent.training.train import train

    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    cfg.lora.layers_to_transform = "1"
    adapter = train(cfg, toy_splits(8))
    names = list(load_file(adapter / "adapter_model.safetensors"))
    assert names and all(".layers.1." in n for n in names)
    modules = {n.split(".layers.1.")[1].rsplit(".lora_", 1)[0] for n in names}
    assert modules == {f"self_attn.{p}_proj" for p in "qkvo"} | {
        f"mlp.{p}_proj" for p in ("gate", "up", "down")
    }
    from finsent.modeling.load import load_model

    model, _, _ = load_model(cfg.model, str(adapter))  # PEFT reloads it onto a fresh base
    assert sum("lora_A" in n for n, _ in model.named_parameters()) == 7


def test_fp16_recipe_keeps_lora_weights_in_float32(tiny_model_dir, tmp_path):
    """TRL casts a 4-bit model's LoRA weights to bf16, which fp16's gradient scaler cannot unscale (seen
    on an H100): upcast_trainable puts the trainable ones back in float32 and leaves frozen weights alone."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from finsent.training.args import lora_config
    from finsent.training.trainer import upcast_trainable

    cfg = tiny_config(tiny_model_dir, tmp_path)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    model = get_peft_model(base, lora_config(cfg, base))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)  # what TRL's SFTTrainer does to a quantized model's adapter
    n_lora = sum(p.requires_grad for p in model.parameters())
    assert upcast_trainable(model) == n_lora > 0
    for p in model.parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16)


def test_train_refuses_an_earlier_run_without_resume_or_overwrite(tiny_model_dir, tmp_path, capsys, all_data):
    from finsent.cli import main
    from finsent.core.errors import FinsentError
    from finsent.training.train import train

    splits = toy_splits(8)
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    train(cfg, splits)
    first = (tmp_path / "t" / "adapter" / "adapter_model.safetensors").read_bytes()
    with pytest.raises(
        FinsentError, match="already holds a training run: pass --resume to continue it, or --overwrite"
    ):
        train(cfg, splits)
    assert (tmp_path / "t" / "adapter" / "adapter_model.safetensors").read_bytes() == first  # untouched
    cfg.train.overwrite = True
    train(cfg, splits)
    assert "--overwrite: cleared the earlier training run" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "t").glob("checkpoint-*")) == ["checkpoint-2"]
    # and from the command line: one line, exit status 2, before any model is loaded
    capsys.readouterr()
    code = main(
        ["train", "--model", str(tiny_model_dir), "--data", str(all_data), "--out", str(tmp_path / "t")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--overwrite to start again" in err


def test_train_reports_the_datas_flaws_once(tiny_model_dir, tmp_path, capsys):
    """`finsent train` splits the data itself and prints its flaw report (here: each label's 6 eval rows
    are the 2 sentences train and test left, drawn with replacement), once, on stderr."""
    from finsent.training.train import train

    data = tmp_path / "few.csv"
    verbs = {"positive": "rose", "neutral": "said", "negative": "fell"}
    lines = [f"{lab},The {w} {v} ." for lab, v in verbs.items() for w in WORDS[:6]]
    data.write_text("\n".join(lines) + "\n")
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    cfg.data.data, cfg.data.train_per_label, cfg.data.test_per_label = str(data), 2, 2
    cfg.data.eval_per_label, cfg.data.split = 6, "notebook"
    train(cfg)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("data: eval split")]
    assert [line.split("'")[1] for line in err] == ["positive", "neutral", "negative"]
    assert all("6 '" in line and "only 2 distinct sentence(s)" in line for line in err)


def test_resume_checks_options_and_data_before_trusting_a_checkpoint(tiny_model_dir, tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.training.train import train

    splits = toy_splits(8)
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0)
    train(cfg, splits)
    other_lr = tiny_config(
        tiny_model_dir, tmp_path / "t", num_train_epochs=1.0, resume=True, learning_rate=1e-3
    )
    with pytest.raises(FinsentError, match="--resume: .* was trained with other options"):
        train(other_lr, splits)
    other_data = toy_splits(9)
    same = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=1.0, resume=True)
    with pytest.raises(FinsentError, match="--resume: .* was trained with other training data"):
        train(same, other_data)


def test_resume_skips_a_checkpoint_cut_off_mid_save(tiny_model_dir, tmp_path, capsys):
    from finsent.training.train import train

    splits = toy_splits(24)  # 5 steps per epoch, a checkpoint per epoch
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=2.0, save_total_limit=0)
    train(cfg, splits)
    # a kill while checkpoint-10 was being written: its trainer state cut off, its optimizer not saved
    state = tmp_path / "t" / "checkpoint-10" / "trainer_state.json"
    state.write_text(state.read_text()[:40])
    (tmp_path / "t" / "checkpoint-10" / "optimizer.pt").unlink()
    capsys.readouterr()
    train(tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=2.0, resume=True), splits)
    assert "--resume: skipping checkpoint-10 (missing its optimizer state" in capsys.readouterr().err
    log = json.loads((tmp_path / "t" / "train_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-5" and log["global_step"] == 10


def test_a_merge_that_fails_its_parity_gate_is_moved_aside(tmp_path):
    from finsent.core.errors import FinsentError
    from finsent.deploy.merge import certify_merge

    out = tmp_path / "merged"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    adapter = (["positive", "negative"], [[0.9, 0.1], [0.2, 0.8]])
    flipped = (["positive", "positive"], [[0.9, 0.1], [0.6, 0.4]])
    with pytest.raises(FinsentError, match="moved to .*merged.rejected"):
        certify_merge(Config(), "adapter", out, adapter, flipped, "eval split")
    assert not out.exists()  # nothing under the accepted name
    rejected = tmp_path / "merged.rejected"
    assert (rejected / "model.safetensors").is_file() and "50.0%" in (rejected / "REJECTED.txt").read_text()
    assert not (rejected / "README.md").exists()  # no model card: it was never certified


def test_a_staged_merge_that_fails_its_gate_never_takes_the_name(tmp_path):
    """As `finsent run` and `finsent merge` certify: in atomic_dir's staging folder. A failure goes to
    NAME.rejected; an earlier certified folder under NAME stays; the messages name where it lies."""
    from finsent.core.errors import FinsentError
    from finsent.core.fsio import atomic_dir
    from finsent.deploy.merge import certify_merge

    out = tmp_path / "merged"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"earlier, certified")
    adapter = (["positive", "negative"], [[0.9, 0.1], [0.2, 0.8]])
    flipped = (["positive", "positive"], [[0.9, 0.1], [0.6, 0.4]])
    with pytest.raises(FinsentError) as e, atomic_dir(out, judge=False) as staging:
        (staging / "model.safetensors").write_bytes(b"new weights")
        certify_merge(Config(), "adapter", staging, adapter, flipped, "eval split", name=out)
    rejected = tmp_path / "merged.rejected"
    assert f"see {rejected / 'merge_parity.json'}" in str(e.value) and ".partial-" not in str(e.value)
    assert (rejected / "model.safetensors").read_bytes() == b"new weights"
    assert ".partial-" not in (rejected / "REJECTED.txt").read_text()
    assert (out / "model.safetensors").read_bytes() == b"earlier, certified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged", "merged.rejected"]


def test_atomic_folders_replace_only_when_complete(tmp_path):
    from finsent.core.fsio import atomic_dir

    target = tmp_path / "adapter"
    with atomic_dir(target) as tmp:
        (tmp / "a.bin").write_text("first")
    assert (target / "a.bin").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.bin").write_text("half")
        raise RuntimeError("killed while saving")
    assert (target / "a.bin").read_text() == "first"  # the earlier complete folder is kept
    with atomic_dir(target) as tmp:
        (tmp / "b.bin").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no temporary folders left


def test_full_fine_tuning_trains_every_weight_into_a_whole_model(tiny_model_dir, tmp_path):
    """train.method=full: every weight moves, the output is a plain transformers model (no adapter) whose
    saved config names its own folder, and the reloaded model classifies the toy task better than the base."""
    from safetensors.torch import load_file

    from finsent.serving.api import Classifier
    from finsent.training.train import train

    # the random tiny model learns the toy task's words slowly: 10 epochs at 1e-2 (0.61 test accuracy)
    cfg = tiny_config(tiny_model_dir, tmp_path / "t", num_train_epochs=10.0, method="full")
    cfg.train.learning_rate = 1e-2
    folder = train(cfg, toy_splits())
    assert folder.name == "model" and not (folder / "adapter_config.json").exists()
    base = load_file(tiny_model_dir / "model.safetensors")
    tuned = load_file(folder / "model.safetensors")
    assert set(tuned) == set(base)
    unchanged = [k for k in base if torch.equal(base[k], tuned[k])]
    assert unchanged == [], unchanged
    assert all(t.dtype == torch.float32 for t in tuned.values())
    saved = load_saved_config(folder)
    assert saved.model.model == str(folder.resolve()) and saved.train.method == "full"
    log = json.loads((tmp_path / "t" / "train_log.json").read_text())
    losses = [h["loss"] for h in log["log_history"] if "loss" in h]
    assert losses[-1] < 0.5 * losses[0], losses
    test = toy_splits()["test"]

    def accuracy(clf):
        return sum(r["label"] == e.label for r, e in zip(clf([e.text for e in test]), test)) / len(test)

    assert accuracy(Classifier.load(str(folder))) > accuracy(Classifier.load(str(tiny_model_dir)))


def test_full_fine_tuning_keeps_float32_weights_under_autocast(tiny_model_dir, tmp_path):
    """dtype auto + method full: float32 weights, and bf16 autocast exactly where auto would load bf16."""
    from finsent.modeling.device import cpu_has_bf16
    from finsent.training.train import full_precision

    cfg = tiny_config(tiny_model_dir, tmp_path / "t", method="full")
    cfg.model.dtype = "auto"
    full_precision(cfg)
    assert cfg.model.dtype == "float32" and cfg.train.bf16 == cpu_has_bf16() and not cfg.train.fp16
    cfg.model.dtype = "bfloat16"  # an explicit dtype is the user's choice
    full_precision(cfg)
    assert cfg.model.dtype == "bfloat16"
    cfg.model.load_in_4bit = True
    with pytest.raises(Exception, match="train.method=full trains every weight"):
        cfg.validate()


def test_run_pipeline_with_full_fine_tuning(tiny_model_dir, tmp_path):
    """`finsent run` with train.method=full: no adapter, nothing to merge; merged_model/ is the trained
    model's copy, reloaded and checked against it on the test split like a merge."""
    from finsent.pipeline.run import run

    data = toy_csv(tmp_path / "toy.csv", 12)
    cfg = tiny_config(tiny_model_dir, tmp_path / "unused", num_train_epochs=1.0, method="full")
    cfg.data.data, cfg.data.split, cfg.data.test_size = str(data), "stratified", 0.2
    summary = run(cfg, tmp_path / "run")
    out = tmp_path / "run"
    assert (
        not (out / "train" / "adapter").exists() and (out / "train" / "model" / "model.safetensors").is_file()
    )
    parity = summary["merged"]["merge_parity"]
    # measured: the copy, reloaded from disk, re-scored the first test sentences as the tuned model did
    # (merged accuracy == fine-tuned accuracy is not asserted: the run copies that number for a copy)
    assert parity["agreement"] == 1.0 and parity["reference"] == "fully fine-tuned model"
    merged = out / "merged_model"
    assert load_saved_config(merged).model.model == str(merged.resolve())
    assert (merged / "calibration.json").is_file() and "finsent full" in (merged / "README.md").read_text()
    assert "| fine-tuned (every weight) |" in (out / "report.md").read_text()


def test_dry_run_counts_full_fine_tuning():
    """--dry-run of the CPU config (train.method=full, SmolLM2-135M): every parameter trains, float32
    weights (dtype auto), and float32 gradients + two AdamW moments for all of them; LoRA r=64 trains
    19.5M, 14.5% of the base."""
    from finsent.training.dryrun import dry_run, report

    cfg = build_config(ROOT / "configs" / "smollm2-cpu.yaml")
    assert cfg.train.method == "full" and cfg.model.dtype == "auto"
    cfg.data.data = "fpb"  # the shipped configs name no data
    full = dry_run(cfg)
    n = full["total_parameters"]
    assert full["trainable_parameters"] == n and full["trainable_percent"] == 100
    mem = full["memory_estimate_gb"]
    assert mem["weights_whole_model"] == round(n * 4 / 1e9, 2)
    assert mem["lora_and_optimizer"] == round(n * 12 / 1e9, 2)
    assert mem["weights_whole_model"] > 0.5 and "gradients + optimizer" in report(cfg, full)
    cfg.train.method = "lora"
    lora = dry_run(cfg)
    assert 14 < lora["trainable_percent"] < 15 and "LoRA + optimizer" in report(cfg, lora)


def test_run_full_fine_tuning_checks_its_copy_by_bytes_and_a_reload(tiny_model_dir, tmp_path):
    """train.method=full: merged_model/ is a copy; its files are compared byte for byte with the evaluated
    model and its first test sentences re-scored from disk. The run writes the tuned model's predictions
    and accuracy under merged/ for the copy (comparing those two would compare a value with itself): the
    copy on disk is scored here, on the whole test split, and must predict what merged/ reports."""
    import csv

    from finsent.pipeline.run import COPY_SAMPLE, run
    from finsent.serving.api import Classifier

    data = toy_csv(tmp_path / "toy.csv", 30)
    cfg = tiny_config(tiny_model_dir, tmp_path / "unused", num_train_epochs=1.0)
    cfg.data.data, cfg.data.split, cfg.data.test_size = str(data), "stratified", 0.2
    cfg.train.method, cfg.train.learning_rate = "full", 1e-4
    summary = run(cfg, tmp_path / "run")
    parity = summary["merged"]["merge_parity"]
    n_test = summary["finetuned"]["n"]
    assert parity["identical_files"] >= 3 and parity["agreement"] == 1.0
    assert parity["n"] == min(COPY_SAMPLE, n_test) and parity["max_probability_difference"] == 0.0
    out = tmp_path / "run"
    rows = list(csv.DictReader((out / "merged" / "predictions.csv").open()))
    assert len(rows) == n_test
    scored = Classifier.load(str(out / "merged_model"), dtype="float32")([r["text"] for r in rows])
    assert [s["label"] for s in scored] == [r["predicted"] for r in rows]
    accuracy = sum(s["label"] == r["label"] for s, r in zip(scored, rows)) / n_test
    assert summary["merged"]["accuracy"] == pytest.approx(accuracy)
    assert "byte-identical copy" in (out / "report.md").read_text()


def test_identical_files_sees_one_changed_byte_and_a_missing_file(tmp_path):
    from finsent.deploy.merge import identical_files

    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        (d / "sub").mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"\x00" * 1000)
        (d / "sub" / "tokenizer.json").write_text("{}")
    (a / "finsent_config.yaml").write_text("model: a")  # names its own folder: not compared
    (b / "finsent_config.yaml").write_text("model: b")
    assert identical_files(a, b) == 2
    (b / "model.safetensors").write_bytes(b"\x00" * 999 + b"\x01")
    assert identical_files(a, b) == 0
    (b / "model.safetensors").write_bytes(b"\x00" * 1000)
    (b / "sub" / "tokenizer.json").unlink()
    assert identical_files(a, b) == 0


def test_resume_from_a_checkpoint_at_max_steps_trains_no_step_more(tiny_model_dir, tmp_path):
    """A kill while the model was saved, after the last checkpoint (train.max_steps): --resume ends where
    the uninterrupted run ended. transformers' Trainer alone trains one step more before it counts."""
    import shutil

    from safetensors.torch import load_file

    from finsent.training.train import train

    splits = toy_splits(24)
    opts = dict(max_steps=2, save_steps=1, lr_scheduler_type="constant", save_total_limit=0)
    train(tiny_config(tiny_model_dir, tmp_path / "t", **opts), splits)
    reference = load_file(tmp_path / "t" / "adapter" / "adapter_model.safetensors")
    shutil.rmtree(tmp_path / "t" / "adapter")  # killed in the model's save: checkpoint-2 is the last
    (tmp_path / "t" / "train_log.json").unlink()
    train(tiny_config(tiny_model_dir, tmp_path / "t", resume=True, **opts), splits)
    log = json.loads((tmp_path / "t" / "train_log.json").read_text())
    assert log["resumed_from"] == "checkpoint-2" and log["global_step"] == 2
    assert not (tmp_path / "t" / "checkpoint-3").exists()
    again = load_file(tmp_path / "t" / "adapter" / "adapter_model.safetensors")
    for k in reference:
        assert torch.equal(again[k], reference[k]), k


def test_bad_trainer_options_are_refused_before_the_folder_is_stamped(tiny_model_dir, tmp_path):
    """Options transformers refuses only once the model has loaded, and train.extra keys that would
    override finsent's own settings, are one line before anything is written; a run refused (or killed)
    before it saved anything does not block the corrected rerun."""
    from finsent.training.train import train

    splits = toy_splits(8)
    out = tmp_path / "t"
    for opts, message in (
        ({"lr_scheduler_type": "bogus"}, "train.lr_scheduler_type: 'bogus' is not one of linear, cosine"),
        ({"optim": "bogus"}, "train.optim: 'bogus' is not one of adamw_torch"),
        ({"evaluation_strategy": "sometimes"}, "train.evaluation_strategy: 'sometimes' is not one of no"),
        ({"extra": {"max_length": 85}}, "train.extra.max_length: finsent sets it from train.max_seq_length"),
        (
            {"extra": {"save_strategy": "no"}},
            "train.extra.save_strategy: finsent sets it from train.save_steps",
        ),
        ({"extra": {"completion_only_loss": False}}, "train.extra.completion_only_loss: finsent keeps it"),
    ):
        with pytest.raises(FinsentError, match=re.escape(message)):
            train(tiny_config(tiny_model_dir, out, num_train_epochs=1.0, **opts), splits)
        assert not out.exists()
    # a run stamped, then killed before its first checkpoint: the stamp alone is no run to protect
    out.mkdir()
    (out / "run_stamp.json").write_text('{"config_hash": "x", "data_fingerprint": "y"}')
    train(tiny_config(tiny_model_dir, out, num_train_epochs=1.0, learning_rate=1e-3), splits)
    assert json.loads((out / "train_log.json").read_text())["resumed_from"] is None


def test_a_refused_run_changes_nothing_in_the_finished_runs_folder(
    tiny_model_dir, tmp_path, all_data, capsys
):
    """`finsent run` into a finished run's folder, without --resume or --overwrite: refused before its
    config or zero-shot evaluation is written over the finished run's."""
    from finsent.cli import main

    run = tmp_path / "r"
    (run / "train" / "model").mkdir(parents=True)  # a finished run's training
    (run / "finsent_config.yaml").write_text("the finished run's\n")
    (run / "baseline").mkdir()
    (run / "baseline" / "metrics.json").write_text("{}\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code = main(["run", "--model", str(tiny_model_dir), "--data", str(all_data), "--out", str(run)])
    assert code == 2 and "already holds a training run: pass --resume" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_folder_with_someone_elses_runs_folder_is_not_taken_for_a_killed_run(tiny_model_dir, tmp_path):
    """Only a stamped run's TensorBoard logs are leftovers: a `runs/` folder with no stamp beside it (a
    project root's runs/) makes the folder a used one, refused without --overwrite, never cleared."""
    from finsent.training.train import train

    out = tmp_path / "project"
    (out / "runs" / "demo").mkdir(parents=True)
    (out / "runs" / "demo" / "summary.json").write_text("{}")
    with pytest.raises(FinsentError, match="already holds a training run"):
        train(tiny_config(tiny_model_dir, out, num_train_epochs=1.0), toy_splits(8))
    assert (out / "runs" / "demo" / "summary.json").is_file()


def test_run_resume_with_other_options_is_refused_before_the_folder_changes(
    tiny_model_dir, tmp_path, all_data, capsys
):
    from finsent.cli import main

    run = tmp_path / "r"
    (run / "train" / "checkpoint-1").mkdir(parents=True)
    (run / "train" / "run_stamp.json").write_text('{"config_hash": "other", "data_fingerprint": "other"}')
    (run / "finsent_config.yaml").write_text("the finished run's\n")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code = main(
        ["run", "--model", str(tiny_model_dir), "--data", str(all_data), "--out", str(run), "--resume"]
    )
    assert code == 2 and "was trained with other options" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert not (run / "baseline").exists()
