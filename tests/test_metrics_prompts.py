import pytest

from finsent.core.prompts import build_template, label_words_for, split_template
from finsent.evaluation.metrics import UNPARSED, classification_metrics, format_report

NOTEBOOK_TEST_PROMPT = """
            Analyze the sentiment of the news headline enclosed in square brackets, 
            determine if it is positive, neutral, or negative, and return the answer as 
            the corresponding sentiment label "positive" or "neutral" or "negative".

            [{text}] = """.strip()  # noqa: W291


def test_seed_template_is_the_notebooks_text():
    t = build_template("notebook", ["positive", "neutral", "negative"])
    assert t.render("Profit rose") == NOTEBOOK_TEST_PROMPT.format(text="Profit rose")
    assert t.answer_sep == " "


def test_user_template_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Sentence: {text}\nSentiment: {label}")
    t = build_template(str(path), ["up", "down"])
    assert (t.prefix, t.suffix, t.answer_sep) == ("Sentence: ", "\nSentiment:", " ")
    with pytest.raises(Exception, match="exactly once"):
        split_template("no placeholder", "x")


def test_label_words():
    assert label_words_for(["positive", "negative"], "positive=bullish") == ["bullish", "negative"]
    with pytest.raises(Exception, match="not in the label set"):
        label_words_for(["positive"], "mixed=meh")


def test_metrics_against_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    labels = ["positive", "neutral", "negative"]
    y = ["positive"] * 4 + ["neutral"] * 3 + ["negative"] * 3
    p = [
        "positive",
        "neutral",
        "positive",
        "positive",
        "neutral",
        "neutral",
        "negative",
        "negative",
        "neutral",
        "negative",
    ]
    m = classification_metrics(y, p, labels)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, p, average="weighted"))
    assert m["confusion_matrix"]["matrix"] == confusion_matrix(y, p, labels=labels).tolist()
    assert m["per_label"]["positive"]["accuracy"] == pytest.approx(3 / 4)
    assert "accuracy 0.700" in format_report(m)


def test_unparsed_is_never_a_class():
    m = classification_metrics(["positive", "neutral"], ["positive", UNPARSED], ["positive", "neutral"])
    assert m["unparsed"] == 1 and m["accuracy"] == 0.5
    assert m["confusion_matrix"]["columns"] == ["positive", "neutral", UNPARSED]
    assert m["confusion_matrix"]["matrix"] == [[1, 0, 0], [0, 0, 1]]
    assert m["per_label"]["neutral"]["recall"] == 0.0


def test_chat_template_wraps_the_sentence(tiny):
    _, tok = tiny
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    t = build_template("chat", ["positive", "neutral", "negative"], tok)
    rendered = t.render("Profit rose")
    assert rendered.startswith("<|user|>Classify the sentiment")
    assert rendered.endswith("Profit rose</s><|assistant|>")
    assert t.answer_sep == ""


def test_chat_template_needs_one(tiny):
    _, tok = tiny
    tok.chat_template = None
    with pytest.raises(Exception, match="no chat template"):
        build_template("chat", ["positive", "negative"], tok)
