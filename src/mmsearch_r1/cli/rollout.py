"""CLI commands of the rollout part: ``ask`` runs one question through a policy and the search tools.

Module-level imports stay at typer and the standard library; the work happens in ``_ask``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmsearch_r1.cli.common import ConfigOption, SetOption


def ask(
    image: Path = typer.Option(..., "--image", "-i", help="The question's image (PNG, JPEG, ...)."),
    question: str = typer.Option(..., "--question", "-q", help="The question about the image."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Policy folder in Hugging Face layout (tiny model or Qwen2.5-VL) for the hf and vllm engines."),
    world: Optional[Path] = typer.Option(None, "--world", "-w", help="Demo world folder: its image_index/ and text_index/ become the search tools."),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help="hf (transformers, default), vllm (GPU) or openai (any OpenAI-compatible server)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL up to /v1 (with --engine openai); the key is read from $OPENAI_API_KEY or engine.openai.api_key_env."),
    model_name: Optional[str] = typer.Option(None, "--model-name", help="Model name on the server (with --engine openai); default: the server's first model."),
    workflow: str = typer.Option("on-demand", "--workflow", help="on-demand (the model decides; on_demand works too), direct (no tools) or rag (image search, then text search)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", "-t", help="Sampling temperature (0: greedy); default engine.sampling.temperature."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampling seed; default the config's seed."),
    as_json: bool = typer.Option(False, "--json", help="Print the trajectory record as JSON (token_ids, loss_mask, logprobs, messages, counts)."),
    save_images: Optional[Path] = typer.Option(None, "--save-images", help="With --json: write the trajectory's images here (the record names them)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Ask one question about an image and print the episode: turns, search results, answer.

    Examples:

      mmsearch-r1 ask --model runs/demo/grpo/policy --world runs/demo/world --image q.png --question "Which city is this guild from?"

      mmsearch-r1 ask --engine openai --base-url http://127.0.0.1:8000/v1 --model-name Qwen2.5-VL-7B-Instruct --world worlds/demo --image q.png --question "..." --json
    """
    _ask(image, question, model, world, engine, base_url, model_name, workflow, temperature, seed, as_json, save_images, config, set_)


def _configure(config, set_, engine, model, world, base_url, model_name, temperature):
    """The run's config with the command-line options applied on top of the file and --set overrides."""
    from mmsearch_r1.cli.common import load
    from mmsearch_r1.errors import ConfigError

    cfg = load(config, set_)
    options = (("--engine", cfg.engine, "type", engine), ("--model", cfg.model, "path", model),
               ("--base-url", cfg.engine.openai, "base_url", base_url), ("--model-name", cfg.engine.openai, "model_name", model_name),
               ("--temperature", cfg.engine.sampling, "temperature", temperature))
    for flag, section, key, value in options:
        if value is None:
            continue
        try:
            setattr(section, key, value)
        except ValueError as error:  # pydantic validation of an assignment
            raise ConfigError(f"{flag} {value} is not allowed: {error.errors()[0]['msg'].lower()}.") from None
    if world is not None:
        cfg.tools = cfg.tools.with_local_indexes(world)
    return cfg


def _question_sample(image: Path, question: str):
    from mmsearch_r1.data import VQASample
    from mmsearch_r1.files import existing_file
    from mmsearch_r1.tools.local_image import decode_image

    data = existing_file(image, "image file", "pass a PNG or JPEG with --image.").read_bytes()
    decode_image(data, f"--image {image}")  # one clear error for what Pillow cannot read
    return VQASample(id=image.stem, question=question, image_bytes=data, answers=[], data_source="ask")


def _ask(image, question, model, world, engine, base_url, model_name, workflow, temperature, seed, as_json, save_images, config, set_) -> None:
    from mmsearch_r1.engines import build_engine, check_engine
    from mmsearch_r1.errors import ConfigError
    from mmsearch_r1.protocol import workflow_name
    from mmsearch_r1.rollout import rollout
    from mmsearch_r1.tools import build_toolbox

    workflow = workflow_name(workflow)
    if not question.strip():
        raise ConfigError("--question is empty; pass the question to ask about the image.")
    if save_images is not None and not as_json:
        raise ConfigError("--save-images writes the images the JSON record names; add --json, or leave --save-images out.")
    cfg = _configure(config, set_, engine, model, world, base_url, model_name, temperature)
    sample = _question_sample(image, question)
    check_engine(cfg.engine, cfg.model)
    needs_tools = workflow != "direct"
    if needs_tools and world is None and cfg.tools.image.index_dir is None and cfg.tools.image.type == "local":
        raise ConfigError(f"the {workflow.replace('_', '-')} workflow searches, and no search tools are set; pass --world DIR (a demo world's indexes), or set tools.* in --config.")
    toolbox = build_toolbox(cfg.tools, image=needs_tools, text=needs_tools)
    generator = build_engine(cfg.engine, cfg.model)
    try:
        [trajectory] = rollout(
            [sample], generator, toolbox, protocol=cfg.protocol, sampling=cfg.engine.sampling,
            seed=cfg.seed if seed is None else seed, workflow=workflow,
        )
    finally:
        generator.close()
    if as_json:
        _print_json(trajectory, save_images)
    else:
        _print_episode(trajectory)


def _print_json(trajectory, save_images: Optional[Path]) -> None:
    import json
    import tempfile

    if save_images is not None:
        typer.echo(json.dumps(trajectory.to_json(save_images)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        typer.echo(json.dumps(trajectory.to_json(scratch)))


def _print_episode(trajectory) -> None:
    """The turns as the model saw them (system prompt left out), each image shown as [image i]."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    from mmsearch_r1.trajectory import ImageRef

    console = Console()
    styles = {"user": "cyan", "assistant": "green"}
    for message in trajectory.messages:
        if message.role == "system":
            continue
        body = Text()
        for part in message.content:
            body.append(f"[image {part.index}]" if isinstance(part, ImageRef) else part, style="bold magenta" if isinstance(part, ImageRef) else None)
        console.print(Panel(body, title=message.role, title_align="left", border_style=styles.get(message.role, "white")))
    answer = trajectory.final_answer if trajectory.final_answer is not None else "(none)"
    console.print(
        Text.assemble(("answer: ", "bold"), answer, f"   [end: {trajectory.end_reason}; image searches {trajectory.image_searches}, "
                      f"text searches {trajectory.text_searches}, tool failures {trajectory.tool_failures}]")
    )
    why = WHY_ENDED.get((trajectory.meta.get("workflow"), trajectory.end_reason)) or WHY_ENDED.get((None, trajectory.end_reason))
    if why:
        console.print(f"({why})")


WHY_ENDED = {  # (workflow or None for any, end reason): what ended the episode
    ("rag", "invalid"): "ended as invalid: the rag workflow's first turn must write a text-search query",
    (None, "invalid"): "ended as invalid: the last turn is neither a valid search nor an answer",
    (None, "limit"): "ended at a limit: the last turn asks for a search beyond the protocol's limits, or in the last allowed turn",
}


def register(app: typer.Typer) -> None:
    """Add this part's commands to the main app."""
    app.command("ask")(ask)
