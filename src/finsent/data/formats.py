"""The published formats of the score- and entity-labelled corpora, read as they are distributed:
SemEval-2017 Task 5 (headlines and microblogs, JSON arrays), FiQA 2018 task 1 posts (a JSON object keyed
by post id) and SEntFiN 1.0 (a CSV of headlines with a dict of entity labels).

Each reader yields read_file's rows, (row, where, text, raw label, error), and appends to `notes` what it
left out on purpose and how it built its rows, so that `LabelledData.flaws()` says so. An error that is an
`Invalid` is a bad row (an error unless --skip-invalid); a plain str is a malformed row (always counted).

Scores in [-1, 1] become labels by thresholds (FinGPT's rule by default): score < -0.1 negative,
-0.1 <= score < 0.1 neutral, score >= 0.1 positive.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from finsent.core.errors import FinsentError

DEFAULT_THRESHOLDS = (-0.1, 0.1)
SCORE_LABELS = ("positive", "neutral", "negative")  # the order counts are written in


class Invalid(str):
    """A bad row's message: read_file stops on it unless --skip-invalid, then counts it."""


def parse_thresholds(spec: str | tuple | list = DEFAULT_THRESHOLDS) -> tuple[float, float]:
    """`A,B` (negative below A, neutral from A to below B, positive from B; A = B: no neutral) or one
    number T >= 0 for -T,T (a form the command line takes without '='), else a one-line error."""
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        cuts = tuple(float(p) for p in parts if str(p).strip())
    except ValueError:
        cuts = ()
    if len(cuts) == 1 and cuts[0] >= 0:
        cuts = (-cuts[0], cuts[0])
    if len(cuts) != 2 or not all(map(math.isfinite, cuts)) or cuts[0] > cuts[1]:
        raise FinsentError(
            f"data.score_thresholds: {spec!r} is not A,B with A <= B (score < A negative, A <= score < B "
            "neutral, score >= B positive) or one number T >= 0 (for -T,T)"
        )
    return cuts


def score_label(value: object, cuts: tuple[float, float] = DEFAULT_THRESHOLDS) -> str:
    """The label of a sentiment score (a number, or a string holding one); ValueError if it is none."""
    x = score_value(value)
    return "negative" if x < cuts[0] else "neutral" if x < cuts[1] else "positive"


def score_value(value: object) -> float:
    """A finite score from a number or a string holding one (not Python's '1_0'); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(value)
    if isinstance(value, str) and "_" in value:
        raise ValueError(value)
    x = float(value.strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(x):
        raise ValueError(value)
    return x


def _corpus_score(value: object, field: str) -> float:
    """A published corpus's score: a number in [-1, 1] (SemEval-2017 and FiQA 2018 say so), or
    ValueError naming the field: a score out of that range is a damaged file, not a strong label."""
    try:
        x = score_value(value)
    except ValueError:
        raise ValueError(f"{field} {value!r} is not a number") from None
    if not -1 <= x <= 1:
        raise ValueError(f"{field} {value!r} is outside the corpus's range [-1, 1]")
    return x


def is_number(value: object) -> bool:
    try:
        score_label(value)
    except ValueError:
        return False
    return True


class _Lines:
    """Line numbers of increasing offsets into a text, counted once."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def __call__(self, pos: int) -> int:
        if pos < self.pos:
            return self.text.count("\n", 0, pos) + 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def json_items(path: Path, text: str) -> Iterator[tuple[int, int, str | None, object, str | None]]:
    """(index, line, key, value, error) for each element of a JSON array, or each key/value of a JSON
    object, parsed one at a time: a file cut short still gives every record before the cut, then one
    error where it stops (the rest of it cannot be read)."""
    dec, lines = json.JSONDecoder(), _Lines(text)
    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] not in "[{":
        raise FinsentError(f"{path}:{lines(pos)}: expected a JSON array or object")
    closer, keyed = ("}", True) if text[pos] == "{" else ("]", False)
    pos, i = _skip_ws(text, pos + 1), 0
    if text.startswith(closer, pos):
        return
    while True:
        start, key = pos, None
        try:
            if keyed:
                key, pos = dec.raw_decode(text, pos)
                pos = _skip_ws(text, pos)
                if not isinstance(key, str) or not text.startswith(":", pos):
                    raise json.JSONDecodeError("Expecting a 'key': value pair", text, pos)
                pos = _skip_ws(text, pos + 1)
            value, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield (
                i,
                lines(max(e.pos, start)),
                key,
                None,
                f"invalid JSON ({e.msg}): the file is cut short or broken here",
            )
            return
        yield i, lines(start), key, value, None
        i, pos = i + 1, _skip_ws(text, pos)
        if text.startswith(",", pos):
            pos = _skip_ws(text, pos + 1)
        elif text.startswith(closer, pos):
            if _skip_ws(text, pos + 1) < len(text):
                yield i, lines(pos + 1), None, None, f"data after the closing '{closer}'"
            return
        else:
            what = "the file ends" if pos >= len(text) else f"expected ',' or '{closer}'"
            yield i, lines(pos), None, None, f"invalid JSON ({what}): the file is cut short or broken here"
            return


