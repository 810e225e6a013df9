"""The oracle's plans on a real small world: the searches each question needs, then the right answer."""

from mmsearch_r1.oracle import NEED_ACTIONS, image_key


def test_world_plans_follow_each_questions_need(tmp_path):
    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.oracle import world_plans
    from mmsearch_r1.protocol import parse_turn, turn_shape
    from mmsearch_r1.world import build_world, load_world

    world_dir = build_world(tmp_path / "world", seed=0, size="small")
    world = load_world(world_dir)
    samples = read_parquet(world_dir / "test.parquet")
    plans = world_plans(samples, world)
    teacher = world_plans(samples, world, with_answers=True)
    for sample in samples:
        plan, full = plans[image_key(sample.image)], teacher[image_key(sample.image)]
        assert tuple(parse_turn(t).kind for t in plan) == NEED_ACTIONS[sample.search_need][:-1]
        assert full[:-1] == plan
        assert turn_shape(full[-1]) == "answer" and parse_turn(full[-1]).text == sample.answers[0]
        if "text_search" in NEED_ACTIONS[sample.search_need]:
            assert world.entity(sample.extra["entity"]).name in parse_turn(plan[-1]).query
