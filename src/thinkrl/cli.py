"""The `thinkrl` command: one subcommand per stage. It parses, validates and dispatches;
the work lives in the modules each command names (cli holds no logic)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from thinkrl.commands import COMMANDS, Command
from thinkrl.config import Config, describe_fields, load_config, to_yaml
from thinkrl.errors import ThinkrlError
from thinkrl.processes import is_main_launched_process
from thinkrl.train.interrupts import TrainingInterrupted

console = Console(stderr=True)


def _available() -> list[Command]:
    """Commands whose modules exist in this install (later stages add theirs)."""
    found = []
    for cmd in COMMANDS:
        try:
            spec = importlib.util.find_spec(cmd.config.partition(":")[0])
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            found.append(cmd)
    return found


def _fields_help(model: type[Config]) -> str:
    lines = ["Config fields (set in the YAML file or with --set field=value):", ""]
    for path, default, doc in describe_fields(model):
        lines.append(f"  {path} = {default}" + (f"  -- {doc}" if doc else ""))
    # typer/click rewraps paragraphs; \b keeps this block verbatim.
    return "\b\n" + "\n".join(lines)


def _algorithms_help() -> str:
    """What algo.advantage, algo.loss and algo.aggregation can name: the registries' contents."""
    from thinkrl.algos import ADVANTAGES, AGGREGATIONS, LOSSES

    lines = ["Registered algorithms (options go in algo.advantage_options / algo.loss_options):"]
    for field, registry in (("algo.advantage", ADVANTAGES), ("algo.loss", LOSSES), ("algo.aggregation", AGGREGATIONS)):
        lines += ["", f"  {field}:"] + [f"    {line}" for line in registry.describe().splitlines()]
    return "\b\n" + "\n".join(lines)


def _fail(exc: BaseException) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # '[vllm]' is text, not markup
    raise typer.Exit(code=2)


app = typer.Typer(
    name="thinkrl",
    help="Train language models to reason the DeepSeek-R1 way (GRPO, R1-Zero, the R1 pipeline, distillation).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")


def _register(cmd: Command) -> None:
    model = cmd.config_model()

    def run(config: Path | None, overrides: list[str], dry_run: dict | None = None) -> None:
        try:
            _quiet_loading_bars()
            cfg = load_config(model, config, overrides)
            if dry_run is not None:
                from thinkrl.train.dry_run import dry_run_for_grpo, print_dry_run

                print_dry_run(dry_run_for_grpo(cfg, **dry_run))
                return
            cmd.runner()(cfg)
        except ThinkrlError as exc:
            _fail(exc)
        except TrainingInterrupted as exc:  # a signal asked the run to stop; it saved and says how to go on
            if is_main_launched_process():  # stdout, beside the start and progress lines of `> run.log`
                print(exc.message(), flush=True)
            raise typer.Exit(code=exc.exit_code) from None

    if _trains_with_grpo(model):

        def command(
            config: Path | None = typer.Argument(None, help="YAML config file (optional)."),
            set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.field=value (repeatable)."),
            resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the run folder."),
            dry_run: bool = typer.Option(False, "--dry-run", help="Resolve the config, build the model on the meta "
                                         "device and print memory estimates; load no weights, train nothing."),
            gpus: int = typer.Option(1, "--gpus", help="Dry run: GPUs the run would use."),
            zero_stage: int = typer.Option(0, "--zero-stage", min=0, max=3, help="Dry run: sharding, 0 = DDP, "
                                           "3 = FSDP full shard (1, 2: DeepSpeed ZeRO sizes, not launchable yet)."),
            gpu_memory_gib: float = typer.Option(80.0, "--gpu-memory-gib", help="Dry run: memory of one GPU."),
        ) -> None:
            launch = {"num_gpus": gpus, "zero_stage": zero_stage, "gpu_memory_gib": gpu_memory_gib}
            run(config, list(set_) + (["resume=true"] if resume else []), launch if dry_run else None)

    elif "resume" in model.model_fields:

        def command(
            config: Path | None = typer.Argument(None, help="YAML config file (optional)."),
            set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.field=value (repeatable)."),
            resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the run folder."),
        ) -> None:
            run(config, list(set_) + (["resume=true"] if resume else []))

    else:

        def command(
            config: Path | None = typer.Argument(None, help="YAML config file (optional)."),
            set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.field=value (repeatable)."),
        ) -> None:
            run(config, list(set_))

    algorithms = f"\n\n{_algorithms_help()}" if _trains_with_grpo(model) else ""
    command.__doc__ = f"{cmd.summary}\n\n{_fields_help(model)}{algorithms}"
    app.command(name=cmd.name)(command)


def _quiet_loading_bars() -> None:
    """transformers draws a bar for every checkpoint it loads or writes; a pipeline loads
    dozens, and thinkrl's own bars already say where the run is."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def _trains_with_grpo(model: type[Config]) -> bool:
    from thinkrl.train.config import GRPOConfig

    return issubclass(model, GRPOConfig)


@config_app.command("show")
def config_show(
    command: str = typer.Argument(..., help="Subcommand whose resolved config to print."),
    config: Path | None = typer.Argument(None, help="YAML config file (optional)."),
    set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.field=value."),
) -> None:
    """Print the resolved config of a command (defaults <- file <- overrides) as YAML."""
    names = {c.name: c for c in _available()}
    if command not in names:
        _fail(ThinkrlError(f"unknown command '{command}'; choose from {', '.join(sorted(names))}"))
    try:
        resolved = load_config(names[command].config_model(), config, set_)
    except ThinkrlError as exc:
        _fail(exc)
    typer.echo(to_yaml(resolved), nl=False)


for _cmd in _available():
    _register(_cmd)


def main() -> None:
    from thinkrl.processes import exit_when_done

    exit_when_done(_run_app)


def _run_app() -> None:
    try:
        app()
    except ThinkrlError as exc:  # raised outside a command body (e.g. while building help)
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