def detect_json(path: Path, text: str) -> str | None:
    """The corpus a JSON file holds, by its first records' fields (any of the first 5: one damaged record
    is then that record's error, not a wrong guess at the format): semeval-headlines,
    semeval-microblogs, fiqa-posts; `array` for another JSON array of records; None for JSON Lines. A
    JSON object that is none of these is an error."""
    import itertools

    pos = _skip_ws(text, 0)
    if pos >= len(text) or text[pos] not in "[{":
        return None
    values = [v for _i, _line, _key, v, err in itertools.islice(json_items(path, text), 5) if err is None]

    def some(fields: set[str]) -> bool:
        return any(isinstance(v, dict) and fields <= set(v) for v in values)

    if text[pos] == "{":
        if some({"sentence", "info"}):
            return "fiqa-posts"
        try:  # one object over several lines is not JSON Lines (one object a line)
            _, end = json.JSONDecoder().raw_decode(text, pos)
        except ValueError:
            return None  # JSON Lines whose first line is broken: that line's error
        if "\n" in text[pos:end].strip():
            raise FinsentError(
                f"{path}: a JSON object whose records are not FiQA 2018 posts ({{sentence, info}}); "
                "expected a JSON array of records, or JSON Lines (one object a line)"
            )
        return None
    if some({"title", "company"}):
        return "semeval-headlines"
    if some({"spans", "sentiment score"}):
        return "semeval-microblogs"
    return "array"


def is_sentfin(text: str) -> bool:
    header = next(csv.reader(io.StringIO(text, newline="")), [])
    return {"Title", "Decisions"} <= {h.strip() for h in header}


def _counts(labels: Counter) -> str:
    return ", ".join(f"{labels[lab]:,} {lab}" for lab in SCORE_LABELS if labels[lab])


def _score_of(rec: dict, fields: tuple[str, ...], cuts) -> str:
    """The label of a record's score field, or ValueError naming the field and the value."""
    field = next((f for f in fields if f in rec), None)
    if field is None:
        raise ValueError(f"no '{fields[0]}' field")
    return score_label(_corpus_score(rec[field], field), cuts)


def _microblog_text(rec: dict) -> tuple[str, bool]:
    """(text, built from spans): the test file's `text`; the training file has none, only `spans`, the
    annotated fragments, joined with ' '."""
    if "text" in rec:
        if not isinstance(rec["text"], str):
            raise ValueError(f"text {rec['text']!r} is not a string")
        return rec["text"].strip(), False
    spans = rec.get("spans")
    if isinstance(spans, str):
        spans = [spans]
    if not isinstance(spans, list) or not all(isinstance(s, str) for s in spans):
        raise ValueError(f"spans {spans!r} is not a list of strings (and there is no 'text')")
    return " ".join(s.strip() for s in spans if s.strip()), True


def rows_semeval(path: Path, text: str, corpus: str, cuts, notes: list[str]) -> Iterator[tuple]:
    """SemEval-2017 Task 5 headlines (one row per (title, company) pair) or microblogs (one row per
    (post, cashtag) pair): one row per distinct text, labelled where all its scores give one label; a
    text whose companies' (cashtags') labels disagree has no sentence-level label and is left out."""
    headlines = corpus == "semeval-headlines"
    unit, who = ("titles", "companies") if headlines else ("texts", "cashtags")
    groups: dict[str, list[tuple[int, str, str]]] = {}
    by_score: Counter = Counter()
    rows = no_text = from_spans = 0
    for i, line, _key, rec, error in json_items(path, text):
        at = f"{path}:{line}"
        if error:
            yield i, at, None, None, Invalid(f"{at}: record {i}: {error}")
            break  # nothing after it can be read; what came before still counts (--skip-invalid)
        try:
            if not isinstance(rec, dict):
                raise ValueError("expected a JSON object")
            label = _score_of(rec, ("sentiment", "sentiment score"), cuts)
            if headlines:
                if not isinstance(rec.get("title"), str):
                    raise ValueError(f"title {rec.get('title')!r} is not a string")
                sentence, spans = rec["title"].strip(), False
            else:
                sentence, spans = _microblog_text(rec)
        except ValueError as e:
            yield i, at, None, None, Invalid(f"{at}: record {i}: {e}")
            continue
        rows, from_spans = rows + 1, from_spans + spans
        by_score[label] += 1
        if not sentence and not headlines:
            no_text += 1  # the training file's posts whose spans are empty: nothing to classify
            continue
        groups.setdefault(sentence, []).append((i, at, label))
    disagree = merged = 0
    for sentence, members in groups.items():
        if len({lab for _, _, lab in members}) > 1:
            disagree += 1
            continue
        merged += len(members) - 1
        i, at, label = members[0]
        yield i, at, sentence, label, None
    name = "SemEval-2017 headlines" if headlines else "SemEval-2017 microblogs"
    pairs = "(title, company)" if headlines else "(post, cashtag)"
    notes.append(
        f"{name}: {rows:,} {pairs} rows ({_counts(by_score)} by score) hold {len(groups):,} distinct "
        f"{unit}; one row per {unit[:-1]}: {merged:,} repeats with the same label merged, {disagree:,} "
        f"{unit} whose {who}' labels disagree were left out"
    )
    if from_spans:
        notes.append(
            f"{name}: {from_spans:,} rows have no full text (the training file publishes only the annotated "
            "fragments): their text is the `spans` fragments joined with ' '"
            + (f"; {no_text:,} rows whose spans are empty were left out" if no_text else "")
        )


