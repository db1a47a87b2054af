"""The model card's code samples: how to load the folder and score the labels, for each kind of output."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from finsent.core.artefacts import MODEL_CARD
from finsent.core.registry import HUB_IDS


def _label_words(cfg) -> dict[str, str]:
    """label -> answer word, as finsent's PromptCodec sees them."""
    from finsent.core.labels import label_words_for, normalise_label

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
    from finsent.core.prompts import build_template

    spec = cfg.prompt.template  # today's name: Config.set renames earlier ones (options.EARLIER_NAMES)
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
    """The card's "how to use" section for one kind of output."""
    if kind == "adapter":
        return _load_adapter(folder, cfg, words, parts)
    if kind in ("merged", "full"):
        return _load_merged(folder, cfg, words, parts)
    return _load_gguf(folder, cfg, file, words, parts, shown)


def _load_adapter(folder: Path, cfg, words, parts) -> list[str]:
    base = cfg.model.model
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
        f"finsent predict --model {shlex.quote(base)} --adapter {shlex.quote(str(folder))} {EXAMPLE_ARG}",
        "```",
        "",
        "```python",
        "from finsent import Classifier",
        f"print(Classifier.load({q(base)}, adapter={q(str(folder))}).predict([{q(EXAMPLE_SENTENCE)}]))",
        "```",
    ]


def _load_merged(folder: Path, cfg, words, parts) -> list[str]:
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
        f"finsent predict --model {shlex.quote(str(folder))} {EXAMPLE_ARG}",
        f"finsent serve --model {shlex.quote(str(folder))}",
        "```",
        "",
        "```python",
        "from finsent import Classifier",
        f"print(Classifier.load({q(str(folder))}).predict([{q(EXAMPLE_SENTENCE)}]))",
        "```",
    ]


def _load_gguf(folder: Path, cfg, file, words, parts, shown) -> list[str]:
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
        f"ollama run finsent {EXAMPLE_ARG}",
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
        f"finsent predict --model {shlex.quote(str(gguf))} {EXAMPLE_ARG}",
        "```",
    ]
    return lines


def _adapter_base(folder: Path) -> str | None:
    """base_model_name_or_path from the adapter's adapter_config.json, when it is there."""
    try:
        return json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] or None
    except (OSError, ValueError, KeyError, TypeError):
        return None


EXAMPLE_SENTENCE = "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn ."

# Python / JSON string literals and the example sentence as a shell word, for the code samples
q = json.dumps
EXAMPLE_ARG = shlex.quote(EXAMPLE_SENTENCE)


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
    card = Path(spec).expanduser() / MODEL_CARD
    if hub is None and card.is_file():
        from huggingface_hub import ModelCard

        try:
            named = ModelCard.load(card, ignore_metadata_errors=True).data.get("base_model")
        except Exception:
            return None
        return named if isinstance(named, str) and hub_base_model(named) else None
    return hub
