"""The oracle engine: scripted searches by need, then the wrapped model's own answer."""

import io

from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.oracle import NEED_ACTIONS, OracleEngine, image_key
from mmsearch_r1.rollout import rollout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox

IMAGE = "<reason>look</reason><search><img></search>"
TEXT = "<reason>This is Zob.</reason><text_search>Zob motto</text_search>"


def sample(i, color):
    buffer = io.BytesIO()
    Image.new("RGB", (6, 6), color).save(buffer, format="PNG")
    return VQASample(f"q{i}", "What is the motto?", buffer.getvalue(), ["gold"])


class Lens(ImageSearch):
    def search(self, image, k=5):
        return [ImageHit(image, "Zob", "http://z")]


class Pages(TextSearch):
    def search(self, query, k=5):
        return [TextHit("Zob", "http://z", "The motto of Zob is gold.")]


def test_oracle_makes_the_planned_searches_then_the_model_answers():
    samples = [sample(0, "red"), sample(1, "blue"), sample(2, "green")]
    plans = {image_key(samples[0].image): [], image_key(samples[1].image): [IMAGE], image_key(samples[2].image): [IMAGE, TEXT]}
    model = ScriptedEngine(lambda context: "<reason>r</reason><answer>gold</answer>")
    trajectories = rollout(samples, OracleEngine(model, plans), Toolbox(Lens(), Pages()),
                           protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert [t.actions for t in trajectories] == [["answer"], ["image_search", "answer"], ["image_search", "text_search", "answer"]]
    assert [t.final_answer for t in trajectories] == ["gold"] * 3
    assert model.batch_sizes == [1, 1, 1]  # the model only writes the answer turns, one per turn of the rollout
    assert trajectories[2].assistant_turns[1] == TEXT


def test_a_question_without_plan_goes_to_the_model():
    model = ScriptedEngine(lambda context: "<reason>r</reason><answer>x</answer>")
    [t] = rollout([sample(0, "red")], OracleEngine(model, {}), None, protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert t.actions == ["answer"] and model.calls == 1


def test_need_actions_are_the_allowed_sequences():
    from mmsearch_r1.protocol import ALLOWED_SEQUENCES

    assert set(NEED_ACTIONS.values()) == set(ALLOWED_SEQUENCES)



def test_the_oracle_samples_its_answer_turn_again_until_it_answers():
    replies = iter(["<reason>r</reason><text_search>Zob</text_search>", "<reason>r</reason><search><img></search>",
                    "<reason>r</reason><answer>gold</answer>"])
    model = ScriptedEngine(lambda context: next(replies))
    s = sample(0, "red")
    [t] = rollout([s], OracleEngine(model, {image_key(s.image): [IMAGE]}), Toolbox(Lens(), Pages()), protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert t.actions == ["image_search", "answer"] and t.final_answer == "gold" and model.calls == 3
    stubborn = ScriptedEngine(lambda context: "<reason>r</reason><text_search>Zob</text_search>")
    [t] = rollout([s], OracleEngine(stubborn, {image_key(s.image): [IMAGE]}, answer_tries=2), Toolbox(Lens(), Pages()),
                  protocol=ProtocolConfig(max_turns=2), sampling=SamplingConfig())
    assert stubborn.calls == 2 and t.actions[-1] == "text_search"  # it gives up after answer_tries samples
