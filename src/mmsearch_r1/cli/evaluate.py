"""The ``eval`` command. Keep module-level imports to typer and the standard library."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Optional

import typer

from mmsearch_r1.cli.common import ConfigOption, SetOption

FORMATS = "auto, fvqa, infoseek, mmsearch, simplevqa, livevqa"


def _config(config: Optional[Path], tools: Optional[Path], overrides: list[str]):
    """The run's config: --config file, then the --tools file's tools section, then --set overrides."""
    from mmsearch_r1.config import apply_overrides, validate_config
    from mmsearch_r1.errors import ConfigError

    def read(path: Path, what: str) -> dict:
        from mmsearch_r1.files import existing_file, read_text

        path = existing_file(path, f"{what} file", "pass a TOML file.", ConfigError)
        try:
            return tomllib.loads(read_text(path, f"{what} file", "pass a TOML file.", ConfigError))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{what} file {path} is not valid TOML ({error}); fix the file.") from None

    data = read(config, "config") if config else {}
    if tools:
        tools_data = read(tools, "tools config")
        data["tools"] = tools_data.get("tools", tools_data)  # a whole config, or just its tools section
    return validate_config(apply_overrides(data, overrides))


def _world_tools(cfg, data_files: list[Path]) -> Optional[Path]:
    """Point unset local indexes at the demo world a data file sits in (its text_index/ and image_index/)."""
    for file in data_files:
        world = file.resolve().parent
        if (world / "text_index").is_dir() and (world / "image_index").is_dir():
            cfg.tools = cfg.tools.with_local_indexes(world, only_unset=True)
            return world
    return None


def evaluate(
    data: list[Path] = typer.Option(..., "--data", "-d", help="Benchmark file(s): veRL/FVQA Parquet, InfoSeek JSONL, MMSearch, SimpleVQA or LiveVQA. Several may follow one --data."),
    more_data: Optional[list[Path]] = typer.Argument(None, help="More benchmark files (so that `--data A B C` works).", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: trajectories, results.json, results.md, plots, viewer.html. Re-running resumes."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model folder (hf, vllm engines) or the server's model name (openai engine)."),
    workflow: str = typer.Option("direct,rag,on-demand", "--workflow", "-w", help="Comma-separated workflows: direct, rag, on-demand."),
    tools: Optional[Path] = typer.Option(None, "--tools", help="TOML file with the tools section (a whole config, or the tools keys alone). Default: the indexes of the demo world the data file sits in."),
    fmt: str = typer.Option("auto", "--format", help=f"Layout of the data files: {FORMATS}."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Folder of the benchmark's image files (InfoSeek, LiveVQA, file-path images)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Evaluate only the first N samples of each file."),
    match: Optional[str] = typer.Option(None, "--match", help="Accuracy rule: em, subem or judge (default: eval.match)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="hf, vllm or openai (default: engine.type)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="URL of the OpenAI-compatible server (openai engine), up to /v1."),
    judge_url: Optional[str] = typer.Option(None, "--judge-url", help="URL of the judge's OpenAI-compatible server, up to /v1."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="Model name of the judge."),
    sample: bool = typer.Option(False, "--sample", help="Sample with engine.sampling instead of greedy decoding."),
    report_only: bool = typer.Option(False, "--report-only", help="Do not generate: re-score the trajectories already in --out (e.g. with another --match) and rewrite the reports."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Evaluate a model in the direct, RAG and on-demand workflows and write metrics, plots and a trajectory viewer.

    Examples:

      mmsearch-r1 eval --model runs/demo/grpo/policy --data runs/demo/world/test.parquet runs/demo/world/heldout.parquet --out runs/demo/eval

      mmsearch-r1 eval --engine openai --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen2.5-VL-7B-Instruct --data infoseek_val.jsonl --image-root oven_images --tools web.toml --match judge --judge-url https://api.openai.com/v1 --out runs/infoseek
    """
    from rich.console import Console

    from mmsearch_r1.config import save_config
    from mmsearch_r1.eval.benchmarks import load_benchmark
    from mmsearch_r1.eval.run import EvalData, dataset_names, limited, parse_workflows, pending, unique_samples
    from mmsearch_r1.eval.run import evaluate as run_evaluation
    from mmsearch_r1.eval.run import report

    console = Console(stderr=True)
    console.width = max(console.width, 120)  # the results table needs the room; logs are not wrapped at 80
    overrides = list(set_ or [])
    workflows = parse_workflows(workflow)
    overrides.append(f"eval.workflows={json.dumps(workflows)}")
    for key, value in (("eval.match", match), ("engine.type", engine), ("engine.openai.base_url", base_url),
                       ("eval.judge.base_url", judge_url), ("eval.judge.model", judge_model), ("eval.limit", limit)):
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    if sample:
        overrides.append("eval.greedy=false")
    cfg = _config(config, tools, overrides)
    if model is not None:
        if cfg.engine.type == "openai":
            cfg.engine.openai.model_name = model
        else:
            cfg.model.path = Path(model)
    cfg.out_dir = out

    files = list(data) + list(more_data or [])
    names = dataset_names(files)
    datasets = [EvalData(name, unique_samples(load_benchmark(f, fmt, image_root=image_root, limit=cfg.eval.limit), name)) for name, f in zip(names, files)]
    for d, f in zip(datasets, files):
        console.print(f"{f}: {len(d.samples)} samples as `{d.name}`")
    world = _world_tools(cfg, files)
    if world is not None:
        console.print(f"tools: the local indexes of the demo world in {world}")
    if not report_only:
        from mmsearch_r1.engines import check_engine

        check_engine(cfg.engine, cfg.model)  # before the output folder is made
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)

    judge = None
    if cfg.eval.match == "judge":
        from mmsearch_r1.eval.judge import LLMJudge

        judge = LLMJudge(cfg.eval.judge, cfg.eval.judge.cache_dir or out / "judge_cache")
    try:
        todo = pending(limited(datasets, cfg.eval.limit), workflows, out)
        total = sum(len(d.samples) for d in limited(datasets, cfg.eval.limit)) * len(workflows)
        if not report_only and todo == 0:
            console.print(f"every sample is already evaluated in {out}: scoring and reporting only")
        elif not report_only:
            console.print(f"{todo} of {total} episodes to run ({total - todo} already in {out})")
        if judge is not None and not report_only and todo:
            judge.check()  # before the generation, which may take hours
        if report_only and todo:
            console.print(f"[yellow]note: {todo} of {total} episodes have no trajectory in {out} (a --limit or an interrupted run); "
                          "the tables count only the episodes there. Run without --report-only to fill them in.[/yellow]")
        if report_only or todo == 0:
            result = report(datasets, workflows, out, cfg.eval, reward_cfg=cfg.reward, judge=judge, seed=cfg.seed, progress=True)
        else:
            result = _run(cfg, datasets, workflows, out, judge, run_evaluation)
    finally:
        if judge is not None:
            judge.close()
    _print_table(console, result.table)
    for name, path in result.files.items():
        console.print(f"{name}: {path}")


