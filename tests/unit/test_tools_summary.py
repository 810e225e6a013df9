"""The extractive, query-focused summary."""

from mmsearch_r1.tools.summary import extractive_summary, sentence_scores, split_sentences, terms

PAGE = (
    "Zorblax is a small country in the north. It is known for its tin mines. "
    "The capital of Zorblax is Quenta. Quenta has a famous market.\nThe national animal is the heron."
)


def test_split_sentences_on_punctuation_and_newlines():
    assert split_sentences("A b. C d? E f!\nG h") == ["A b.", "C d?", "E f!", "G h"]


def test_terms_drop_stopwords_and_case():
    assert terms("What is THE capital of Zorblax?") == ["capital", "zorblax"]


def test_rare_query_terms_outweigh_common_ones():
    sentences = ["Zorblax is big.", "Zorblax has tin.", "The capital of Zorblax is Quenta."]
    scores = sentence_scores(sentences, "capital of Zorblax")
    assert scores[2] > scores[0] == scores[1] > 0


def test_summary_picks_the_sentence_that_answers():
    summary = extractive_summary(PAGE, "What is the capital of Zorblax?", max_chars=40)
    assert summary == "The capital of Zorblax is Quenta."


def test_summary_keeps_page_order_and_bound():
    summary = extractive_summary(PAGE, "capital Quenta market heron", max_chars=120)
    assert len(summary) <= 120
    parts = split_sentences(summary)
    assert parts == sorted(parts, key=PAGE.index)
    assert "Quenta has a famous market." in summary


def test_summary_falls_back_to_opening_sentences():
    summary = extractive_summary(PAGE, "volcano", max_chars=80)
    assert summary.startswith("Zorblax is a small country in the north.")
    assert len(summary) <= 80


def test_overlong_sentence_is_clipped():
    text = "word " * 200 + "capital."
    summary = extractive_summary(text, "capital", max_chars=50)
    assert len(summary) <= 50 and summary.endswith("…")


def test_summary_is_deterministic_and_empty_for_empty_page():
    assert extractive_summary(PAGE, "tin capital", 90) == extractive_summary(PAGE, "tin capital", 90)
    assert extractive_summary("", "anything") == ""
