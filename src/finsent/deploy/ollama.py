"""The Ollama Modelfile for an exported GGUF: its prompt template, and a parser to check it."""

from __future__ import annotations

from finsent.core.errors import FinsentError

PROMPT = "{{ .Prompt }}"


OLLAMA_COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)


def modelfile(codec, gguf_name: str) -> str:
    """An Ollama Modelfile that sends exactly finsent's prompt and reads back one label.

    TEMPLATE is the raw prompt (it replaces the GGUF's chat template): prefix + sentence + suffix, ending
    where training's prompt ends; the answer (answer_sep + label word, e.g. " positive") is what the model
    generates. Greedy (temperature 0, no repeat penalty: Ollama's default 1.1 would penalise the label words
    the instruction names), at most the longest label's tokens + 1, stopping at a newline."""
    t = codec.template
    for part in (t.prefix, t.suffix):
        if "{{" in part or "}}" in part:
            raise FinsentError("the prompt template contains '{{' or '}}', which Ollama reads as Go template")
    template = t.prefix + PROMPT + t.suffix
    num_predict = max(len(ids) for ids in codec.label_ids) + 1
    text = (
        f"# ollama create finsent -f Modelfile && ollama run finsent 'Operating profit rose .'\n"
        f"# answers one of: {', '.join(codec.label_words)} (the first label word in the reply is the label)\n"
        f"FROM ./{gguf_name}\n"
        f'TEMPLATE """{template}"""\n'
        "PARAMETER temperature 0\n"
        "PARAMETER top_k 1\n"
        "PARAMETER repeat_penalty 1\n"
        f"PARAMETER num_predict {num_predict}\n"
        'PARAMETER stop """\n"""\n'
    )
    parsed = parse_modelfile(text)
    if parsed.get("template") != [template] or parsed.get("stop") != ["\n"]:
        raise FinsentError("the prompt template cannot be written into an Ollama Modelfile unchanged")
    return text


def parse_modelfile(text: str) -> dict[str, list[str]]:
    """A Modelfile's commands as Ollama reads them: {name: [argument, ...]} (PARAMETERs by their own name,
    FROM as 'model'). A port of ollama/parser/parser.go ParseFile: no escapes, quotes only at the ends
    (\"...\" or \"\"\"...\"\"\"), whitespace and newlines kept inside them, other non-printable characters
    dropped."""
    nil, name, value, parameter, message, comment = range(6)
    commands: dict[str, list[str]] = {}
    buf: list[str] = []
    state, command, role = nil, "", ""

    def unquote(s: str) -> tuple[str, bool]:
        for q in ('"""', '"'):
            if s.startswith(q):
                ok = len(s) >= 2 * len(q) and s.endswith(q)
                return (s[len(q) : -len(q)], True) if ok else ("", False)
        return s, True

    def step(r: str, cs: int) -> tuple[int, str]:
        space, newline = r in " \t", r in "\r\n"
        if cs == nil:
            return (comment, "") if r == "#" else (nil, "") if space or newline else (name, r)
        if cs == name:
            if r.isascii() and r.isalpha():
                return name, r
            if space:
                return value, ""
            raise FinsentError("Modelfile: invalid command")
        if cs == value:
            return (nil, r) if space or newline else (value, r)
        if cs in (parameter, message):
            if r.isascii() and (r.isalnum() or (r == "_" and cs == parameter)):
                return cs, r
            if space:
                return value, ""
            raise FinsentError("Modelfile: unexpected end")
        return (nil, "") if newline else (comment, "")

    for ch in text:
        nxt, r = step(ch, state)
        if nxt != state:
            b = "".join(buf)
            if state == name:
                s = b.lower()
                if s not in OLLAMA_COMMANDS:
                    raise FinsentError(f"Modelfile: unknown command {b}")
                command = "model" if s == "from" else s
                nxt = {"parameter": parameter, "message": message}.get(s, nxt)
            elif state == parameter:
                command = b
            elif state == message:
                role = b
            elif state == value:
                s, ok = unquote(b.strip())
                if not ok or r in " \t":
                    buf.append(r)
                    continue
                commands.setdefault(command, []).append(f"{role}: {s}" if role else s)
                role = ""
            buf = []
            state = nxt
        if r and r.isprintable():
            buf.append(r)
    if state == value:
        s, ok = unquote("".join(buf).strip())
        if not ok:
            raise FinsentError("Modelfile: unexpected end of a quoted value")
        commands.setdefault(command, []).append(f"{role}: {s}" if role else s)
    elif state not in (nil, comment):
        raise FinsentError("Modelfile: unexpected end")
    return commands


def render_template(template: str, prompt: str) -> str:
    """What Ollama sends for a prompt: the TEMPLATE with {{ .Prompt }} replaced (the only action it has)."""
    if template.count(PROMPT) != 1 or "{{" in template.replace(PROMPT, ""):
        raise FinsentError("Modelfile TEMPLATE: expected exactly one {{ .Prompt }} and no other action")
    return template.replace(PROMPT, prompt)
