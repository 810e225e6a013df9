"""The demo: one command from nothing to a tiny model that has learned *when* to search.

Stages, each in its own folder under the output folder and cached there (a finished stage whose inputs and
config did not change is reused, so a second run only does what is new):

    world     build the demo world (entities, images, pages, questions, local indexes)
    pretrain  give the tiny Qwen2.5-VL partial knowledge and the protocol, with uncalibrated search habits
    balance   label the training questions by the pretrained model's own success, sample 1 free : 2 required
    grpo      GRPO with the search penalty on the balanced set
    evaluate  in_domain and held_out tests: direct, rag and on-demand of the pretrained model, the oracle,
              and on-demand of the trained model
    report    results.json, results.md, plots, the trajectory viewer, the training-dynamics plot

Balance and the pretrained model's evaluations (direct, rag, on-demand, the oracle) need only the pretrained
model, so they run side by side, the evaluations in a second process, on a core each.

``--ablations`` adds GRPO without the search penalty (``no_penalty``), GRPO on search-required questions only
(``unbalanced``) and supervised fine-tuning on oracle trajectories with about twice the data (``sft``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from pydantic import Field

from mmsearch_r1.config import Section, save_config, stamp_settings
from mmsearch_r1.errors import ConfigError


class DemoConfig(Section):
    """Settings of the demo's supervised fine-tuning ablation (``mmsearch-r1 demo --ablations``)."""

    sft_data_factor: float = Field(2.0, gt=0.0, le=16.0, description="SFT questions per question the GRPO run trained on (published: about 2); at most every training question of the world.")
    sft_epochs: int = Field(2, ge=1, le=100, description="Passes over the SFT trajectories.")
    sft_lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW learning rate of SFT.")
    sft_micro_batch_size: int = Field(16, ge=1, le=1024, description="Trajectories per SFT optimizer step.")


SPLITS = {"in_domain": "test.parquet", "held_out": "heldout.parquet"}
DEMO_WORKFLOWS = ("direct", "rag", "on_demand", "pretrained", "oracle")
ABLATIONS = ("no_penalty", "unbalanced", "sft")
NO_PENALTY = {"search_penalty": 0.0, "penalty_warmup_steps": 0}  # the reward settings of the no-penalty ablation
STAMP = ".stage.json"
STAGE_LOG = "stage.log"  # the output of a stage made in a second process
BESIDE_THREADS = 1  # torch threads of balance and of the evaluations made beside it: the two processes share 2 cores
# Planning figures for the progress display (seconds on 2 CPU cores), per world size; see docs/results.md.
# A GRPO step is timed with the demo's settings; the ablations' steps search twice and take about twice as long.
ESTIMATES_S = {
    "small": {"world": 2, "pretrain": 200, "balance": 32, "grpo_step": 4.5, "eval": 10},
    "default": {"world": 5, "pretrain": 330, "balance": 60, "grpo_step": 4.0, "eval": 30},  # all but world: the 96-entity world of before 2026-12-05
}


def demo_config_path(size: str) -> Path:
    """The packaged demo configuration for a world size (``default`` or ``small``)."""
    return Path(__file__).parent / "configs" / ("demo.toml" if size == "default" else f"demo-{size}.toml")


