"""train.method=full under FSDP saves the whole model: 2 CPU processes (gloo) train the tiny Llama inside
PyTorch's FSDP (no LoRA), every rank gathers the state (parallel.gathered_state_dict) and rank 0 writes the
model folder as train.py does (parallel.save_model); the folder, read back, is the model that trained.
The adapter-only gather once wrote a model folder without a single weight (issue 25)."""

import pytest
from test_ddp_fast import TORCHRUN, launch_worker

pytestmark = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
KINDS = ["full-fsdp1", "full-fsdp1-flat", "full-fsdp2"]


@pytest.fixture(scope="module")
def saved(tiny_model_dir, tmp_path_factory) -> dict:
    """tests/fast_parallel_worker.py under torchrun, the full fine-tuning kinds only, in one launch."""
    return launch_worker(tiny_model_dir, tmp_path_factory.mktemp("full") / "out.json", KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_full_fine_tune_under_fsdp_saves_every_weight(saved, kind):
    """fsdp1: original parameters; fsdp1-flat: flat parameters (fsdp_use_orig_params false, as
    configs/accelerate/fsdp.yaml); fsdp2: fully_shard. 3 AdamW steps of 2 x 2 rows, against 1 x 4."""
    r = saved[kind]
    assert "error" not in r, r.get("error")
    assert r["missing_in_files"] == [], f"the model folder lacks {len(r['missing_in_files'])} weights"
    assert r["empty_in_files"] == [] and r["missing_on_load"] == []
    assert r["moved"] > 1e-4, "a weight did not train: the comparison would prove nothing"
    assert r["max_weight_diff"] < 1e-4, (
        f"saved weights differ from the trained ones by {r['max_weight_diff']:.3g}"
    )
    assert r["max_logit_diff"] < 1e-4  # the folder, loaded, gives the sharded model's logits


def test_an_empty_gathered_state_is_refused_not_saved(tiny, tmp_path):
    """The safety net: a gathered state without a weight (what the adapter-only gather gave a full
    fine-tune) stops the save in one line instead of writing a model folder without weights."""
    from finsent.core.errors import FinsentError
    from finsent.training.parallel import save_model

    with pytest.raises(FinsentError, match="gathered model state is empty"):
        save_model(tiny[0], tmp_path / "model", {})
    assert not (tmp_path / "model").exists()
    save_model(tiny[0], tmp_path / "whole", None)  # a model one process holds whole: its own state_dict
    assert (tmp_path / "whole" / "model.safetensors").is_file()


def test_the_adapter_part_keeps_what_lora_trains():
    """A gathered full state: the LoRA and DoRA tensors, and the biases lora.bias says train."""
    from types import SimpleNamespace

    from finsent.training.parallel import adapter_part

    state = dict.fromkeys(
        [
            "m.layers.0.q_proj.base_layer.weight",
            "m.layers.0.q_proj.base_layer.bias",
            "m.layers.0.q_proj.lora_A.default.weight",
            "m.layers.0.q_proj.lora_magnitude_vector.default.weight",
            "m.layers.0.norm.bias",
        ]
    )

    def kept(bias: str) -> set[str]:
        model = SimpleNamespace(active_adapter="default", peft_config={"default": SimpleNamespace(bias=bias)})
        return set(adapter_part(model, state))

    lora = {
        "m.layers.0.q_proj.lora_A.default.weight",
        "m.layers.0.q_proj.lora_magnitude_vector.default.weight",
    }
    assert kept("none") == lora
    assert kept("lora_only") == lora | {"m.layers.0.q_proj.base_layer.bias"}
    assert kept("all") == lora | {"m.layers.0.q_proj.base_layer.bias", "m.layers.0.norm.bias"}
