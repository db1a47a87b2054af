"""Options that several commands share, each declared once."""

from __future__ import annotations

from typing import Any

from finsent.core.fields import opt


def config() -> Any:
    from finsent.core.config import shipped_configs

    return opt(
        None,
        f"YAML config file, or the name of a shipped one: {', '.join(shipped_configs())} "
        "(smollm2-cpu is the CPU recipe of make demo)",
        metavar="FILE",
    )


def adapter(required: bool = False) -> Any:
    return opt(
        None,
        "a LoRA adapter folder (its saved config supplies model, labels, template)",
        metavar="DIR",
        required=required,
    )


def batch_size() -> Any:
    return opt(32, "sentences per forward pass", at_least=1)


def priors() -> Any:
    return opt(
        None,
        "label shares of the texts, for data not balanced like the training split: one per label "
        "('0.15,0.7,0.15' or 'neutral=0.7,positive=0.15,negative=0.15'), or auto (estimated on the input "
        "by EM; per request in serve); probabilities are re-weighted, so predictions may change",
    )


def out(help: str, metavar: str = "DIR", required: bool = True) -> Any:
    return opt(None, help, metavar=metavar, required=required)


DATA = "../shared/data/kaggle_all_data/all-data.csv"