# --- stage caching ------------------------------------------------------------------------------------


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (config sections, upstream fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def world_fingerprint(cfg: Any) -> str:
    """The world stage's stamp: the seed and the world settings, and for the default size its preset too, which
    changed on 2026-12-05 (96 entities, then 48): a default-size world made before is built again, while the
    small size, whose preset never changed, keeps the stamps its folders have."""
    from mmsearch_r1.world.config import SIZE_PRESETS

    settings = stamp_settings(cfg.world)
    if cfg.world.size == "default":
        settings["preset"] = SIZE_PRESETS["default"]
    return fingerprint(cfg.seed, settings)


def pretrained_fingerprint(world: str, cfg: Any) -> str:
    """The pretraining stage's stamp: its world, its settings (the schedule of the world's size where unset), the
    version of the code's demonstrations, and its device when that is not the CPU (``pretrain.device`` is
    run-only for resuming a checkpoint, not for reusing a demo stage: a folder made on the CPU and run again
    with ``--device cuda`` pretrains again)."""
    from mmsearch_r1.models.config import DEMONSTRATIONS_VERSION

    pretraining = cfg.pretrain.for_world(cfg.world.size)  # the values the run uses: a changed schedule makes the model again
    parts = [world, stamp_settings(cfg.model), stamp_settings(pretraining), stamp_settings(cfg.protocol), DEMONSTRATIONS_VERSION]
    if cfg.pretrain.device != "cpu":  # a GPU pretrains another model; CPU stamps stay those made before devices existed
        parts.append(cfg.pretrain.device)
    return fingerprint(*parts)


def balanced_fingerprint(pretrained: str, cfg: Any) -> str:
    """The balanced set's: its labels weigh the reward's search penalty when they drop search-paying questions.

    Under the published rule the stamp is the one balanced sets had before ``drop_search_paying`` existed, so
    a demo folder made then keeps its balanced set and GRPO run.
    """
    balance = stamp_settings(cfg.balance)
    if balance.pop("drop_search_paying"):
        return fingerprint(pretrained, balance, cfg.reward.match, cfg.reward.search_penalty)
    return fingerprint(pretrained, balance, cfg.reward.match)


def grpo_fingerprint(balanced: str, cfg: Any, **reward_updates: Any) -> str:
    """The fingerprint of a GRPO stage: its data's, and the settings it runs with (``reward_updates`` applied).

    The no-penalty ablation runs with the penalty set to 0, so changing the demo's penalty does not redo it.
    """
    reward = cfg.reward.model_copy(update=reward_updates)
    return fingerprint(balanced, stamp_settings(cfg.train), stamp_settings(reward), stamp_settings(cfg.engine))


def eval_fingerprint_inputs(cfg: Any) -> tuple[dict, dict]:
    """What an evaluation stage's fingerprint adds to its policy's: the evaluation and the reward (it reports rewards)."""
    return stamp_settings(cfg.eval), stamp_settings(cfg.reward)


def _stamp(folder: Path) -> dict | None:
    """The stage record in ``folder``: None when there is none, {} when it cannot be read."""
    path = folder / STAMP
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_stamp(folder: Path, record: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{STAMP}.partial"
    partial.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(partial, folder / STAMP)  # atomic: a killed run leaves the old record or the new one


def stage_done(folder: Path, stamp: str) -> bool:
    """Whether ``folder`` holds a finished stage made from inputs with this fingerprint."""
    record = _stamp(folder) or {}
    return record.get("fingerprint") == stamp and record.get("done", True)


def mark_started(folder: Path, stamp: str) -> bool:
    """Make ``folder`` ready for a stage with this fingerprint; True when it resumes work already there.

    Work from the same inputs is kept, so an interrupted stage resumes from its checkpoints. A stage folder
    made from other inputs is cleared: resumed, it would pass off the old run as this one. A folder the
    demo did not make (no record) is left alone: the stage stops with an error unless it is empty.
    """
    record = _stamp(folder)
    if record is None and folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} holds files the demo did not make (it has no {STAMP}); move them away or choose another --out.")
    resumes = record is not None and record.get("fingerprint") == stamp
    if record is not None and not resumes:
        shutil.rmtree(folder)
    _write_stamp(folder, {"fingerprint": stamp, "done": False})
    return resumes


def mark_done(folder: Path, stamp: str, seconds: float, **info: Any) -> None:
    _write_stamp(folder, {"fingerprint": stamp, "done": True, "seconds": round(seconds, 1), **info})


@dataclass
class Stage:
    """One cached step of the demo: a folder, the fingerprint of its inputs, and how to make it.

    ``threads`` pins torch's CPU threads for the stage, so that its numbers do not hang on what ran before it
    in the same process. A stage whose ``beside`` names another stage is made at the same time as that one,
    in a second process; its ``make`` must then pickle (a module-level function, or a ``functools.partial``
    of one).
    """

    name: str
    folder: Path
    stamp: str
    make: Callable[[Path], Any]
    estimate_s: float  # a planning figure for the progress display, from measured runs
    threads: int | None = None
    beside: str | None = None


def make_stage(stage: Stage, clock: Callable[[], float] = time.perf_counter, log: bool = False) -> tuple[float, bool]:
    """Make ``stage`` in its folder; returns the seconds it took and whether it resumed work already there.

    With ``log``, everything the stage prints goes to ``STAGE_LOG`` in its folder (a second process's output).
    """
    resumed = mark_started(stage.folder, stage.stamp)
    if stage.threads:
        import torch

        torch.set_num_threads(stage.threads)
    with _output_to(stage.folder / STAGE_LOG) if log else contextlib.nullcontext():
        began = clock()
        stage.make(stage.folder)
        seconds = clock() - began
    mark_done(stage.folder, stage.stamp, seconds)
    return seconds, resumed


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's standard output and error, C libraries' included, to ``path``."""
    with path.open("a") as log:
        sys.stdout.flush(), sys.stderr.flush()
        saved = [os.dup(1), os.dup(2)]
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            traceback.print_exc()  # kept in the log; the error itself goes on to the first process
            raise
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def _make_in_second_process(stages: list[Stage], send: Any) -> None:
    """A second process's work: ``stages`` one after another. Sends ``("done", seconds by folder)``, or
    ``("error", the pickled error or None, its type and message)``; ends itself if the first process dies."""
    import multiprocessing
    import pickle
    import threading

    parent = multiprocessing.parent_process()
    if parent is not None:  # a demo killed outright must not leave this one writing into its folders
        threading.Thread(target=lambda: (parent.join(), os._exit(1)), daemon=True).start()
    try:
        send.send(("done", {stage.folder.name: round(make_stage(stage, log=True)[0], 1) for stage in stages}))
    except BaseException as error:
        try:
            pickled = pickle.dumps(error)
        except Exception:
            pickled = None
        send.send(("error", pickled, f"{type(error).__name__}: {error}"))


class SecondProcess:
    """Stages made one after another in a second process while this process makes another one.

    Started with ``spawn``: a fork would copy torch's thread pools and any GPU state. Leaving the ``with``
    block ends the process, finished or not; an unfinished stage stays unfinished and the next run resumes it.
    """

    def __init__(self, stages: list[Stage]):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.folders = [stage.folder for stage in stages]
        self.receive, send = context.Pipe(duplex=False)
        self.process = context.Process(target=_make_in_second_process, args=(stages, send), name="mmsearch-r1 demo, second process")
        try:
            self.process.start()
        except Exception as error:  # most often a ``make`` that does not pickle
            self.receive.close()
            names = ", ".join(stage.name for stage in stages)
            raise TypeError(f"the stages {names} cannot run in a second process ({error}); give each a ``make`` that pickles: "
                            "a module-level function, or a functools.partial of one.") from error
        finally:
            send.close()

    @property
    def logs(self) -> str:
        return ", ".join(str(folder / STAGE_LOG) for folder in self.folders)

    def done(self) -> bool:
        """Whether the stages have finished (or failed), so that ``result`` will not wait."""
        return self.receive.poll()

    def result(self) -> dict[str, float]:
        """Wait for the stages; their seconds by folder name. Their error, if one stopped them, is raised here."""
        import pickle

        try:
            outcome = self.receive.recv()
        except EOFError:  # it ended without a word: killed, or out of memory
            self.process.join()
            raise RuntimeError(f"the demo's second process ended (exit code {self.process.exitcode}) before its stages were done; "
                               f"their output is in {self.logs}, and running the demo again resumes them.") from None
        self.process.join()
        if outcome[0] == "done":
            return outcome[1]
        _, pickled, text = outcome
        try:
            error = pickle.loads(pickled)
        except Exception:  # an error that does not pickle, or not back, still comes with its type and message
            error = RuntimeError(text)
        if hasattr(error, "add_note"):  # Python 3.11 on
            error.add_note(f"(raised in the demo's second process; its traceback is in {self.logs})")
        raise error

    def __enter__(self) -> "SecondProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()
        self.receive.close()


class StageRunner:
    """Runs stages in order, skipping finished ones, and tells which runs and roughly how long is left.

    Stages marked ``beside`` another are made in a second process while that one runs here (when it is cached,
    the first of them runs here instead, beside the others); the rest run here, one at a time.

    The time left is the stages' planning figures scaled by this run's pace: the seconds the stages made from
    the start so far took against their figures, once those figures add up to ``PACE_FROM_S`` (a GPU or a
    busy host then reads true after the pretraining). A stage resumed from its checkpoints does only part of
    its work, so it does not count, nor do stages made in the second process. ``run`` returns the seconds each
    stage took, by folder name (for a cached stage, when it was made).
    """

    PACE_FROM_S = 20.0

    def __init__(self, stages: list[Stage], console: Any, clock: Callable[[], float] = time.perf_counter):
        for i, stage in enumerate(stages):
            if stage.beside is not None and stage.beside not in {s.name for s in stages[:i] if s.beside is None}:
                raise ValueError(f"stage {stage.name!r} is to run beside {stage.beside!r}, which is not a stage before it that runs in this process.")
        self.stages, self.console, self.clock = stages, console, clock
        self.seconds: dict[str, float] = {}
        self.made: list[tuple[float, float]] = []  # (planned, taken) of the stages this run made from the start

    def pace(self) -> float:
        planned = sum(plan for plan, _ in self.made)
        return sum(taken for _, taken in self.made) / planned if planned >= self.PACE_FROM_S else 1.0

    def left_s(self, start: int) -> float:
        """The time left from stage ``start`` on: a stage and those beside it take as long as the longer of the two."""
        pending = [s for s in self.stages[start:] if not stage_done(s.folder, s.stamp)]
        names = {s.name for s in pending}
        planned = sum(max(s.estimate_s, sum(b.estimate_s for b in pending if b.beside == s.name)) for s in pending if s.beside not in names)
        return self.pace() * planned

    def run(self) -> dict[str, float]:
        for i, stage in enumerate(self.stages):
            if stage.beside:
                continue  # made with the stage it goes beside
            together = [i] + [j for j, other in enumerate(self.stages) if other.beside == stage.name]
            todo = [j for j in together if not self._reuse(j)]
            if len(todo) > 1:  # the first here (the main stage, unless it is cached), the others in a second process
                self._make_beside(todo[0], todo[1:])
            elif todo:
                self._make(todo[0])
        return self.seconds

    def _label(self, i: int) -> str:
        return f"[{i + 1}/{len(self.stages)}] {self.stages[i].name}"

    def _reuse(self, i: int) -> bool:
        """Whether stage ``i`` is finished already (then it is reported as cached)."""
        stage = self.stages[i]
        if not stage_done(stage.folder, stage.stamp):
            return False
        self.console.print(f"{self._label(i)}: cached in {stage.folder}")
        self.seconds[stage.folder.name] = (_stamp(stage.folder) or {}).get("seconds")
        return True

    def _make(self, i: int) -> None:
        stage = self.stages[i]
        self.console.rule(f"{self._label(i)} — about {_minutes(self.left_s(i))} left for the whole demo")
        seconds, resumed = make_stage(stage, self.clock)
        if not resumed:
            self.made.append((stage.estimate_s, seconds))
        self.seconds[stage.folder.name] = round(seconds, 1)
        self.console.print(f"{self._label(i)}: done in {_minutes(seconds)}")

    def _make_beside(self, i: int, side: list[int]) -> None:
        names = ", ".join(self._label(j) for j in side)
        self.console.print(f"{names}: made beside {self.stages[i].name}, in a second process (output: {STAGE_LOG} in each folder)")
        with SecondProcess([self.stages[j] for j in side]) as second:
            self._make(i)
            if not second.done():
                self.console.print(f"waiting for {names} (output: {second.logs})")
            self.seconds |= second.result()
        for j in side:
            self.console.print(f"{self._label(j)}: done in {_minutes(self.seconds[self.stages[j].folder.name])}, beside {self.stages[i].name}")


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


# --- the pieces -------------------------------------------------------------------------------------------


def world_toolbox(world_dir: Path, cfg: Any):
    """The world's local indexes as tools, behind a cache in the world folder."""
    from mmsearch_r1.tools import build_toolbox

    tools = cfg.tools.with_local_indexes(world_dir)
    tools.cache.dir = world_dir / "tool_cache"
    return build_toolbox(tools)


def hf_engine(policy_dir: Path, cfg: Any):
    from mmsearch_r1.engines import build_engine

    return build_engine(cfg.engine, cfg.model.model_copy(update={"path": policy_dir}))


def run_balance(data: Path, policy_dir: Path, out: Path, cfg: Any, toolbox: Any, *, free_share: float | None = None) -> Path:
    """Label the questions of ``data`` with the pretrained model and write ``out``: train.parquet (the balanced
    set, whose path is returned), labelled.parquet and balance.json."""
    from mmsearch_r1.data import read_parquet, write_parquet
    from mmsearch_r1.data.balance import balance

    balance_cfg = cfg.balance if free_share is None else cfg.balance.model_copy(update={"free_share": free_share})
    result = balance(
        read_parquet(data), hf_engine(policy_dir, cfg), toolbox, balance_cfg,
        protocol=cfg.protocol, max_new_tokens=cfg.engine.sampling.max_new_tokens, match=cfg.reward.match,
        search_penalty=cfg.reward.search_penalty, seed=cfg.seed, progress=True,
    )
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(result.labelled, out / "labelled.parquet")
    path = write_parquet(result.selected, out / "train.parquet")
    (out / "balance.json").write_text(json.dumps(result.summary(), indent=1) + "\n")
    return path


def run_grpo(train_data: Path, policy_dir: Path, world_dir: Path, out: Path, cfg: Any, **reward_updates: Any) -> Path:
    """GRPO from the pretrained policy on ``train_data``; returns the trained policy folder."""
    from mmsearch_r1.train.state import latest_checkpoint
    from mmsearch_r1.train.trainer import train

    run_cfg = cfg.model_copy(deep=True)
    run_cfg.out_dir = out
    run_cfg.train.data = train_data
    run_cfg.model.path = policy_dir
    for key, value in reward_updates.items():
        setattr(run_cfg.reward, key, value)
    # An interrupted stage resumes from its newest checkpoint.
    return train(run_cfg, resume=latest_checkpoint(out) is not None, toolbox=world_toolbox(world_dir, cfg))


def run_evaluation(policy_dir: Path, world_dir: Path, workflows: list[str], out: Path, cfg: Any, engine: Any = None) -> Path:
    """Evaluate one policy (or ``engine``) on both test splits in ``workflows``; returns its ``results.json``."""
    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.eval.run import EvalData, evaluate

    data = [EvalData(split, read_parquet(world_dir / name)) for split, name in SPLITS.items()]
    eval_cfg = cfg.eval.model_copy(update={"workflows": workflows, "match": cfg.reward.match})
    engine = engine or hf_engine(policy_dir, cfg)
    result = evaluate(data, engine, world_toolbox(world_dir, cfg), out_dir=out, eval_cfg=eval_cfg,
                      protocol=cfg.protocol, sampling=cfg.engine.sampling, reward_cfg=cfg.reward, seed=cfg.seed, progress=True)
    return result.files["results"]


def run_oracle_evaluation(policy_dir: Path, world_dir: Path, out: Path, cfg: Any) -> Path:
    """Evaluate the oracle (scripted searches by need, then the pretrained model's answer) on both splits.

    Questions are run in groups by the length of their plan, each with ``max_turns`` one past the plan, so
    the model's own turn must answer: a search it asks there ends the episode, as a search in the last turn
    does under the protocol. The report then covers every group.
    """
    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.eval.run import EvalData, evaluate, report
    from mmsearch_r1.oracle import OracleEngine, image_key, world_plans
    from mmsearch_r1.world import load_world

    data = [EvalData(split, read_parquet(world_dir / name)) for split, name in SPLITS.items()]
    plans = world_plans([s for d in data for s in d.samples], load_world(world_dir))
    engine = OracleEngine(hf_engine(policy_dir, cfg), plans)
    eval_cfg = cfg.eval.model_copy(update={"workflows": ["on_demand"], "match": cfg.reward.match})
    toolbox = world_toolbox(world_dir, cfg)
    for length in sorted({len(p) for p in plans.values()}):
        group = [EvalData(d.name, [s for s in d.samples if len(plans[image_key(s.image)]) == length]) for d in data]
        protocol = cfg.protocol.model_copy(update={"max_turns": length + 1})
        evaluate([g for g in group if g.samples], engine, toolbox, out_dir=out, eval_cfg=eval_cfg, protocol=protocol,
                 sampling=cfg.engine.sampling, reward_cfg=cfg.reward, seed=cfg.seed, progress=True)
    return report(data, ["on_demand"], out, eval_cfg, reward_cfg=cfg.reward, seed=cfg.seed).files["results"]


def demo_metrics(m: dict) -> dict:
    """The figures the demo reports for one split and workflow, from an evaluation's ``results.json`` entry."""
    by_category = m.get("per_label", {}).get("category", {})
    ratio = lambda label: by_category[label]["search_ratio"] if label in by_category else None  # noqa: E731
    return {
        "accuracy": m["accuracy"],
        "search_ratio": m["search_ratio"],
        "searches_per_question": m["searches_per_question"],
        "search_ratio_free": ratio("search_free"),
        "search_ratio_required": ratio("search_required"),
        "correct_without_search": m["correct_without_search"],
        "n": m["n"],
    }


def evaluated(eval_dir: Path, workflow: str) -> dict[str, dict]:
    """``{split: demo_metrics}`` of one workflow of an evaluation folder."""
    datasets = json.loads((eval_dir / "results.json").read_text())["datasets"]
    return {split: demo_metrics(datasets[split][workflow]) for split in SPLITS}


def final_training_search_ratio(run_dir: Path, last: int = 3) -> float | None:
    """Mean search ratio of the last ``last`` logged training steps of a GRPO run."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tail = rows[-last:]
    return sum(r["search_ratio"] for r in tail) / len(tail) if tail else None


# --- the whole demo ---------------------------------------------------------------------------------------


def run_demo(cfg: Any, out: Path, *, ablations: bool = False, console: Any = None) -> Path:
    """Run (or resume) every stage of the demo under ``out``; return the path of ``results.json``.

    Some stages run in a second process started with ``spawn``, which imports the calling script again: call
    this from a script under ``if __name__ == "__main__":``, as with any use of multiprocessing.
    """
    from rich.console import Console

    from mmsearch_r1.models.policy import require_device

    console = console or Console()
    devices = {"pretrain.device": cfg.pretrain.device, "train.device": cfg.train.device, "engine.device": cfg.engine.device}
    for setting, device in devices.items():  # before any stage runs, not after the CPU ones
        require_device(device, setting)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    estimates = dict(ESTIMATES_S[cfg.world.size])
    estimates["grpo"] = estimates["grpo_step"] * cfg.train.steps
    estimates["pretrain"] *= cfg.model.num_layers / 4  # the figures are for the 4-layer model; the quick demo's has 3
    dirs = {name: out / name for name in ("world", "pretrained", "balanced", "grpo", "eval_pretrained", "eval_oracle", "eval_grpo")}
    stamps: dict[str, str] = {}
    stamps["world"] = world_fingerprint(cfg)
    stamps["pretrained"] = pretrained_fingerprint(stamps["world"], cfg)
    stamps["balanced"] = balanced_fingerprint(stamps["pretrained"], cfg)
    stamps["grpo"] = grpo_fingerprint(stamps["balanced"], cfg)
    eval_inputs = eval_fingerprint_inputs(cfg)
    for name, upstream in (("eval_pretrained", "pretrained"), ("eval_oracle", "pretrained"), ("eval_grpo", "grpo")):
        stamps[name] = fingerprint(stamps[upstream], *eval_inputs)
    policy = dirs["pretrained"]
    trained = dirs["grpo"] / "policy"

    def world(folder: Path) -> None:
        from mmsearch_r1.world import build_world

        build_world(folder, seed=cfg.seed, cfg=cfg.world, progress=True)

    def pretrain(folder: Path) -> None:
        from mmsearch_r1.models.pretrain import pretrain as run

        run(cfg, dirs["world"], folder, progress=True)
        unmet = unmet_checks(folder / "pretrain_report.json")
        if unmet:
            console.print(f"[yellow]pretrained model: {len(unmet)} of the report's checks not met ({'; '.join(unmet)}); "
                          f"GRPO can only build on what it can do. See {folder / 'pretrain_report.md'}.[/]")

    # Balance and the pretrained model's evaluations need only the pretrained model: they run side by side, a
    # core each. Every stage has its own thread count, whatever ran before it in this process.
    stages = [
        Stage("world", dirs["world"], stamps["world"], world, estimates["world"]),
        Stage("pretrain", policy, stamps["pretrained"], pretrain, estimates["pretrain"], threads=cfg.pretrain.threads),
        Stage("balance", dirs["balanced"], stamps["balanced"], lambda f: run_balance(dirs["world"] / "train.parquet", policy, f, cfg, world_toolbox(dirs["world"], cfg)),
              estimates["balance"], threads=BESIDE_THREADS),
        Stage("evaluate pretrained (direct, rag, on-demand)", dirs["eval_pretrained"], stamps["eval_pretrained"],
              partial(run_evaluation, policy, dirs["world"], ["direct", "rag", "on_demand"], cfg=cfg), estimates["eval"] * 3,
              threads=BESIDE_THREADS, beside="balance"),
        Stage("evaluate oracle", dirs["eval_oracle"], stamps["eval_oracle"], partial(run_oracle_evaluation, policy, dirs["world"], cfg=cfg),
              estimates["eval"], threads=BESIDE_THREADS, beside="balance"),
        Stage("grpo", dirs["grpo"], stamps["grpo"], lambda f: run_grpo(dirs["balanced"] / "train.parquet", policy, dirs["world"], f, cfg),
              estimates["grpo"], threads=cfg.train.threads),
        Stage("evaluate trained (on-demand)", dirs["eval_grpo"], stamps["eval_grpo"], lambda f: run_evaluation(trained, dirs["world"], ["on_demand"], f, cfg),
              estimates["eval"], threads=cfg.train.threads),
    ]
    if ablations:
        stages += ablation_stages(cfg, out, dirs, stamps, estimates)
    from mmsearch_r1.train.state import quiet_transformers

    began = time.perf_counter()
    with quiet_transformers():  # the stage display says what runs; transformers' weight-loading bars would only add noise
        seconds = StageRunner(stages, console).run()
    wall = time.perf_counter() - began
    console.print(f"stages made in this run: {_minutes(wall)} in all")
    return write_demo_report(cfg, out, dirs, ablations=ablations, seconds=seconds, wall_s=wall)


def unmet_checks(report_path: Path) -> list[str]:
    """The checks a pretraining report did not meet (none when there is no report)."""
    if not report_path.is_file():
        return []
    return [name for name, ok in json.loads(report_path.read_text())["checks"].items() if not ok]


# --- ablations ----------------------------------------------------------------------------------------------


def ablation_stages(cfg: Any, out: Path, dirs: dict[str, Path], stamps: dict[str, str], estimates: dict[str, float]) -> list[Stage]:
    """GRPO without the search penalty, GRPO on search-required questions only, SFT on oracle trajectories."""
    policy, world = dirs["pretrained"], dirs["world"]
    root = out / "ablations"
    for name in ABLATIONS:
        dirs[name] = root / name
        dirs[f"eval_{name}"] = root / f"eval_{name}"
    dirs["unbalanced_data"] = root / "unbalanced_data"
    stamps["no_penalty"] = grpo_fingerprint(stamps["balanced"], cfg, **NO_PENALTY)
    stamps["unbalanced_data"] = fingerprint(stamps["balanced"], "required only")
    stamps["unbalanced"] = fingerprint(stamps["unbalanced_data"], stamps["grpo"])
    stamps["sft"] = fingerprint(stamps["balanced"], stamp_settings(cfg.demo), cfg.train.steps, cfg.train.prompts_per_step, "sft")
    eval_stage = lambda name: Stage(  # noqa: E731
        f"evaluate {name}", dirs[f"eval_{name}"], fingerprint(stamps[name], *eval_fingerprint_inputs(cfg)),
        lambda f: run_evaluation(dirs[name] / "policy", world, ["on_demand"], f, cfg), estimates["eval"], threads=cfg.train.threads,
    )
    return [
        Stage("ablation: GRPO without search penalty", dirs["no_penalty"], stamps["no_penalty"],
              lambda f: run_grpo(dirs["balanced"] / "train.parquet", policy, world, f, cfg, **NO_PENALTY), 2 * estimates["grpo"],
              threads=cfg.train.threads),
        eval_stage("no_penalty"),
        Stage("ablation: search-required data only", dirs["unbalanced_data"], stamps["unbalanced_data"],
              lambda f: unbalanced_data(dirs["balanced"], f, cfg), 1.0),
        Stage("ablation: GRPO on search-required data", dirs["unbalanced"], stamps["unbalanced"],
              lambda f: run_grpo(dirs["unbalanced_data"] / "train.parquet", policy, world, f, cfg), 2 * estimates["grpo"],
              threads=cfg.train.threads),
        eval_stage("unbalanced"),
        Stage("ablation: SFT on oracle trajectories (2x data)", dirs["sft"], stamps["sft"],
              lambda f: run_sft(dirs["balanced"], policy, world, f, cfg), estimates["pretrain"] / 2, threads=cfg.train.threads),
        eval_stage("sft"),
    ]


def unbalanced_data(balanced_dir: Path, out: Path, cfg: Any) -> Path:
    """The search-required questions of the labelled pool, as many as the balanced set holds."""
    import numpy as np

    from mmsearch_r1.data import read_parquet, write_parquet
    from mmsearch_r1.data.balance import balanced_subset

    size = len(read_parquet(balanced_dir / "train.parquet"))
    pool = read_parquet(balanced_dir / "labelled.parquet")
    return write_parquet(balanced_subset(pool, 0.0, size, np.random.default_rng(cfg.seed)), out / "train.parquet")


def run_sft(balanced_dir: Path, policy_dir: Path, world_dir: Path, out: Path, cfg: Any) -> Path:
    """Supervised fine-tuning of the pretrained policy on teacher trajectories: the searches each question
    needs, then the right answer (``oracle.world_plans(with_answers=True)``), for ``demo.sft_data_factor``
    times as many questions as the GRPO run trained on. The loss is the mean negative log-likelihood of the
    scripted turns, from the same forward pass GRPO uses (``engines.hf.trajectory_logprobs``)."""
    import numpy as np
    import torch

    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.engines.hf import HFEngine, trajectory_logprobs
    from mmsearch_r1.models import load_policy
    from mmsearch_r1.oracle import OracleEngine, world_plans
    from mmsearch_r1.progress import progress_bar
    from mmsearch_r1.rollout import rollout
    from mmsearch_r1.train.grpo import masked_mean
    from mmsearch_r1.world import load_world

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    rl_questions = min(len(read_parquet(balanced_dir / "train.parquet")), cfg.train.steps * cfg.train.prompts_per_step)
    pool = read_parquet(world_dir / "train.parquet")
    wanted = int(round(cfg.demo.sft_data_factor * rl_questions))  # capped by the world's training questions
    samples = [pool[i] for i in rng.permutation(len(pool))[:wanted]]
    policy = load_policy(policy_dir, device=cfg.train.device)
    teacher = OracleEngine(HFEngine(policy), world_plans(samples, load_world(world_dir), with_answers=True))
    trajectories = rollout(samples, teacher, world_toolbox(world_dir, cfg), protocol=cfg.protocol, sampling=cfg.engine.sampling, seed=cfg.seed)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=cfg.demo.sft_lr)
    size = cfg.demo.sft_micro_batch_size
    policy.model.train()
    with progress_bar("sft", cfg.demo.sft_epochs * -(-len(trajectories) // size)) as advance:
        for _ in range(cfg.demo.sft_epochs):
            order = rng.permutation(len(trajectories))
            for start in range(0, len(order), size):
                batch = [trajectories[i] for i in order[start:start + size]]
                logprobs = trajectory_logprobs(policy, batch, sampled_only=True)
                width = max(len(t.token_ids) for t in batch)
                values = torch.stack([torch.nn.functional.pad(lp, (0, width - len(lp))) for lp in logprobs])
                mask = torch.tensor([t.loss_mask + [0] * (width - len(t.loss_mask)) for t in batch], device=values.device)
                loss = -masked_mean(values, mask)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                advance(status=f"nll {loss.item():.3f}")
    policy.model.eval()
    (out / "sft.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "sft.json").write_text(json.dumps({"questions": len(samples), "wanted": wanted, "rl_questions": rl_questions, "epochs": cfg.demo.sft_epochs}) + "\n")
    return policy.save(out / "policy")


# --- the report -----------------------------------------------------------------------------------------------

SOURCES = {  # demo workflow -> (evaluation folder, workflow inside it)
    "direct": ("eval_pretrained", "direct"),
    "rag": ("eval_pretrained", "rag"),
    "pretrained": ("eval_pretrained", "on_demand"),
    "oracle": ("eval_oracle", "on_demand"),
    "on_demand": ("eval_grpo", "on_demand"),
}


def criteria(results: dict) -> dict:
    """The reproduction criteria on the in-domain test, each with its figures and whether it is met."""
    split = results["in_domain"]
    od, rag, pre = split["on_demand"], split["rag"], split["pretrained"]
    checks = {
        "accuracy_vs_rag": {"on_demand": od["accuracy"], "rag": rag["accuracy"], "met": od["accuracy"] >= rag["accuracy"] - 0.02},
        "searches_vs_rag": {"on_demand": od["searches_per_question"], "rag": rag["searches_per_question"],
                            "ratio": od["searches_per_question"] / rag["searches_per_question"] if rag["searches_per_question"] else None,
                            "met": od["searches_per_question"] <= 0.7 * rag["searches_per_question"]},
        "free_below_required": {"free": od["search_ratio_free"], "required": od["search_ratio_required"],
                                "met": None if od["search_ratio_free"] is None or od["search_ratio_required"] is None
                                else od["search_ratio_required"] - od["search_ratio_free"] >= 0.2},
        "correct_without_search_up": {"on_demand": od["correct_without_search"], "pretrained": pre["correct_without_search"],
                                      "met": od["correct_without_search"] > pre["correct_without_search"]},
    }
    for name in ("no_penalty", "unbalanced"):
        ablation = results.get("ablations", {}).get(name)
        if ablation is not None:
            ratio = ablation["final_training_search_ratio"]
            checks[f"{name}_search_ratio_high"] = {"final_training_search_ratio": ratio, "met": ratio is not None and ratio >= 0.9}
    return checks


def write_demo_report(cfg: Any, out: Path, dirs: dict[str, Path], *, ablations: bool, seconds: dict[str, float], wall_s: float) -> Path:
    """Gather every evaluation into ``results.json`` and ``results.md``, and draw the demo's plots.

    ``seconds`` are each stage's own, by folder (stages made side by side overlap); ``wall_s`` is this run's
    time from its first stage to its last (cached stages add nothing to it)."""
    results: dict[str, Any] = {split: {} for split in SPLITS}
    for workflow, (folder, inner) in SOURCES.items():
        for split, metrics in evaluated(dirs[folder], inner).items():
            results[split][workflow] = metrics
    if ablations:
        results["ablations"] = {}
        for name in ABLATIONS:
            entry = evaluated(dirs[f"eval_{name}"], "on_demand")
            train_ratio = final_training_search_ratio(dirs[name]) if name != "sft" else None
            results["ablations"][name] = {**entry, "final_training_search_ratio": train_ratio}
    results["criteria"] = criteria(results)
    results["balance"] = json.loads((dirs["balanced"] / "balance.json").read_text())
    results["training"] = training_summary(dirs["grpo"])
    results["seed"], results["world_size"] = cfg.seed, cfg.world.size
    results["stage_seconds"], results["wall_seconds"] = seconds, round(wall_s, 1)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(markdown(results, dirs, out))
    plot_summary(results, out / "accuracy_vs_searches.png")
    runs = {"GRPO": dirs["grpo"]} | ({"no penalty": dirs["no_penalty"], "unbalanced": dirs["unbalanced"]} if ablations else {})
    plot_training(runs, out / "training_dynamics.png")
    return path


def training_summary(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    keys = ("reward", "accuracy", "format_rate", "search_ratio", "searches_per_episode", "kl")
    pick = lambda row: {k: row[k] for k in keys}  # noqa: E731
    return {"steps": len(rows), "first_step": pick(rows[0]), "last_step": pick(rows[-1]),
            "seconds": round(sum(r["step_time_s"] for r in rows), 1)}


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def markdown(results: dict, dirs: dict[str, Path], out: Path) -> str:
    """The demo's tables: every workflow on both splits, the criteria, the ablations."""
    lines = ["# mmsearch-r1 demo results", ""]
    header = "| workflow | accuracy | search ratio | searches / q | search ratio (free) | search ratio (required) | correct w/o search | n |"
    for split in SPLITS:
        lines += [f"## {split}", "", header, "|---|---|---|---|---|---|---|---|"]
        for workflow, m in results[split].items():
            lines.append(f"| {workflow} | {_pct(m['accuracy'])} | {_pct(m['search_ratio'])} | {m['searches_per_question']:.2f} | "
                         f"{_pct(m['search_ratio_free'])} | {_pct(m['search_ratio_required'])} | {_pct(m['correct_without_search'])} | {m['n']} |")
        lines.append("")
    lines += ["## Reproduction criteria (in_domain)", "", "| criterion | figures | met |", "|---|---|---|"]
    for name, check in results["criteria"].items():
        figures = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in check.items() if k != "met")
        lines.append(f"| {name} | {figures} | {'yes' if check['met'] else 'no' if check['met'] is False else '–'} |")
    if "ablations" in results:
        lines += ["", "## Ablations (on-demand, in_domain)", "", "| run | accuracy | search ratio | searches / q | final training search ratio |", "|---|---|---|---|---|"]
        for name, entry in results["ablations"].items():
            m = entry["in_domain"]
            lines.append(f"| {name} | {_pct(m['accuracy'])} | {_pct(m['search_ratio'])} | {m['searches_per_question']:.2f} | {_pct(entry['final_training_search_ratio'])} |")
    viewers = [f"[{folder}]({(dirs[folder] / 'viewer.html').relative_to(out)})" for folder in ("eval_grpo", "eval_pretrained", "eval_oracle")]
    lines += ["", "Trajectory viewers: " + ", ".join(viewers), "", "![accuracy vs searches](accuracy_vs_searches.png)",
              "![training dynamics](training_dynamics.png)", ""]
    return "\n".join(lines)