def _run(cfg, datasets, workflows, out: Path, judge, run_evaluation):
    from mmsearch_r1.engines import build_engine

    toolbox = None
    if any(w != "direct" for w in workflows):
        from mmsearch_r1.tools import build_toolbox

        toolbox = build_toolbox(cfg.tools, cache_dir=cfg.tools.cache.dir or out / "tool_cache")
    engine = build_engine(cfg.engine, cfg.model)
    try:
        from mmsearch_r1.protocol import Templates

        return run_evaluation(datasets, engine, toolbox, out_dir=out, eval_cfg=cfg.eval, protocol=cfg.protocol,
                              sampling=cfg.engine.sampling, reward_cfg=cfg.reward, judge=judge, seed=cfg.seed,
                              templates=Templates.load(cfg.protocol.template_dir), progress=True)
    finally:
        engine.close()


def _print_table(console, table) -> None:
    from rich.table import Table

    shown = Table("data", "workflow", "n", "accuracy", "search ratio", "image", "text", "searches/q", "correct w/o search")
    for ds, by_wf in table.items():
        for wf, m in by_wf.items():
            shown.add_row(ds, wf, str(m.n), f"{m.accuracy:.1%}", f"{m.search_ratio:.1%}", f"{m.image_search_ratio:.1%}",
                          f"{m.text_search_ratio:.1%}", f"{m.searches_per_question:.2f}", f"{m.correct_without_search:.1%}")
    console.print(shown)


def register(app: typer.Typer) -> None:
    """Add this part's commands to the main app."""
    app.command("eval")(evaluate)
