"""Corpora hosted on the Hugging Face hub (the PhraseBank, FinGPT's TFNS, FiQA-SA and NWGI): found locally,
else in a local mirror of the hub's layout, else downloaded because they were named, then converted into
finsent's cache as a file the normal reader reads.

    finsent data --data tfns:test      # FinGPT's TFNS test tweets (the hub's validation split)
    resolve_hub("fiqa-sa", download=False)   # local files, a mirror or an earlier download only

Where a hub set's split is looked for, in order (the first place holding every split a part needs):
1. $FINSENT_DATA_DIR/NAME/SPLIT.parquet (`tfns/validation.parquet`), or the hub's parquet layout there,
   $FINSENT_DATA_DIR/HUB_ID/CONFIG/SPLIT/*.parquet;
2. $FINSENT_HUB_MIRROR/HUB_ID/CONFIG/SPLIT/*.parquet (the PhraseBank also $FINSENT_FPB_MIRROR/CONFIG/SPLIT/);
3. the hub's parquet conversion (branch refs/convert/parquet), downloaded; the commit used is recorded
   in a .source.json beside the converted file. Offline (HF_HUB_OFFLINE=1), or where the download fails,
   an earlier download's conversion is used; without one, a one-line error says how to get the files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from finsent.core.errors import FinsentError
from finsent.data.corpora import DATA_DIR_ENV, HUB_SETS, HubSet, hub_set

HUB_MIRROR_ENV = "FINSENT_HUB_MIRROR"
FPB_MIRROR_ENV = "FINSENT_FPB_MIRROR"  # the PhraseBank's own mirror (<config>/<split>/), kept working
# The hub's own parquet conversion of every dataset: no loading script (datasets 4+ refuses them), one
# folder per configuration and split, the same layout for every dataset.
REVISION = "refs/convert/parquet"
PARTS = ("train", "test")


@dataclass
class Found:
    files: dict[str, list[Path]]  # hub split -> its parquet files, in row order
    source: dict  # where they came from, for the .source.json: a local folder, a mirror or a hub commit


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"


def _split_files(root: Path, config: str, splits: tuple[str, ...]) -> dict[str, list[Path]] | None:
    """The hub's layout (ROOT/CONFIG/SPLIT/*.parquet) where it holds every split, else None."""
    files = {s: sorted((root / config / s).glob("*.parquet")) for s in splits}
    return files if all(files.values()) else None


def mirror_roots(hub_id: str, extra: list[Path] | None = None) -> list[Path]:
    """The dataset folders (CONFIG/SPLIT/*.parquet inside) of the mirrors set: `extra` first (the
    PhraseBank's own $FINSENT_FPB_MIRROR), then $FINSENT_HUB_MIRROR/HUB_ID."""
    mirror = os.environ.get(HUB_MIRROR_ENV)
    return [*(extra or []), *([Path(mirror).expanduser() / hub_id] if mirror else [])]


def find_mirrored(config: str, splits: tuple[str, ...], roots: list[Path]) -> Found | None:
    for root in roots:
        files = _split_files(root, config, splits)
        if files:
            return Found(files, {"mirror": str(root.resolve())})
    return None


def download(hub_id: str, config: str, splits: tuple[str, ...], revision: str = REVISION) -> Found:
    """The splits' parquet files from the hub's conversion (the hub's own download cache keeps them);
    ConnectionError offline, FileNotFoundError where the conversion lacks a split."""
    if offline():
        raise ConnectionError("offline mode (HF_HUB_OFFLINE=1)")
    from huggingface_hub import HfApi, hf_hub_download

    info = HfApi().dataset_info(hub_id, revision=revision, files_metadata=False)
    names = sorted(f.rfilename for f in info.siblings or [] if f.rfilename.endswith(".parquet"))
    files = {}
    for split in splits:
        wanted = [n for n in names if n.startswith(f"{config}/{split}/")]
        if not wanted:
            raise FileNotFoundError(f"no {config}/{split}/*.parquet in {hub_id}@{revision}")
        # the commit, not the branch: every file from the same snapshot even if the branch moves meanwhile
        files[split] = [
            Path(hf_hub_download(hub_id, n, repo_type="dataset", revision=info.sha)) for n in wanted
        ]
    return Found(files, {"dataset": hub_id, "revision": revision, "commit": info.sha})


