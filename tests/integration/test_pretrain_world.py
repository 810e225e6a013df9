"""Pretraining on a real (small) world: runs end to end, resumes exactly, writes its report, loads back."""

import json

import pytest

torch = pytest.importorskip("torch")

from mmsearch_r1.config import load_config  # noqa: E402
from mmsearch_r1.errors import ConfigError, DataError  # noqa: E402
from mmsearch_r1.models import load_policy  # noqa: E402
from mmsearch_r1.models import pretrain as pretrain_module  # noqa: E402
from mmsearch_r1.models.pretrain import pretrain  # noqa: E402
from mmsearch_r1.world.build import build_world  # noqa: E402

TINY = [
    "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.num_kv_heads=1", "model.intermediate_size=64",
    "model.vision_hidden_size=16", "model.vision_depth=1", "model.vision_heads=1", "model.vision_intermediate_size=32",
    "model.vocab_size=600", "pretrain.epochs=1", "pretrain.protocol_demos=24", "pretrain.drill_epochs=0", "pretrain.reading_drills=20", "pretrain.sight_drills=1", "pretrain.fact_drills=1",
    "pretrain.batch_tokens=3000", "pretrain.checkpoint_every=2", "pretrain.report_samples=2", "pretrain.report_max_new_tokens=12",
]


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), seed=3, size="small")


def interrupted_pretraining(cfg, world_dir, out, monkeypatch) -> None:
    """Run ``pretrain`` into ``out`` and interrupt it during step 4, after its checkpoint at step 2."""
    real_collate, calls = pretrain_module.collate, {"n": 0}

    def failing_collate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(pretrain_module, "collate", failing_collate)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, world_dir, out)
    monkeypatch.setattr(pretrain_module, "collate", real_collate)


def test_pretrain_writes_a_loadable_policy_and_its_report(world_dir, tmp_path):
    cfg = load_config(None, TINY)
    out = pretrain(cfg, world_dir, tmp_path / "policy")
    policy = load_policy(out)
    assert policy.tokenizer.tokenize("<answer>")[0] == "<answer>"
    report = json.loads((out / "pretrain_report.json").read_text())
    figures = report["evaluation"]["figures"]
    assert set(figures) == {"direct", "rag", "on_demand_t1"}
    for run in figures.values():
        assert set(run) == {"sight_facts", "sight_only", "facts_only", "neither", "all"}
        assert run["all"]["n"] == 8 and 0.0 <= run["all"]["format_valid"] <= 1.0
    assert figures["direct"]["all"]["search_ratio"] == 0.0  # the direct workflow offers no tools
    assert report["training"]["losses"][-1] < report["training"]["losses"][0]
    assert "| sight_facts |" in (out / "pretrain_report.md").read_text()
    assert (out / "config.toml").is_file() and (out / "checkpoint" / "state.pt").is_file()


def test_interrupted_pretraining_resumes_to_the_same_weights(world_dir, tmp_path, monkeypatch):
    cfg = load_config(None, TINY + ["pretrain.report_samples=0"])
    straight = load_policy(pretrain(cfg, world_dir, tmp_path / "straight"))

    interrupted_pretraining(cfg, world_dir, tmp_path / "resumed", monkeypatch)
    out = pretrain(cfg, world_dir, tmp_path / "resumed")
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["training"]["resumed_from_step"] == 2
    resumed = load_policy(out)
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_refuses_a_different_config(world_dir, tmp_path):
    cfg = load_config(None, TINY + ["pretrain.report_samples=0", "pretrain.epochs=0.2"])
    pretrain(cfg, world_dir, tmp_path / "run")
    written = (tmp_path / "run" / "config.toml").read_text()
    with pytest.raises(ConfigError, match="another config"):
        pretrain(load_config(None, TINY + ["pretrain.report_samples=0", "pretrain.epochs=0.2", "pretrain.lr=0.01"]), world_dir, tmp_path / "run")
    assert (tmp_path / "run" / "config.toml").read_text() == written  # refused before anything was written


def test_missing_world_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="world build"):
        pretrain(load_config(None, TINY), tmp_path / "nothing", tmp_path / "out")


def test_every_demonstration_names_the_entity_its_own_top_title_gives(world_dir, monkeypatch):
    """Swapped names and name-reading drills on the real indexes: whatever a demonstration says after image
    results is the name its own top title gives, also for samples that recur in an epoch's second round."""
    from types import SimpleNamespace

    from mmsearch_r1.models.demos import name_in, top_image_title
    from mmsearch_r1.models.pretrain import DemoSource, read_split, world_toolbox
    from mmsearch_r1.world.schema import load_world

    samples = read_split(world_dir, "train")
    cfg = load_config(None, [f"pretrain.protocol_demos={2 * len(samples)}", "pretrain.swapped_names=1.0", "pretrain.naming_drills=12", "pretrain.drill_epochs=0", "pretrain.rag_share=0.3"])
    monkeypatch.setattr(DemoSource, "_encode", lambda self, demo: demo)
    demos = DemoSource(cfg, load_world(world_dir), samples, world_toolbox(world_dir), SimpleNamespace(image_processor=None)).epoch(0, {})
    said = [(d, m.text.split("The results show ")[1].split(",")[0]) for d in demos for m in d.messages if m.role == "assistant" and "The results show " in m.text]
    assert sum(d.group == "naming" for d, _ in said) == 12
    pictured = {s.id: s.extra["entity"] for s in samples}
    swapped = [name for d, name in said if d.group != "naming" and name != pictured[d.sample_id]]
    assert len(said) > 100 and len(swapped) > 20  # many names read, many of them swapped in
    for demo, name in said:
        assert name_in(top_image_title(demo.messages), name), (demo.sample_id, name, top_image_title(demo.messages))
    by_name = {e.name: e for e in load_world(world_dir).entities}
    drilled = {name for d, name in said if d.group == "naming"}
    assert len(drilled) > 1 and not any(by_name[name].known_by_sight for name in drilled)  # a recognised entity keeps its own name


