"""Pretraining's pure parts: the masked loss, the learning-rate schedule, batching, collation."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mmsearch_r1.errors import ConfigError  # noqa: E402
from mmsearch_r1.models.encode import Encoded  # noqa: E402
from mmsearch_r1.models.pretrain import batch_up, collate, lr_at, masked_lm_loss  # noqa: E402


def test_masked_lm_loss_counts_only_masked_targets():
    # vocab 2; logits favour token 0 at every position
    logits = torch.tensor([[[math.log(3.0), 0.0], [math.log(3.0), 0.0], [0.0, 0.0]]])
    ids = torch.tensor([[1, 0, 1]])
    # target at t=1 is 0 (p=3/4), at t=2 is 1 (p=1/4); mask only t=1
    loss = masked_lm_loss(logits, ids, torch.tensor([[0.0, 1.0, 0.0]]))
    assert float(loss) == pytest.approx(-math.log(0.75))
    both = masked_lm_loss(logits, ids, torch.tensor([[0.0, 1.0, 1.0]]))
    assert float(both) == pytest.approx((-math.log(0.75) - math.log(0.25)) / 2)
    assert float(masked_lm_loss(logits, ids, torch.zeros(1, 3))) == 0.0


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    values = [lr_at(s, 100, 1e-3, 10, 0.1) for s in range(101)]
    assert values[0] == pytest.approx(1e-4) and values[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert values[100] == pytest.approx(1e-4)


def test_batches_respect_the_token_budget_and_keep_every_item():
    items = [SimpleNamespace(token_ids=[0] * n, name=i) for i, n in enumerate(np.random.default_rng(0).integers(5, 60, size=200))]
    batches = batch_up(items, 256, np.random.default_rng(1))
    assert sorted(x.name for b in batches for x in b) == list(range(200))
    assert all(len(b) * max(len(x.token_ids) for x in b) <= 256 for b in batches if len(b) > 1)
    again = batch_up(items, 256, np.random.default_rng(1))
    assert [[x.name for x in b] for b in batches] == [[x.name for x in b] for b in again]


def test_collate_pads_right_and_marks_image_tokens():
    grid = torch.tensor([1, 4, 4])
    a = Encoded("a", [5, 9, 9, 6], [0, 0, 1, 1], [torch.ones(16, 3)], [grid])
    b = Encoded("b", [5, 7], [0, 1], [], [])
    batch = collate([a, b], pad_id=0, image_token_id=9)
    inputs = batch["inputs"]
    assert inputs["input_ids"].tolist() == [[5, 9, 9, 6], [5, 7, 0, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert inputs["mm_token_type_ids"].tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 0, 1, 1], [0, 1, 0, 0]]
    assert inputs["pixel_values"].shape == (16, 3) and inputs["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_entity_choices_depend_on_the_entity_never_on_the_group():
    from mmsearch_r1.models.config import PretrainConfig
    from mmsearch_r1.models.pretrain import entity_choices
    from mmsearch_r1.world.build import generate_world

    world = generate_world(seed=0, size="small")
    choices = entity_choices(world, PretrainConfig(direct_prob=0.3, direct_spread=0.25), seed=0)
    assert set(choices) == {e.name for e in world.entities}
    by_group = {}
    for entity in world.entities:
        by_group.setdefault(entity.group, []).append(choices[entity.name].direct_prob)
    chances = [sorted(c) for c in by_group.values()]
    assert all(c == pytest.approx(chances[0]) for c in chances)  # every group: the same chances, dealt in its own order
    assert chances[0] == pytest.approx([0.05, 0.175, 0.3, 0.425, 0.55])
    assert entity_choices(world, PretrainConfig(direct_spread=0.25), seed=0) == choices
    assert entity_choices(world, PretrainConfig(direct_spread=0.25), seed=1) != choices
    assert {c.direct_prob for c in entity_choices(world, PretrainConfig(direct_prob=0.3, direct_spread=0.0), seed=0).values()} == {0.3}


def test_name_before_query_makes_only_unrecognised_entities_search_images_first():
    import numpy as np

    from mmsearch_r1.models.config import PretrainConfig
    from mmsearch_r1.models.demos import draw_actions
    from mmsearch_r1.models.pretrain import entity_choices
    from mmsearch_r1.world.build import generate_world

    world = generate_world(seed=0, size="small")
    plain, named = (entity_choices(world, PretrainConfig(name_before_query=on), seed=0) for on in (False, True))
    rng = np.random.default_rng(0)
    for entity in world.entities:
        firsts = {draw_actions(rng, named[entity.name])[0] for _ in range(200)}
        if entity.known_by_sight:
            assert named[entity.name] == plain[entity.name] and firsts == {"answer", "image_search", "text_search"}
        else:  # whether to search stays random; a search starts with the image
            assert named[entity.name].direct_prob == plain[entity.name].direct_prob and firsts == {"answer", "image_search"}


def test_swapped_names_go_only_to_image_searches_on_entities_the_model_cannot_recognise():
    from types import SimpleNamespace as S

    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.demos import Planned
    from mmsearch_r1.models.pretrain import DemoSource
    from mmsearch_r1.world.build import generate_world

    world = generate_world(seed=0, size="small")
    plans = {}
    for i, entity in enumerate(world.entities):
        attribute = entity.facts[0].attribute
        for actions in (("answer",), ("text_search", "answer"), ("image_search", "answer")):
            plans.setdefault((i % 3, "on_demand"), []).append(Planned(S(id=f"{entity.name}{actions}"), entity, attribute, actions))
        plans.setdefault((0, "rag"), []).append(Planned(S(id=entity.name), entity, attribute, ("text_search", "answer")))

    def swapped(share, e=0):
        source = DemoSource.__new__(DemoSource)
        source.cfg, source.world = load_config(None, [f"pretrain.swapped_names={share}"]), world
        return [pl for plans_ in source.with_swapped_names(plans, e).values() for pl in plans_]

    assert all(pl.shown_as is None for pl in swapped(0.0))
    every = swapped(1.0)
    for pl in every:
        searches_images = "image_search" in pl.actions or pl.sample.id == pl.entity.name
        if searches_images and not pl.entity.known_by_sight:
            assert pl.shown_as is not None and pl.shown_as is not pl.entity and not pl.shown_as.known_by_sight
            assert pl.attribute in {f.attribute for f in pl.shown_as.facts}
        else:
            assert pl.shown_as is None
    half = [pl.shown_as is not None for pl in swapped(0.5)]
    assert 0 < sum(half) < sum(pl.shown_as is not None for pl in every)
    assert swapped(0.5) == swapped(0.5) and swapped(0.5, e=1) != swapped(0.5)  # drawn from the seed and the epoch
    source = DemoSource.__new__(DemoSource)
    source.cfg, source.world = load_config(), world
    assert source.cfg.pretrain.naming_drills == 0 and source.naming(0) == []  # off by default: the demo's pretraining is unchanged


def test_no_reading_drills_is_allowed_and_naming_drills_need_unrecognisable_entities():
    from types import SimpleNamespace as S

    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.pretrain import DemoSource

    source = DemoSource.__new__(DemoSource)
    source.cfg, source.world = load_config(None, ["pretrain.reading_drills=0"]), S(entities=[])
    assert source.reading(0, None) == []  # the config allows 0: no drills rather than a crash
    source.cfg, source.world = load_config(None, ["pretrain.naming_drills=4"]), S(entities=[S(known_by_sight=True)])
    with pytest.raises(ConfigError, match="naming_drills=0"):
        source.naming(0)


def test_the_documented_configs_pin_how_their_models_were_pretrained():
    """Threads and the head on the loss positions alone change the rounding, and the fingerprints leave them out
    (a run may move between machines), so only this catches a demo config or the recipe losing its `threads = 1`
    or its `head_on_loss_only = false`: their documented models would change."""
    from pathlib import Path

    from mmsearch_r1.config import load_config
    from mmsearch_r1.demo import demo_config_path

    recipe = Path(__file__).resolve().parents[2] / "configs" / "pretrain.toml"
    for path in (demo_config_path("small"), demo_config_path("default"), recipe):
        pretrain = load_config(path).pretrain
        assert (pretrain.threads, pretrain.head_on_loss_only) == (1, False), path
    defaults = load_config().pretrain
    assert (defaults.threads, defaults.head_on_loss_only) == (2, True)


def test_the_documented_configs_pretrain_what_they_always_did():
    """What the demo configs and the recipe file give pretraining (model, pretrain, protocol, world, seed, as the
    fingerprints see them) is pinned here: a change of a default must not change their documented models. When
    this fails after a default changed, write the old value into the config files that relied on it."""
    from pathlib import Path

    from mmsearch_r1.config import load_config, stamp_settings
    from mmsearch_r1.demo import demo_config_path, fingerprint

    pinned = {demo_config_path("default"): "ff40e0a2e1edaa36", demo_config_path("small"): "592233349d2d24fb",
              Path(__file__).resolve().parents[2] / "configs" / "pretrain.toml": "b399a058c86a06ad"}
    for path, digest in pinned.items():
        cfg = load_config(path)
        presets = {key: cfg.world.preset(key) for key in ("entities", "cities", "train_questions_per_fact")}
        assert presets == {"entities": 20, "cities": 6, "train_questions_per_fact": 3}, path  # the small world's, which the stamp cannot see
        pretraining = cfg.pretrain.for_world(cfg.world.size)  # as pretraining and the demo's stamp see it
        assert fingerprint(cfg.seed, *(stamp_settings(section) for section in (cfg.model, pretraining, cfg.protocol, cfg.world))) == digest, path


def test_a_schedule_of_drills_alone_is_refused_before_anything_runs(tmp_path):
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.config import SCHEDULES
    from mmsearch_r1.models.pretrain import pretrain
    from mmsearch_r1.world.build import generate_world

    (tmp_path / "world").mkdir()
    generate_world(seed=0, size="default").save(tmp_path / "world")  # world.json alone: the refusal comes before the rest is read
    with pytest.raises(ConfigError, match=r"pretrain.drill_epochs \(4\) must be below pretrain.epochs \(2, set\)"):
        pretrain(load_config(None, ["pretrain.epochs=2"]), tmp_path / "world", tmp_path / "out")
    small = SCHEDULES["small"]["epochs"]
    with pytest.raises(ConfigError, match=rf"pretrain.epochs \({small:g}, the small schedule's\)"):  # on the default world
        pretrain(load_config(None, [f"pretrain.drill_epochs={small:g}", "pretrain.schedule=small"]), tmp_path / "world", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unset_schedule_fields_take_the_world_sizes_schedule_and_set_ones_are_kept():
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.config import SCHEDULES

    assert SCHEDULES["default"] == {"epochs": 10.0, "protocol_demos": 450, "reading_drills": 320, "copy_drills": 400, "copy_drills_later": 400, "slips": 0.15}  # the defaults before the schedules, copy drills and slips
    unset = load_config().pretrain
    assert all(getattr(unset, key) is None for key in SCHEDULES["default"])
    assert unset.for_world("default").model_dump() == {**unset.model_dump(), **SCHEDULES["default"]}
    small = unset.for_world("small")
    assert {key: getattr(small, key) for key in SCHEDULES["small"]} == SCHEDULES["small"]
    assert all(SCHEDULES["small"][key] < SCHEDULES["default"][key] for key in ("epochs", "protocol_demos", "reading_drills"))  # the small world's budget is the shorter
    assert all(SCHEDULES["small"][key] == 0 < SCHEDULES["default"][key] for key in ("copy_drills", "copy_drills_later", "slips"))  # they did not help the small world (docs/model.md)
    mixed = load_config(None, ["pretrain.epochs=12", "pretrain.schedule=default"]).pretrain.for_world("small")
    assert (mixed.epochs, mixed.protocol_demos) == (12.0, SCHEDULES["default"]["protocol_demos"])
    assert SCHEDULES["small"].keys() == SCHEDULES["default"].keys()


def test_pretraining_uses_and_writes_out_the_schedule_of_the_worlds_size(tmp_path, monkeypatch):
    import mmsearch_r1.models.pretrain as pretraining
    from mmsearch_r1.config import load_config, stamp_settings
    from mmsearch_r1.models.config import SCHEDULES, PretrainConfig
    from mmsearch_r1.world.build import generate_world

    (tmp_path / "world").mkdir()
    generate_world(seed=0, size="small").save(tmp_path / "world")  # world.json alone
    stamped = {}

    def stamp(cfg, world_dir):
        stamped["pretrain"] = stamp_settings(cfg.pretrain)
        return "stamp"

    def stop(*args):  # the tokenizer's texts are read right after the config is written out
        raise RuntimeError("stop")

    monkeypatch.setattr(pretraining, "read_split", lambda world_dir, split: [])
    monkeypatch.setattr(pretraining, "fingerprint", stamp)
    monkeypatch.setattr(pretraining, "world_texts", stop)
    with pytest.raises(RuntimeError, match="stop"):
        pretraining.pretrain(load_config(None, ["pretrain.reading_drills=7"]), tmp_path / "world", tmp_path / "out")
    expected = {**SCHEDULES["small"], "reading_drills": 7}
    later = PretrainConfig.ADDED_LATER  # a setting added later is left out of the stamp at its old value (config.stamp_settings)
    assert {key: stamped["pretrain"].get(key, later.get(key)) for key in expected} == expected
    written = load_config(tmp_path / "out" / "config.toml").pretrain
    assert {key: getattr(written, key) for key in expected} == expected


def test_the_demos_pretraining_stamp_sees_the_values_the_schedule_gives():
    from mmsearch_r1.config import load_config
    from mmsearch_r1.demo import pretrained_fingerprint
    from mmsearch_r1.models.config import SCHEDULES

    def stamp(*overrides):
        return pretrained_fingerprint("world", load_config(None, list(overrides)))

    # the default config on the default world without copy drills: its stamp from before the schedules (checked on the code of then)
    without = ("pretrain.copy_drills=0", "pretrain.copy_drills_later=0", "pretrain.slips=0")
    assert stamp(*without) == "15fb12fb0e2ff96d" != stamp(*without[:2]) != stamp(without[0]) != stamp()
    assert stamp(*without[1:]) == "5d91835efc35ab25"  # copy drills in the warm-up alone: the defaults' stamp before copy_drills_later and slips
    assert stamp("world.size=small") == "0ecd7f87ddfbe1e7"  # the small schedule has no copy drills: its stamp from before them
    by_hand = [f"pretrain.{key}={value}" for key, value in SCHEDULES["small"].items()]
    assert stamp("world.size=small") == stamp("world.size=small", *by_hand) == stamp("world.size=small", "pretrain.schedule=small")
    assert stamp("world.size=small", "pretrain.schedule=default") == stamp("world.size=small", *(f"pretrain.{key}={value}" for key, value in SCHEDULES["default"].items()))
    assert stamp("world.size=small") != stamp("world.size=small", "pretrain.schedule=default")


def test_copy_drills_repeat_the_worlds_answer_words_each_epoch_in_their_counts(monkeypatch):
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.demos import world_values
    from mmsearch_r1.models.config import COPY_WORDS
    from mmsearch_r1.models.pretrain import DemoSource
    from mmsearch_r1.world.build import generate_world

    monkeypatch.setattr(DemoSource, "_encode", lambda self, demo: demo)
    source = DemoSource.__new__(DemoSource)
    source.world, source.cfg = generate_world(seed=0, size="small"), load_config(None, ["pretrain.copy_drills=5", "pretrain.copy_drills_later=2"])
    answers = {value for values in world_values(source.world).values() for value in values}
    names = {entity.name for entity in source.world.entities}
    drills = source.copying(0)
    assert len(drills) == len(source.copying(3)) == 5 and len(source.copying(4)) == len(source.copying(9)) == 2  # the 4 warm-up epochs, then the later ones
    for demo in drills:
        shown = demo.messages[0].text.removeprefix("Repeat:").split()
        assert len(shown) == COPY_WORDS and set(shown) <= answers and not set(shown) & names
        assert demo.messages[1].text.split() == shown and all(piece.trained for piece in demo.turns[0])
    said = [demo.messages[0].text for demo in drills]
    assert said == [demo.messages[0].text for demo in source.copying(0)] != [demo.messages[0].text for demo in source.copying(1)]  # the seed's, fresh each epoch
    assert [demo.messages[0].text for demo in source.copying(4)] != [demo.messages[0].text for demo in source.copying(5)]
    source.cfg = load_config(None, ["pretrain.copy_drills=0", "pretrain.copy_drills_later=3"])
    assert source.copying(0) == [] and len(source.copying(4)) == 3
    source.cfg = load_config(None, ["pretrain.copy_drills=5", "pretrain.copy_drills_later=0"])
    assert len(source.copying(3)) == 5 and source.copying(4) == []


def test_an_epochs_drills_hold_its_copy_drills(monkeypatch):
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.pretrain import DemoSource
    from mmsearch_r1.protocol import Templates
    from mmsearch_r1.world.build import generate_world

    monkeypatch.setattr(DemoSource, "_encode", lambda self, demo: demo)
    monkeypatch.setattr("mmsearch_r1.world.render.render_entity", lambda world, entity, rng: None)  # no pixels needed
    source = DemoSource.__new__(DemoSource)
    source.world, source.templates = generate_world(seed=0, size="small"), Templates.load()
    source.cfg = load_config(None, ["pretrain.copy_drills=3", "pretrain.copy_drills_later=1", "pretrain.reading_drills=0", "pretrain.sight_drills=1", "pretrain.unrecognised_drills=1"])
    copies = [[d.sample_id for d in source.drills(e) if d.group == "copy"] for e in (0, 3, 4)]
    assert copies == [[f"copy-0-{r}" for r in range(3)], [f"copy-3-{r}" for r in range(3)], ["copy-4-0"]]


def test_a_checkpoint_of_older_demonstrations_is_not_resumed(tmp_path, monkeypatch):
    import mmsearch_r1.models.config as model_config
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.pretrain import fingerprint

    (tmp_path / "world.json").write_text("{}")
    cfg = load_config()
    now = fingerprint(cfg, tmp_path)
    monkeypatch.setattr(model_config, "DEMONSTRATIONS_VERSION", model_config.DEMONSTRATIONS_VERSION + 1)
    assert fingerprint(cfg, tmp_path) != now


def test_the_pretraining_recipe_file_differs_from_the_demos_only_where_it_says():
    """configs/pretrain.toml marks each key where it leaves the demo's pretraining: no other key may differ."""
    import re
    from pathlib import Path

    from mmsearch_r1.config import load_config, stamp_settings
    from mmsearch_r1.demo import demo_config_path

    path = Path(__file__).resolve().parents[2] / "configs" / "pretrain.toml"
    marked, section = set(), ""
    for line in path.read_text().splitlines():
        if m := re.match(r"\[(\w+)\]", line):
            section = m.group(1)
        elif "# differs from the demo" in line:
            marked.add(f"{section}.{line.split('=')[0].strip()}")
    recipe, demo = load_config(path), load_config(demo_config_path("default"))
    differ = set()
    for name in ("model", "pretrain", "protocol", "world"):  # what pretraining reads, with the seed
        a, b = stamp_settings(getattr(recipe, name)), stamp_settings(getattr(demo, name))
        differ |= {f"{name}.{key}" for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
    assert differ == marked == {"model.num_layers", "pretrain.epochs", "pretrain.name_before_query", "pretrain.direct_drill_share"}
    assert recipe.seed == demo.seed and recipe.world.size == "small"


def test_slips_go_to_the_share_of_plans_that_write_a_name_where_they_can_stand():
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.demos import Planned, slip_words
    from mmsearch_r1.models.pretrain import DemoSource
    from mmsearch_r1.world.build import generate_world

    source = DemoSource.__new__(DemoSource)
    source.world = generate_world(seed=0, size="small")
    entity = source.world.entities[0]
    plans = {(0, "on_demand"): [Planned(None, entity, "a", actions) for actions in
                                [("answer",), ("image_search", "answer"), ("text_search", "answer"), ("image_search", "text_search", "answer")] * 50],
             (0, "rag"): [Planned(None, entity, "a", ("text_search", "answer"))] * 50, (0, "direct"): [Planned(None, entity, "a", ("answer",))] * 50}
    source.cfg = load_config(None, ["pretrain.slips=0"])
    assert source.with_slips(plans, 4) is plans
    source.cfg = load_config(None, ["pretrain.slips=1"])
    slipped = source.with_slips(plans, 4)
    assert slipped == source.with_slips(plans, 4) != source.with_slips(plans, 5)  # the seed's, fresh each epoch
    can = {("answer",): set(), ("image_search", "answer"): {"results"}, ("text_search", "answer"): {"query"},
           ("image_search", "text_search", "answer"): {"results", "query"}}
    for (_, workflow), planned in slipped.items():
        for p in planned:
            places = {"results", "query"} if workflow == "rag" else can[p.actions]
            assert (p.slip is None) == (not places) and (p.slip is None or (p.slip.place in places and p.slip.word in slip_words(source.world)))
    assert {p.slip.place for p in slipped[(0, "on_demand")] if p.actions == ("image_search", "text_search", "answer")} == {"results", "query"}
    source.cfg = load_config(None, ["pretrain.slips=0.2"])
    share = sum(p.slip is not None for p in source.with_slips(plans, 4)[(0, "on_demand")]) / 150  # of the 150 that can slip
    assert 0.1 < share < 0.3