def parquet_files(
    hub_id: str, config: str, splits: tuple[str, ...], roots: list[Path], revision: str = REVISION
) -> Found:
    """The splits from the first mirror root holding them all, else downloaded."""
    return find_mirrored(config, splits, roots) or download(hub_id, config, splits, revision)


def write_converted(out: Path, data: bytes, found: Found, rows: int, **extra) -> Path:
    """`data` written atomically at `out`, and where it came from in OUT.source.json beside it."""
    from finsent.core.fsio import atomic_path, write_json

    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    files = [str(f) for fs in found.files.values() for f in fs]
    write_json(out.with_suffix(".source.json"), found.source | extra | {"files": files, "rows": rows})
    return out


def cached_download(out: Path) -> Path | None:
    """`out` where an earlier download made it (its .source.json names a hub commit), else None: a
    conversion of local files is not reused once they are gone, a download is (it is pinned)."""
    try:
        source = json.loads(out.with_suffix(".source.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return out if out.is_file() and isinstance(source, dict) and source.get("commit") else None


def _why(e: Exception) -> str:
    text = str(e).splitlines()[0][:120] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- FinGPT's hub-hosted benchmark corpora ---


def _parse(spec: str) -> tuple[HubSet, str]:
    name, _, part = spec.strip().lower().partition(":")
    hs = hub_set(name)
    if hs is None:
        raise FinsentError(
            f"--data {spec}: '{name}' is no hub corpus (known: {', '.join(h.name for h in HUB_SETS)})"
        )
    if part not in ("", *PARTS):
        raise FinsentError(f"--data {spec}: unknown part '{part}' (use {name} or {name}:test)")
    return hs, part or "train"


def cache_file(hs: HubSet, part: str) -> Path:
    """Where a part's conversion is kept: CACHE/data/NAME/PART.csv (text,label)."""
    from finsent.core.fsio import cache_root

    return cache_root() / "data" / hs.name / f"{part}.csv"


def local_names(hs: HubSet, splits: tuple[str, ...]) -> list[str]:
    """The file names looked for under the data folder, for messages and docs."""
    return [f"{hs.name}/{s}.parquet" for s in splits] + [
        f"{hs.hub_id}/{hs.config}/{s}/*.parquet" for s in splits
    ]


def find_local(hs: HubSet, splits: tuple[str, ...], data_dir=None) -> Found | None:
    """The splits in the data folder (NAME/SPLIT.parquet, or the hub's layout), else a mirror's."""
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    if root:
        flat = {s: [Path(root) / hs.name / f"{s}.parquet"] for s in splits}
        if all(f[0].is_file() for f in flat.values()):
            return Found(flat, {"local": str((Path(root) / hs.name).resolve())})
        files = _split_files(Path(root) / hs.hub_id, hs.config, splits)
        if files:
            return Found(files, {"local": str((Path(root) / hs.hub_id).resolve())})
    return find_mirrored(hs.config, splits, mirror_roots(hs.hub_id))


def available(spec: str, data_dir=None) -> bool:
    """Whether resolve_hub(spec, data_dir, download_ok=False) finds the part, without converting it."""
    hs, part = _parse(spec)
    splits = hs.test if part == "test" else hs.train
    return find_local(hs, splits, data_dir) is not None or cached_download(cache_file(hs, part)) is not None


def resolve_hub(spec: str, data_dir=None, download_ok: bool = True) -> Path:
    """`NAME[:test]` of a hub corpus as a CSV (text,label) in finsent's cache, converted from the local
    files, a mirror, or (download_ok: the user named it) the hub; else a one-line error."""
    hs, part = _parse(spec)
    splits = hs.test if part == "test" else hs.train
    out = cache_file(hs, part)
    found = find_local(hs, splits, data_dir)
    if found is None:
        try:
            if not download_ok:
                raise LookupError
            found = download(hs.hub_id, hs.config, splits)
        except Exception as e:  # offline, hub refused, layout changed: an earlier download, else how to fix
            cached = cached_download(out)
            if cached:
                return cached
            why = (
                "local files only: nothing is downloaded here"
                if not download_ok
                else (f"fetching {hs.hub_id} failed ({_why(e)})")
            )
            raise FinsentError(_not_found(spec, hs, splits, data_dir, why)) from None
    return convert(hs, part, found, out)


def _not_found(spec: str, hs: HubSet, splits: tuple[str, ...], data_dir, why: str) -> str:
    root = data_dir or os.environ.get(DATA_DIR_ENV)
    mirror = os.environ.get(HUB_MIRROR_ENV)
    return (
        f"--data {spec}: {' + '.join(f'{hs.name}/{s}.parquet' for s in splits)} not found "
        + (f"under {root}" if root else f"(${DATA_DIR_ENV} is not set)")
        + (f" nor {hs.hub_id}/{hs.config}/<split>/ under ${HUB_MIRROR_ENV}={mirror}" if mirror else "")
        + f" ({why}); put the hub's parquet files there (or set "
        f"{HUB_MIRROR_ENV} to a folder of the hub's layout), go online once (unset HF_HUB_OFFLINE) and pass "
        f"--data {spec} to download it, or pass --data PATH"
    )


def _rows(hs: HubSet, found: Found, splits: tuple[str, ...]) -> list[tuple[str, object, str]]:
    """(text, raw label, where) of the splits concatenated in order, as FinGPT concatenates them."""
    import pandas as pd

    rows = []
    for split in splits:
        for f in found.files[split]:
            frame = pd.read_parquet(f)
            for col in (hs.text, hs.label):
                if col not in frame.columns:
                    raise FinsentError(
                        f"{f}: no column '{col}' (columns: {', '.join(map(str, frame.columns))})"
                    )
            for i, (text, raw) in enumerate(zip(frame[hs.text], frame[hs.label])):
                # a missing text is written empty: the reader reports it (or skips it, --skip-invalid)
                rows.append(("" if pd.isna(text) else str(text), raw, f"{f}: row {i}"))
    return rows


def _label(hs: HubSet, raw: object, where: str) -> str:
    from finsent.data.formats import score_label

    raw = raw.item() if hasattr(raw, "item") else raw  # a numpy scalar as the Python number it holds
    if hs.labels is None:
        try:
            return score_label(raw)  # FinGPT's make_label: below -0.1 negative, from 0.1 positive
        except ValueError:
            raise FinsentError(f"{where}: {hs.label} {raw!r} is not a number") from None
    key = str(raw).strip().lower()
    if isinstance(raw, float) and raw.is_integer():
        key = str(int(raw))  # a label column read as floats (1.0): the class number
    if key not in hs.labels:
        raise FinsentError(f"{where}: {hs.label} {raw!r} is not one of {', '.join(hs.labels)}")
    return hs.labels[key]


def fingpt_cut(n: int, test_size: float, seed: int = 42) -> dict[str, list[int]]:
    """Row numbers of datasets' `train_test_split(test_size, seed=seed)` of n rows: the permutation of
    np.random.default_rng(seed), its first ceil(test_size * n) rows the test part, the rest train (as
    data/splits.py's split_random, which this module cannot import: splits imports phrasebank, which
    imports this module)."""
    import math

    import numpy as np

    order = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    n_test = math.ceil(test_size * n)
    return {"test": order[:n_test], "train": order[n_test:]}


def convert(hs: HubSet, part: str, found: Found, out: Path) -> Path:
    """A part (train or test) of a hub corpus, by its recipe, as CSV text,label at `out`."""
    import csv
    import io

    splits = hs.test if part == "test" else hs.train
    rows = _rows(hs, found, splits)
    order = fingpt_cut(len(rows), hs.cut)[part] if hs.cut else list(range(len(rows)))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows([rows[i][0], _label(hs, rows[i][1], rows[i][2])] for i in order)
    return write_converted(
        out,
        buf.getvalue().encode("utf-8"),
        found,
        len(order),
        part=part,
        recipe=hs.recipe,
        splits=list(splits),
    )
