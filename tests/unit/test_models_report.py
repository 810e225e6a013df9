"""The pretraining report's figures that need no model: the rag workflow's query taken apart."""

from types import SimpleNamespace

from mmsearch_r1.models.report import markdown, query_figures
from mmsearch_r1.world.build import generate_world


def test_the_rag_query_is_taken_apart_into_entity_attribute_and_reading():
    world = generate_world(seed=0, size="small")
    entity = next(e for e in world.entities if e.group == "neither")
    fact = entity.facts[0]
    phrase = world.attribute(fact.attribute).phrase
    other = next(e for e in world.entities if e is not entity)
    wrong_phrase = next(a.phrase for a in world.attributes if a.phrase != phrase)
    sample = SimpleNamespace(extra={"entity": entity.name, "attribute": fact.attribute, "group": "neither"}, answers=[fact.answer])

    def episode(query: str, answer: str):
        return SimpleNamespace(assistant_turns=[f"<reason>Look it up.</reason><text_search> {query}</text_search>",
                                                f"<reason>The results say.</reason><answer> {answer}</answer>"])

    runs = [episode(f"{entity.name} {phrase}", fact.answer),  # all three right
            episode(f"{entity.name} {phrase}", "nothing"),  # the right query, read wrong
            episode(f"{other.name} {phrase}", fact.answer),  # another name
            episode(f"{entity.name} {wrong_phrase}", "nothing"),  # another attribute
            SimpleNamespace(assistant_turns=[f"<reason>I know.</reason><answer> {fact.answer}</answer>"]),  # no query
            SimpleNamespace(assistant_turns=["<reason>Search images.</reason><search><img></search>"]),  # another tool
            SimpleNamespace(assistant_turns=[])]  # nothing said
    figures = query_figures(runs, [sample] * len(runs), world)
    assert figures["neither"] == figures["all"] == {"query_names_entity": 0.4286, "query_names_attribute": 0.4286, "accuracy_when_both": 0.5}
    none = query_figures(runs[2:3], [sample], world)["all"]
    assert none["accuracy_when_both"] is None and "| neither | 0.00 | 1.00 | – |" in markdown(_report({"neither": none}))
    assert "query names the entity" not in markdown(_report(None))  # a report written before the breakdown


def _report(rag_query):
    empty = {"n": 1, "accuracy": 0.0, "format_valid": 1.0, "search_ratio": 0.0, "image_search_ratio": 0.0, "text_search_ratio": 0.0}
    evaluation = {"questions": 1, "chance": {}, "figures": {run: {"neither": empty} for run in ("direct", "rag", "on_demand_t1")}}
    if rag_query is not None:
        evaluation["rag_query"] = rag_query
    training = {"steps": 1, "resumed_from_step": 0, "tokens_per_second": 1.0, "losses": [1.0]}
    return {"world": "w", "seed": 0, "parameters": 1, "vocab_size": 1, "report_samples": 1, "evaluation": evaluation, "checks": {},
            "training": training, "tokens": 1, "trained_tokens": 1, "demonstrations_per_epoch": [], "action_sequences": {}, "seconds": {}}
