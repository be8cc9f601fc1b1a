"""The `thinkrl` command: one subcommand per stage. It parses, validates and dispatches;
the work lives in the modules each command names (cli holds no logic)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console

from thinkrl.config import Config, describe_fields, load_config, to_yaml
from thinkrl.errors import ThinkrlError

console = Console(stderr=True)


@dataclass(frozen=True)
class Command:
    """A subcommand: its config model and its entry point, as 'module:attribute' (imported lazily
    so `thinkrl --help` stays fast and a missing optional extra breaks only its own command)."""

    name: str
    summary: str
    config: str
    run: str

    def config_model(self) -> type[Config]:
        return _import(self.config)

    def runner(self) -> Callable[[Any], Any]:
        return _import(self.run)


COMMANDS = [
    Command("tiny", "Build (once) and cache the tiny default model and tokenizer.",
            "thinkrl.tiny.config:TinyConfig", "thinkrl.tiny.build:run_tiny"),
    Command("eval", "Evaluate a checkpoint on a prompt set: pass@1 over k, cons@k, format rate, length.",
            "thinkrl.eval.config:EvalConfig", "thinkrl.eval.run:run_eval"),
    Command("grpo", "GRPO training on any model and prompt set (generate -> score -> advantages -> update).",
            "thinkrl.train.config:GRPOConfig", "thinkrl.train.grpo:train_grpo"),
    Command("zero", "R1-Zero: GRPO from a base model with the R1-Zero template and rule rewards only.",
            "thinkrl.pipeline.zero:ZeroConfig", "thinkrl.pipeline.zero:run_zero"),
    Command("demo", "The demo: R1-Zero on the tiny default, evaluated before and after, with plots.",
            "thinkrl.pipeline.demo:DemoConfig", "thinkrl.pipeline.demo:run_demo"),
    Command("reward", "Score a jsonl of completions with a reward spec; write rewards and reasons.",
            "thinkrl.rewards.command:RewardCommandConfig", "thinkrl.rewards.command:run_reward"),
]


def _import(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


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


def _fail(exc: BaseException) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
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

    def run(config: Optional[Path], overrides: list[str]) -> None:
        try:
            cmd.runner()(load_config(model, config, overrides))
        except ThinkrlError as exc:
            _fail(exc)

    if "resume" in model.model_fields:

        def command(
            config: Optional[Path] = typer.Argument(None, help="YAML config file (optional)."),
            set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.field=value (repeatable)."),
            resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint in the run folder."),
        ) -> None:
            run(config, list(set_) + (["resume=true"] if resume else []))

    else:

        def command(
            config: Optional[Path] = typer.Argument(None, help="YAML config file (optional)."),
            set_: list[str] = typer.Option([], "--set", "-s", help="Override a field: section.field=value (repeatable)."),
        ) -> None:
            run(config, list(set_))

    command.__doc__ = f"{cmd.summary}\n\n{_fields_help(model)}"
    app.command(name=cmd.name)(command)


@config_app.command("show")
def config_show(
    command: str = typer.Argument(..., help="Subcommand whose resolved config to print."),
    config: Optional[Path] = typer.Argument(None, help="YAML config file (optional)."),
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
    try:
        app()
    except ThinkrlError as exc:  # raised outside a command body (e.g. while building help)
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
