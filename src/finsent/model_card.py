"""A model card (README.md) for every output folder: adapter, merged model, GGUF export.

Built with huggingface_hub's ModelCard / ModelCardData: a YAML metadata header (library, base model, tags,
pipeline tag, and the test accuracy as a model-index entry when metrics are given) above a Markdown body.
Purely local: nothing here touches the network.
"""

from __future__ import annotations

from pathlib import Path

from finsent.fsio import write_text

HOW_TO_LOAD = {
    "adapter": 'finsent predict --model {base} --adapter {folder} "Operating profit rose ."\n'
    "# or: from finsent import Classifier; Classifier.load('{base}', adapter='{folder}')",
    "merged": 'finsent predict --model {folder} "Operating profit rose ."\n'
    "finsent serve --model {folder}\n"
    "# or: from finsent import Classifier; Classifier.load('{folder}')",
    "gguf": "ollama create finsent -f {folder}/Modelfile && ollama run finsent 'Operating profit rose .'\n"
    "# or llama.cpp: llama-cli -m {file} -p '<prompt from the Modelfile>' -n 2 --temp 0",
}

LIBRARY_NAME = {"adapter": "peft", "merged": "transformers", "gguf": "gguf"}
TAGS = ["finsent", "financial-sentiment", "text-classification", "lora"]


def write_model_card(
    folder: str | Path, cfg, kind: str, metrics: dict | None = None, extra: dict | None = None, file: str = ""
) -> Path:
    folder = Path(folder)
    lc, tc, dc = cfg.lora, cfg.train, cfg.data
    base = cfg.model.model
    lines = [
        f"# finsent {kind}: financial sentiment classifier",
        "",
        f"- base model: `{base}`",
        f"- data: `{dc.data}`, split `{dc.split}`"
        + (
            f" ({dc.train_per_label} train / {dc.test_per_label} test / {dc.eval_per_label} eval per label, seed {dc.seed})"
            if dc.split in ("notebook", "seed")  # "seed" is the split's earlier name
            else ""
        ),
        f"- labels: {', '.join(dc.labels)}",
        f"- prompt template: `{cfg.prompt.template}`"
        + (f", answer words `{cfg.prompt.label_words}`" if cfg.prompt.label_words else ""),
        f"- LoRA: r={lc.r}, lora_alpha={lc.lora_alpha}, lora_dropout={lc.lora_dropout}, bias={lc.bias}, "
        f"target_modules={lc.target_modules}",
        f"- training: {tc.num_train_epochs:g} epochs, batch {tc.per_device_train_batch_size} x "
        f"{tc.gradient_accumulation_steps}, lr {tc.learning_rate:g} ({tc.lr_scheduler_type}, warm-up "
        f"{tc.warmup_ratio:g}), weight decay {tc.weight_decay:g}, max_grad_norm {tc.max_grad_norm:g}, "
        f"optim {tc.optim}, fast={tc.fast}",
        "",
    ]
    for k, v in (extra or {}).items():
        lines.append(f"- {k}: {v}")
    if metrics:
        labels = list(metrics["per_label"])
        lines += [
            "",
            "## Metrics",
            "",
            "| accuracy | macro F1 | weighted F1 | " + " | ".join(f"acc. {x}" for x in labels) + " | n |",
            "|---|---|---|" + "---|" * len(labels) + "---|",
            f"| {metrics['accuracy']:.3f} | {metrics['macro_f1']:.3f} | {metrics['weighted_f1']:.3f} | "
            + " | ".join(f"{metrics['per_label'][x]['accuracy']:.3f}" for x in labels)
            + f" | {metrics['n']} |",
        ]
    lines += [
        "",
        "## How to load",
        "",
        "```bash",
        HOW_TO_LOAD[kind].format(base=base, folder=folder, file=file),
        "```",
        "",
        "The full resolved configuration is in `finsent_config.yaml`." if kind != "gguf" else "",
        "",
    ]
    card = _card(cfg, kind, metrics, "\n".join(lines))
    path = folder / "README.md"
    write_text(path, str(card))
    return path


def _card(cfg, kind: str, metrics: dict | None, body: str):
    """A huggingface_hub ModelCard: YAML front matter from ModelCardData, then `body`."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    eval_results = None
    if metrics:
        common = dict(
            task_type="text-classification",
            dataset_type=cfg.data.data,
            dataset_name=cfg.data.data,
            dataset_split="test",
        )
        eval_results = [EvalResult(**common, metric_type="accuracy", metric_value=float(metrics["accuracy"]))]
        if "weighted_f1" in metrics:
            eval_results.append(
                EvalResult(
                    **common,
                    metric_type="f1",
                    metric_name="f1 (weighted)",
                    metric_config="weighted",
                    metric_value=float(metrics["weighted_f1"]),
                )
            )
    data = ModelCardData(
        library_name=LIBRARY_NAME[kind],
        base_model=cfg.model.model,
        tags=TAGS + (["gguf"] if kind == "gguf" else []),
        pipeline_tag="text-classification",
        model_name=f"finsent-{kind}" if eval_results else None,
        eval_results=eval_results,
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")
