# bash bench/gpu_check.sh TOKENIZER_DIR ALL_DATA_CSV OUT_DIR
#
# The CUDA paths on one GPU, with no hub access: the test suite's scorer and trainer tests with CUDA
# visible, the notebooks' QLoRA recipe (4-bit NF4, paged AdamW, fp16, gradient checkpointing) against
# finsent's fast path on a randomly initialised model of Llama 3.2 1B's shape (the tokenizer's
# vocabulary), the adapter evaluated on its 4-bit base, a float32 merge with its parity check, and
# python -m bench.predict. Random weights: the accuracies mean nothing, the speeds and the wiring do.
# Each step is time-limited and logged; a failing step does not stop the others. ONLY="build tests ..."
# runs a subset of the steps.
set -u
TOK=$1 DATA=$2 OUT=$3
MODEL=/tmp/llama-3.2-1b-shape
CFG=configs/llama-3.2-1b-notebook.yaml
mkdir -p "$OUT"
step() {  # step NAME SECONDS CMD...   (ONLY="name name..." runs just those steps)
  local name=$1 secs=$2
  shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "=== $name ($(date +%T))"
  local t0=$SECONDS
  timeout "$secs" "$@" >"$OUT/$name.log" 2>&1
  echo "    exit $? after $((SECONDS - t0)) s"
  grep -E "passed|failed|error|Error|samples/s|sentences/s|speed-up|identical|parity|accuracy|notebook|finsent " \
    "$OUT/$name.log" | grep -v "Warning" | tail -12
}

nvidia-smi -L
python3 -c "import torch, transformers, peft, trl, bitsandbytes, datasets; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__, 'trl', trl.__version__, \
'bitsandbytes', bitsandbytes.__version__, 'datasets', datasets.__version__)"

step build 90 python3 - "$TOK" "$MODEL" <<'EOF'
import shutil, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig
from finsent.core.registry import KNOWN_ARCHITECTURES
tok_dir, out = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(tok_dir)
cfg = LlamaConfig(**{**KNOWN_ARCHITECTURES["meta-llama/Llama-3.2-1B"], "vocab_size": len(tok)},
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
with torch.device("cuda"):
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
model.save_pretrained(out)
tok.save_pretrained(out)
print(f"built {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters")
EOF

step tests 150 python3 -m pytest -q -p no:cacheprovider tests/test_scoring.py tests/test_train.py \
  tests/test_metrics_prompts.py
COMMON=(--config $CFG --model "$MODEL" --data "$DATA" --train.report_to none --train.evaluation_strategy no)
step qlora_notebook 120 python3 -m finsent.cli train "${COMMON[@]}" --train.max_steps 30 \
  --train.output_dir /tmp/qlora-notebook
step qlora_fast 90 python3 -m finsent.cli train "${COMMON[@]}" --train.fast true --train.max_steps 15 \
  --train.per_device_train_batch_size 16 --train.gradient_accumulation_steps 1 --train.output_dir /tmp/qlora-fast
for d in qlora-notebook qlora-fast; do
  [ -f /tmp/$d/train_log.json ] && python3 -c "import json; j = json.load(open('/tmp/$d/train_log.json')); \
print('$d', round(j['train_samples_per_second'], 2), 'samples/s', j['global_step'], 'steps', round(j['train_runtime'], 1), 's')"
done
step evaluate_4bit 90 python3 -m finsent.cli evaluate --adapter /tmp/qlora-fast/adapter --data "$DATA" \
  --subset test --out /tmp/eval-4bit
step merge 120 python3 -m finsent.cli merge --adapter /tmp/qlora-fast/adapter --out /tmp/merged
step bench_predict 150 python3 -m bench.predict --model "$MODEL"
cp /tmp/eval-4bit/metrics.json "$OUT/eval_4bit_metrics.json" 2>/dev/null
cp /tmp/merged/merge_parity.json "$OUT/merge_parity.json" 2>/dev/null
