"""Every folder and file name that finsent writes, in one place.

train, run, merge, evaluate, export and predict name their outputs from here, and every reader (the
server, push, export, the model card) finds them by the same names. A stage knows its own outputs; a
whole `finsent run` folder is laid out as

    OUT/finsent_config.yaml  summary.json  report.md  loss_curve.png
    OUT/baseline/ finetuned/ merged/      one evaluation each (EVALUATION_FILES)
    OUT/train/                            checkpoints, train_log.json, adapter/ or model/
    OUT/merged_model/                     the merged (or copied) model, with metrics.json and its card
"""

from __future__ import annotations

# beside every output: the resolved options it was made with
CONFIG_FILE = "finsent_config.yaml"
# a model card, in every model folder (also PEFT's name for its own card)
MODEL_CARD = "README.md"

# finsent train --out DIR
ADAPTER_DIR = "adapter"  # train.method=lora: the adapter
MODEL_DIR = "model"  # train.method=full: the whole fine-tuned model
TRAIN_LOG = "train_log.json"
RUN_STAMP = "run_stamp.json"  # what a resumed run must match
TENSORBOARD_DIR = "runs"  # transformers' default logging_dir inside output_dir (train.report_to tensorboard)
CALIBRATION_FILE = "calibration.json"  # the temperature fitted on the eval split, beside the model

# finsent evaluate --out DIR (and each evaluation inside a run)
METRICS_FILE = "metrics.json"  # also beside a merged model: its test metrics
PREDICTIONS_FILE = "predictions.csv"
ERRORS_FILE = "errors.csv"
CONFUSION_PLOT = "confusion_matrix.png"
RELIABILITY_PLOT = "reliability.png"
REPORT_TXT = "report.txt"

# finsent merge --out DIR
MERGE_PARITY_FILE = "merge_parity.json"

# finsent run --out DIR
RUN_TRAIN_DIR = "train"
MERGED_MODEL_DIR = "merged_model"
RUN_EVALUATIONS = ("baseline", "finetuned", "merged")  # the zero-shot, tuned and merged evaluations
BASELINE_EVAL, FINETUNED_EVAL, MERGED_EVAL = RUN_EVALUATIONS
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
LOSS_PLOT = "loss_curve.png"

# finsent export --out FILE.gguf: the Modelfile and the parity record beside it
MODELFILE = "Modelfile"
PARITY_SUFFIX = ".parity.json"

# finsent predict --out FILE under torchrun: FILE.shards/ with its manifest
SHARD_MANIFEST = "manifest.json"

# held while a command writes (core/lock.py): inside its folder, or as .NAME.finsent.lock beside an output
# replaced whole; it names the holding PID, and is gone when the holder ends
LOCK_FILE = ".finsent.lock"

# a model that failed its parity check is moved aside as NAME.rejected, with this note inside
REJECTED_SUFFIX = ".rejected"
REJECTED_NOTE = "REJECTED.txt"

# finsent bench --out DIR: STEM.json / STEM.md / STEM.png (the table), one predictions file a test set
BENCHMARK_STEM = "benchmark"
BENCH_PREDICTIONS = "predictions-{test_set}.csv"  # the benchmarked model's, .format(test_set=NAME)
