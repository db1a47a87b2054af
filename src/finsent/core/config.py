"""Loading options: YAML files, flags and the config saved beside a model, resolved in one order.

    finsent train --config configs/smollm2-cpu.yaml --lora.r 16 --train.learning_rate 1e-4

The options themselves (typed dataclasses with help text) are in `options.py`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

from finsent.core.artefacts import CONFIG_FILE
from finsent.core.errors import FinsentError
from finsent.core.options import SECTIONS, Config


def self_contained(cfg: Config, folder: Path) -> Config:
    """The config saved inside a whole model's folder (merged or fully fine-tuned): it names that folder
    as its model, so `--model FOLDER` finds labels, template and weights in one place."""
    cfg = copy.deepcopy(cfg)
    cfg.model.model = str(Path(folder).resolve())
    cfg.model.load_in_4bit = False
    return cfg


def shipped_configs() -> list[str]:
    """The names of the configs that ship inside the package (finsent/configs/*.yaml)."""
    from importlib import resources

    return sorted(
        f.name[:-5]
        for f in resources.files("finsent").joinpath("configs").iterdir()
        if f.name.endswith(".yaml")
    )


def config_path(spec: str | Path) -> Path:
    """A config file: a path, or the name of a shipped config (`smollm2-cpu`, `llama-3.1-8b-qlora`), so
    that `pip install finsent` users have the configs this repository's configs/ holds."""
    from importlib import resources

    path = Path(spec)
    if path.is_file() or len(path.parts) > 1:
        return path
    name = path.name if path.name.endswith(".yaml") else path.name + ".yaml"
    shipped = Path(str(resources.files("finsent").joinpath("configs", name)))
    return shipped if shipped.is_file() else path


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = config_path(path)
    if not path.is_file():
        raise FinsentError(
            f"{path}: config file not found (a path, or one of the shipped configs: {', '.join(shipped_configs())})"
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise FinsentError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise FinsentError(f"{path}: expected a mapping of sections")
    return data


def apply_mapping(cfg: Config, data: dict, source: str) -> None:
    """Apply nested ({section: {key: value}}) or flat ({key: value}) settings."""
    for key, value in data.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise FinsentError(f"{source}: section '{key}' must be a mapping")
            for sub, v in value.items():
                cfg.set(f"{key}.{sub}", v, source)
        else:
            cfg.set(key, value, source)


def build_config(config_file: str | None = None, overrides: dict[str, Any] | None = None) -> Config:
    cfg = Config()
    if config_file:
        apply_mapping(cfg, load_yaml(config_file), str(config_file))
    for key, value in (overrides or {}).items():
        cfg.set(key, value, "option")
    return cfg


def save_config(cfg: Config, folder: str | Path) -> Path:
    """cfg as `folder`/finsent_config.yaml, with its local paths made absolute (portable)."""
    import yaml

    from finsent.core.fsio import write_text

    path = Path(folder) / CONFIG_FILE
    write_text(path, yaml.safe_dump(portable(cfg).to_dict(), sort_keys=False))
    return path


def portable(cfg: Config) -> Config:
    """A copy whose relative paths to existing files and folders (data, test data, each source's file, a
    model folder) are absolute, a template file is its text, and --resume/--overwrite are off: a saved
    config is read from other working folders (bench's overlap check, evaluate, an adapter's base), where
    `../data/x.csv` would name another file or none, and fed back with --config."""
    from finsent.core.fields import EARLIER_NAMES
    from finsent.core.registry import EMBEDDED

    def absolute(spec: str, data: bool = True) -> str:
        path = Path(spec).expanduser()
        # data is a path only with a folder or a suffix (`sentfin`, `fpb:50agree` and the hub sets' names
        # are corpus names first); a model, any folder that is there (but an embedded model's name)
        if spec in EMBEDDED or (data and not (len(path.parts) > 1 or path.suffix)):
            return spec
        # abspath, not resolve: a symlink keeps its name (all-data.csv's name picks the notebook split)
        return os.path.abspath(path) if spec and path.exists() and not path.is_absolute() else spec

    cfg = copy.deepcopy(cfg)
    # how a command was run, not what it made: a saved config fed back (--config) must not clear or
    # resume a run by itself
    cfg.train.overwrite = cfg.train.resume = False
    cfg.data.data, cfg.data.test_data = absolute(cfg.data.data), absolute(cfg.data.test_data)
    # a template file as its text (build_template reads a text with {text} as the template): a model
    # folder moved or pushed keeps its prompt
    template = Path(cfg.prompt.template).expanduser()
    spec = cfg.prompt.template
    named = spec in ("notebook", "chat") or spec in EARLIER_NAMES or "{text}" in spec  # (or already text)
    text = template.read_text(encoding="utf-8") if not named and template.is_file() else ""
    cfg.prompt.template = text if "{text}" in text else cfg.prompt.template
    cfg.model.model = absolute(cfg.model.model, data=False)
    cfg.data.sources = [_absolute_source(s, absolute) for s in cfg.data.sources]
    return cfg


def load_saved_config(folder: str | Path) -> Config | None:
    """The config saved beside an adapter / merged model / run, or None when there is none."""
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        return None
    cfg = Config()
    apply_mapping(cfg, load_yaml(path), str(path))
    return cfg


def _absolute_source(entry, absolute) -> str:
    """A data.sources entry with its SPEC absolute, unless that path holds whitespace (entries are split
    on it: data.mixture.parse_source)."""
    if not isinstance(entry, str) or not entry.split():
        return entry
    spec, *rest = entry.split()
    path = absolute(spec)
    return " ".join([spec if any(c.isspace() for c in path) else path, *rest])


def resolve(
    config_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    adapter: str | None = None,
) -> Config:
    """The one way every command names a model and its prompt: defaults < the config saved beside the
    adapter (or, without one, beside the model folder) < --config FILE < flags.

    An adapter without finsent's saved config still names its base (PEFT's adapter_config.json), so it
    never falls back to the default model; a --model that contradicts the adapter's base is an error.
    """
    overrides = dict(overrides or {})
    model_flag = overrides.get("model.model")
    trained_on = None
    if adapter:
        folder = Path(adapter)
        if not (folder / "adapter_config.json").is_file():
            raise FinsentError(
                f"--adapter {adapter}: no adapter_config.json there (not a LoRA adapter folder)"
            )
        saved = load_saved_config(folder)
        trained_on = saved.model.model if saved else _peft_base(folder)
        if trained_on is None and not model_flag:
            raise FinsentError(
                f"--adapter {adapter}: neither {CONFIG_FILE} nor adapter_config.json names the base model; "
                "pass --model"
            )
    else:
        model = model_flag
        if not model and config_file:
            section = load_yaml(config_file).get("model")
            model = section.get("model") if isinstance(section, dict) else None
        saved = load_saved_config(model) if model and Path(str(model)).is_dir() else None
    cfg = saved or Config()
    if saved:  # a model's own run folder is not where the next training goes (--out, or the default)
        cfg.train.output_dir = Config().train.output_dir
    if trained_on and not saved:
        cfg.model.model = trained_on
    if config_file:
        apply_mapping(cfg, load_yaml(config_file), str(config_file))
    if trained_on:
        _check_base(adapter, trained_on, model_flag, config_file)
    for key, value in overrides.items():
        cfg.set(key, value, "option")
    return cfg


def _check_base(adapter: str, base: str, model_flag: str | None, config_file: str | None) -> None:
    """An adapter runs on the base it was trained on: a model named anywhere else (--model, or model.model
    in a --config file) that is another model is refused, whichever source names it."""
    claims = []
    if model_flag:
        claims.append((f"--model {model_flag}", model_flag, "drop --model"))
    if config_file:
        section = load_yaml(config_file).get("model")
        named = section.get("model") if isinstance(section, dict) else None
        if named and not model_flag:  # a flag overrides the file: only the flag's model is used then
            claims.append(
                (f"{config_path(config_file)}: model.model {named}", named, "remove it from the file")
            )
    for where, model, fix in claims:
        if not same_model(str(model), base):
            raise FinsentError(
                f"{where}: the adapter {adapter} was trained on {base}; {fix}, or pass --model {base}"
            )


def _peft_base(adapter: Path) -> str | None:
    return peft_record(adapter).get("base_model_name_or_path") or None


def peft_record(adapter: Path) -> dict:
    """The adapter's adapter_config.json (PEFT's record), or a one-line error naming it."""
    import json

    path = adapter / "adapter_config.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FinsentError(f"--adapter {adapter}: {path.name} cannot be read as JSON ({e})") from None
    if not isinstance(record, dict):
        raise FinsentError(f"--adapter {adapter}: {path.name} is not a JSON object")
    return record


def same_model(a: str, b: str, resolved: str | Path | None = None) -> bool:
    """Whether two model names mean one model: the same folder, the same name, a registry name and its
    hub id (smollm2-135m, HuggingFaceTB/SmolLM2-135M-Instruct), or `b` being the folder `a` resolved to
    (`resolved`: PEFT records the local path an adapter was trained on)."""
    from finsent.core.registry import HUB_IDS

    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    if resolved is not None and pb.exists() and Path(resolved).resolve() == pb.resolve():
        return True
    return a == b or HUB_IDS.get(a) == b or HUB_IDS.get(b) == a


def adapter_base(adapter: str | Path) -> str | None:
    """The base model an adapter folder was trained on: finsent's saved config, else PEFT's record."""
    saved = load_saved_config(adapter)
    return saved.model.model if saved else _peft_base(Path(adapter))


def iter_fields():
    """(section, dataclass field) for every option, for building CLI flags."""
    for sec, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield sec, f