def _canvas(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def label_groups(points: dict[str, tuple[float, float]], dx: float = 0.1, dy: float = 3.0) -> list[list[str]]:
    """Workflows whose points (searches per question, accuracy %) nearly coincide, to share one label.

    A point joins the first group that has a point within ``dx`` and ``dy`` of it, in the order given.

    >>> label_groups({"direct": (0.0, 25.9), "pretrained": (0.04, 28.4), "rag": (2.0, 71.6)})
    [['direct', 'pretrained'], ['rag']]
    """
    groups: list[list[str]] = []
    for name, (x, y) in points.items():
        near = (g for g in groups if any(abs(points[o][0] - x) < dx and abs(points[o][1] - y) < dy for o in g))
        group = next(near, None)
        if group is None:
            groups.append([name])
        else:
            group.append(name)
    return groups


def plot_summary(results: dict, path: Path) -> Path:
    """Accuracy against searches per question, one point per workflow, one panel per split."""
    figure = _canvas(9, 4)
    for i, split in enumerate(SPLITS):
        ax = figure.add_subplot(1, len(SPLITS), i + 1)
        points = {workflow: (m["searches_per_question"], 100 * m["accuracy"]) for workflow, m in results[split].items()}
        for point in points.values():
            ax.scatter(*point, s=40)
        for names in label_groups(points):
            top = max((points[name] for name in names), key=lambda point: point[1])
            ax.annotate(", ".join(names), top, textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set(title=split, xlabel="searches per question", ylabel="accuracy (%)", xlim=(-0.1, 2.3), ylim=(0, 105))
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_training(runs: dict[str, Path], path: Path) -> Path:
    """Reward, and search ratio on search-free and on search-required questions, per GRPO step and run."""
    panels = [("reward", "mean reward"), ("search_ratio_free", "search ratio, search-free questions"),
              ("search_ratio_required", "search ratio, search-required questions")]
    figure = _canvas(4 * len(panels), 3.6)
    axes = [figure.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    for label, run_dir in runs.items():
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        for ax, (key, _) in zip(axes, panels):
            points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot([x for x, _ in points], [y for _, y in points], label=label)
    for ax, (_, title) in zip(axes, panels):
        ax.set(xlabel="GRPO step", title=title)
        ax.grid(alpha=0.3)
    axes[1].set_ylim(-0.05, 1.05)
    axes[2].set_ylim(-0.05, 1.05)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path