def rows_fiqa(path: Path, text: str, cuts, notes: list[str]) -> Iterator[tuple]:
    """FiQA 2018 task 1 posts: {id: {sentence, info: [{snippets, sentiment_score, target, aspects}]}};
    a post's label is that of the mean of its snippets' scores."""
    several = 0
    for i, line, key, rec, error in json_items(path, text):
        at = f"{path}:{line}"
        if error:
            yield i, at, None, None, Invalid(f"{at}: record {i}: {error}")
            break
        try:
            if not isinstance(rec, dict) or not isinstance(rec.get("info"), list) or not rec["info"]:
                raise ValueError("expected {sentence, info: [{sentiment_score, ...}, ...]}")
            if not isinstance(rec.get("sentence"), str):
                raise ValueError(f"sentence {rec.get('sentence')!r} is not a string")
            scores = []
            for part in rec["info"]:
                value = part.get("sentiment_score") if isinstance(part, dict) else None
                scores.append(_corpus_score(value, "sentiment_score"))
            label = score_label(sum(scores) / len(scores), cuts)
        except ValueError as e:
            yield i, at, None, None, Invalid(f"{at}: post {key}: {e}")
            continue
        several += len(scores) > 1
        yield i, at, rec.get("sentence"), label, None
    if several:
        notes.append(
            f"FiQA 2018: {several:,} posts hold several snippets: each is labelled by their mean score"
        )


def _decisions(raw: str) -> dict[str, str]:
    """SEntFiN's `Decisions`: a dict entity -> label, JSON or Python-literal quoted."""
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = None
    if not isinstance(value, dict) or not value or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"Decisions {str(raw)[:60]!r} is not a dict of entity -> label")
    return value


def rows_sentfin(path: Path, text: str, notes: list[str]) -> Iterator[tuple]:
    """SEntFiN 1.0: `S No.,Title,Decisions,Words`; a headline whose entities all have one label keeps
    it, one whose entities disagree has no sentence-level label and is left out."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip() for h in next(reader)]
    col_title, col_dec = header.index("Title"), header.index("Decisions")
    several = disagree = 0
    last = reader.line_num
    for i, row in enumerate(reader):
        first, last = last + 1, reader.line_num  # a quoted title may hold a line break
        at = f"{path}:{first}"
        if not row:
            continue
        if len(row) != len(header):
            yield i, at, None, None, Invalid(f"{at}: expected {len(header)} fields, got {len(row)}")
            continue
        try:
            decisions = _decisions(row[col_dec])
            labels = {" ".join(v.split()).lower() for v in decisions.values()}
            unknown = sorted(labels - set(SCORE_LABELS))
            if unknown:  # SEntFiN's own words, whatever --label-map then makes of them
                raise ValueError(f"Decisions label {unknown[0]!r} is not one of {', '.join(SCORE_LABELS)}")
        except ValueError as e:
            yield i, at, None, None, Invalid(f"{at}: {e}")
            continue
        several += len(decisions) > 1
        if len(labels) > 1:
            disagree += 1
            continue
        yield i, at, row[col_title], next(iter(decisions.values())), None
    if disagree:
        notes.append(
            f"SEntFiN: {disagree:,} headlines whose entities disagree were left out ({several:,} name several "
            "entities)"
        )


def corpus_rows(path: Path, corpus: str, text: str, cuts, notes: list[str]) -> Iterator[tuple]:
    readers: dict[str, Callable[[], Iterator[tuple]]] = {
        "semeval-headlines": lambda: rows_semeval(path, text, corpus, cuts, notes),
        "semeval-microblogs": lambda: rows_semeval(path, text, corpus, cuts, notes),
        "fiqa-posts": lambda: rows_fiqa(path, text, cuts, notes),
        "sentfin": lambda: rows_sentfin(path, text, notes),
    }
    return readers[corpus]()
