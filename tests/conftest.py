"""Shared fixtures: the real data in ../shared/data, a tiny random Llama with a real BPE tokenizer."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("FINSENT_DATA_DIR", ROOT.parent / "shared" / "data"))
ALL_DATA = DATA_DIR / "kaggle_all_data" / "all-data.csv"
FPB_DIR = DATA_DIR / "financial_phrasebank"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("FINSENT_DATA_DIR", str(DATA_DIR))  # `fpb:...` specs (configs/fpb50-*.yaml) read it
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007 .",
    "The company said it would cut 120 jobs after net sales fell sharply .",
    "The contract value amounts to about EUR 11 million , the company said .",
    "Analyze the sentiment of the news headline enclosed in square brackets",
    "positive neutral negative bullish bearish",
]


def _build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    # a small vocabulary on purpose: label words split into several tokens
    tok.train_from_iterator(CORPUS[:3], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def build_tiny_llama(
    tokenizer,
    seed: int = 0,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    initializer_range: float = 0.2,
):
    """A random Llama of 2 layers; the default init range is larger than transformers' 0.02 so that the
    frozen random output head can express what LoRA learns."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        initializer_range=initializer_range,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random Llama folder: usable as --model DIR by every command."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = _build_tokenizer()
    build_tiny_llama(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture()
def tiny(tiny_model_dir):
    """(model, tokenizer) loaded from the tiny folder, in float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def all_data() -> Path:
    if not ALL_DATA.is_file():
        pytest.fail(f"{ALL_DATA} missing: set FINSENT_DATA_DIR to the shared data folder")
    return ALL_DATA


@pytest.fixture(scope="session")
def fpb_dir() -> Path:
    return FPB_DIR


@pytest.fixture(scope="session")
def clf(tiny_model_dir):
    from finsent.serving.api import Classifier

    return Classifier.load(str(tiny_model_dir), dtype="float32")


@contextlib.contextmanager
def serving(clf, limits=None):
    """A real uvicorn server for `clf` on a free loopback port, in a thread: yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from finsent.serving.app import create_app
    from finsent.serving.errors import Limits

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from finsent.serving.connections import uvicorn_config

    config = uvicorn_config(
        create_app(clf, limits or Limits()), "127.0.0.1", port, limits or Limits(), log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def server(clf):
    from finsent.serving.errors import Limits

    with serving(clf, Limits(max_texts=8, max_chars=200, max_body=4000, max_batch=64)) as url:
        yield url


@pytest.fixture(autouse=True)
def _notes_said_afresh():
    """console.note says a remark once per process; each test is a process of its own for that."""
    from finsent.core import console

    console._said.clear()
    yield