def test_slipped_demonstrations_stay_in_the_format_on_the_real_indexes(world_dir, monkeypatch):
    """Slips everywhere they can stand (every workflow, the real indexes and made-up results): every turn is
    in the format and takes its planned action, and each demonstration that writes a name has one slipped
    word, out of the loss."""
    from types import SimpleNamespace

    from mmsearch_r1.models.demos import slip_words
    from mmsearch_r1.models.pretrain import DemoSource, read_split, world_toolbox
    from mmsearch_r1.protocol import turn_shape
    from mmsearch_r1.world.schema import load_world

    samples, world = read_split(world_dir, "train"), load_world(world_dir)
    cfg = load_config(None, [f"pretrain.protocol_demos={len(samples)}", "pretrain.slips=1.0", "pretrain.drill_epochs=0", "pretrain.rag_share=0.3"])
    monkeypatch.setattr(DemoSource, "_encode", lambda self, demo: demo)
    demos = [d for d in DemoSource(cfg, world, samples, world_toolbox(world_dir), SimpleNamespace(image_processor=None)).epoch(0, {})
             if d.sample_id in {s.id for s in samples}]
    words = set(slip_words(world))
    assert len(demos) == len(samples)
    slipped = 0
    for demo in demos:
        turns = [m.text for m in demo.messages if m.role == "assistant"]
        assert [turn_shape(t) for t in turns] == list(demo.actions), turns
        untrained = [p.text.strip() for turn in demo.turns for p in turn if not p.trained and p.text.strip() in words]
        writes_a_name = "text_search" in demo.actions or "The results show" in "".join(turns)
        assert bool(untrained) == writes_a_name, (demo.sample_id, turns)
        slipped += writes_a_name
    assert slipped > len(samples) // 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_pretraining_on_a_gpu_follows_the_cpu_run(world_dir, tmp_path, monkeypatch):
    """The same schedule on either device: the losses agree within 2 % (other kernels, other rounding), the
    report samples on the GPU, and a run interrupted on the CPU resumes on the GPU from its checkpoint."""
    cpu = pretrain(load_config(None, TINY + ["pretrain.report_samples=0"]), world_dir, tmp_path / "cpu")
    gpu = pretrain(load_config(None, TINY + ["pretrain.device=cuda"]), world_dir, tmp_path / "gpu")
    cpu_losses = json.loads((cpu / "pretrain_summary.json").read_text())["training"]["losses"]
    report = json.loads((gpu / "pretrain_report.json").read_text())
    assert len(report["training"]["losses"]) == len(cpu_losses) > 4
    assert report["training"]["losses"] == pytest.approx(cpu_losses, rel=2e-2)
    assert report["evaluation"]["figures"]["direct"]["all"]["n"] == 8

    interrupted_pretraining(load_config(None, TINY + ["pretrain.report_samples=0"]), world_dir, tmp_path / "moved", monkeypatch)
    moved = pretrain(load_config(None, TINY + ["pretrain.report_samples=0", "pretrain.device=cuda"]), world_dir, tmp_path / "moved")
    summary = json.loads((moved / "pretrain_summary.json").read_text())["training"]
    assert summary["resumed_from_step"] == 2 and summary["losses"][:2] == cpu_losses[:2]  # the CPU's first steps, kept
    assert summary["losses"][2:] == pytest.approx(cpu_losses[2:], rel=2e-2)


def test_pretraining_refuses_a_device_torch_cannot_use(world_dir, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the refusal is for machines without one")
    with pytest.raises(ConfigError, match="^pretrain.device is `cuda:0`, but torch"):
        pretrain(load_config(None, TINY + ["pretrain.device=cuda:0"]), world_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_command_with_the_report_off_prints_no_report(world_dir, tmp_path):
    from typer.testing import CliRunner

    from mmsearch_r1.cli import app

    sets = [arg for key in TINY + ["pretrain.epochs=0.2", "pretrain.report_samples=0"] for arg in ("--set", key)]
    result = CliRunner().invoke(app, ["pretrain", "--world", str(world_dir), "--out", str(tmp_path / "run"), *sets], catch_exceptions=False)
    assert result.exit_code == 0 and "pretrained policy in" in result.output and "| sight_facts |" not in result.output
