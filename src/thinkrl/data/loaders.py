"""Load prompt sets named by a `DataConfig` into `Example`s.

Sources: `task:NAME` (a synthetic task), a .jsonl/.json/.parquet file, a folder written by
`datasets.save_to_disk` or holding data files, or a Hugging Face hub id. Jsonl is read line
by line so a malformed row is reported as FILE:LINE; with `on_bad_row=skip` such rows are
skipped, counted in the `LoadReport` and logged instead of stopping the run.

Every load prints one line saying which split of which source it read (`data: gsm8k train
split, 7473 examples from DIR`): training on the wrong split is a mistake only a line like
that makes visible.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkrl.data.config import DataConfig
from thinkrl.data.example import Example
from thinkrl.data.hub import load_hub_rows, looks_like_hub_id
from thinkrl.data.presets import PRESETS, RowError, detect_preset, row_to_example, with_overrides
from thinkrl.errors import ConfigError, DataError

log = logging.getLogger(__name__)

DATA_SUFFIXES = (".jsonl", ".json", ".parquet")
# Names datasets give their splits; a lone data file named after one of them is that split.
SPLIT_NAMES = ("train", "test", "validation", "valid", "val", "dev", "eval")
# A row as read from its source: where it is (for messages), and the row or why it could not be read.
Located = tuple[str, "Mapping[str, Any] | RowError"]


@dataclass
class LoadReport:
    """What loading a source did: rows seen, examples kept, and each skipped row with why."""

    source: str
    rows: int = 0
    kept: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (location, reason)
    preset: str = "none"
    split: str | None = None  # the split read; None for a source without splits (one file, one Dataset)
    origin: str = ""  # where the rows came from, as the data line says it
    used: int | None = None  # examples left after shuffle and limit

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        text = f"{self.source}: {self.kept} examples from {self.rows} rows (preset {self.preset})"
        if self.skipped:
            shown = "; ".join(f"{where}: {why}" for where, why in self.skipped[:3])
            more = f"; and {self.n_skipped - 3} more" if self.n_skipped > 3 else ""
            text += f", skipped {self.n_skipped} bad rows ({shown}{more})"
        return text

    def data_line(self) -> str:
        """The one line every command prints about its data: which split of which source."""
        used = self.kept if self.used is None else self.used
        count = f"{used} examples" if used == self.kept else f"{used} of {self.kept} examples (data.limit)"
        what = " ".join(([self.preset] if self.preset != "none" else []) + ([f"{self.split} split"] if self.split else []))
        return f"data: {what + ', ' if what else ''}{count} {self.origin or 'from ' + self.source}"


@dataclass
class LoadResult:
    examples: list[Example]
    report: LoadReport


def load_examples(cfg: DataConfig) -> list[Example]:
    """The examples `cfg` names, shuffled and limited as it says."""
    return load_with_report(cfg).examples


def load_with_report(cfg: DataConfig) -> LoadResult:
    """`load_examples` plus the report of skipped rows (its counts are before shuffle and limit)."""
    if cfg.path.startswith("task:"):
        result = _load_task(cfg)
    else:
        source = source_rows(cfg.path, cfg.split, cfg.subset)
        result = _convert(source.rows, cfg)
        result.report.split, result.report.origin = source.split, source.origin
    examples = result.examples
    if cfg.shuffle:
        random.Random(cfg.seed).shuffle(examples)
    if cfg.limit is not None:
        del examples[cfg.limit:]
    result.report.used = len(examples)
    announce(result.report.data_line())
    return result


def announce(line: str) -> None:
    """Print one line about the run's data on stderr, once per launch (main process only)."""
    from rich.console import Console

    from thinkrl.processes import is_main_launched_process

    if is_main_launched_process():
        Console(stderr=True, soft_wrap=True, markup=False, highlight=False).print(line)


def _load_task(cfg: DataConfig) -> LoadResult:
    from thinkrl.data.tasks import HELDOUT_SEED, get_task  # lazy: file sources never need the task generators

    name = cfg.path.removeprefix("task:").strip()
    examples = list(get_task(name).generate(n=cfg.task_size, seed=cfg.task_seed))
    split = "held-out" if cfg.task_seed == HELDOUT_SEED else "training"
    report = LoadReport(cfg.path, rows=len(examples), kept=len(examples), preset=f"task:{name}", split=split,
                        origin=f"drawn with task_seed {cfg.task_seed}")
    return LoadResult(examples, report)


# ---------------------------------------------------------------- reading rows


@dataclass
class SourceRows:
    """A source's rows (with their locations) and which split they are: None when the source
    has no splits (one file, one saved Dataset)."""

    rows: Iterator[Located]
    split: str | None
    origin: str  # "from PATH", "from hub dataset ID (subset S)", "from PATH (one file: data.split does not apply)"


def source_rows(path_or_id: str, split: str, subset: str | None = None) -> SourceRows:
    """Every row of a file, folder or hub dataset with its location; unreadable rows come as
    RowError. A source holding several splits gives `split` or a ConfigError naming its splits."""
    path = Path(path_or_id).expanduser()
    if path.is_file():
        return SourceRows(read_file_rows(path), None, f"from {path} (one file: data.split does not apply)")
    if path.is_dir():
        return _folder_rows(path, split)
    if looks_like_hub_id(path_or_id):
        rows = _dataset_rows(load_hub_rows(path_or_id, subset, split), f"{path_or_id}[{split}]")
        return SourceRows(rows, split, f"from hub dataset {path_or_id}" + (f" (subset {subset})" if subset else ""))
    raise DataError(f"data.path '{path_or_id}': no such file or folder")


def read_file_rows(path: Path) -> Iterator[Located]:
    """Rows of one data file, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return jsonl_rows(path)
    if suffix == ".json":
        return _json_rows(path)
    if suffix == ".parquet":
        return _dataset_rows(_read_parquet(path), str(path))
    raise DataError(f"{path}: unsupported data file type '{suffix}'; use one of {', '.join(DATA_SUFFIXES)}")


def jsonl_rows(path: Path) -> Iterator[Located]:
    """(`file:line`, row dict or the RowError saying why the line is not one), blank lines skipped."""
    with open(path, encoding="utf-8", errors="replace") as handle:  # bad bytes: a row error, not a crash
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield where, RowError(f"bad JSON ({err.msg} at column {err.colno})")
                continue
            yield where, row if isinstance(row, dict) else _not_an_object(row)


def _not_an_object(row: Any) -> RowError:
    return RowError(f"row is a JSON {type(row).__name__}, not an object")


def _json_rows(path: Path) -> Iterator[Located]:
    """A .json file holding a list of objects (or {"data": [...]}); jsonl saved as .json also works."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data":  # one object per line under a .json name
            return jsonl_rows(path)
        raise DataError(f"{path}:{err.lineno}: bad JSON ({err.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects (or one object per line), got a {type(data).__name__}")
    return (
        (f"{path}, row {i}", row if isinstance(row, dict) else _not_an_object(row))
        for i, row in enumerate(data, start=1)
    )


def _read_parquet(path: Path) -> Any:
    import datasets

    try:
        return datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    except Exception as err:  # noqa: BLE001 - any reader failure is a bad file, said in one line
        raise DataError(f"{path}: cannot read parquet ({_first_line(err)})") from None


def _dataset_rows(dataset: Iterable[Mapping[str, Any]], name: str) -> Iterator[Located]:
    for i, row in enumerate(dataset, start=1):
        yield f"{name}, row {i}", row


def _folder_rows(path: Path, split: str) -> SourceRows:
    """A `save_to_disk` folder (Dataset or DatasetDict) or a folder of data files for `split`."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        dataset, read = _load_from_disk(path, split)
        where = f"{path}[{split}]" if read else str(path)
        note = "" if read else " (one saved Dataset: data.split does not apply)"
        return SourceRows(_dataset_rows(dataset, where), read, f"from {path}{note}")
    files = data_files(path, split)
    named = _named_after(files[0], path, split)
    rows = (located for file in files for located in read_file_rows(file))
    listing = ", ".join(str(f.relative_to(path)) for f in files[:3]) + (", ..." if len(files) > 3 else "")
    return SourceRows(rows, split if named else None, f"from {path} ({listing})")


def _load_from_disk(path: Path, split: str) -> tuple[Any, str | None]:
    """The saved Dataset, or the `split` of a saved DatasetDict, and the split read (None for a Dataset)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path), keep_in_memory=True)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"{path}: cannot read the saved dataset ({_first_line(err)})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise ConfigError(f"{path}: no split '{split}'; data.split can be {', '.join(loaded)}")
        return loaded[split], split
    return loaded, None


def _named_after(file: Path, folder: Path, split: str) -> bool:
    """Whether a data file holds `split` by its name: train.jsonl, train-00000-of-00001.parquet, train/x.jsonl."""
    stem = file.stem
    return stem == split or stem.startswith((f"{split}-", f"{split}_")) or split in file.relative_to(folder).parts[:-1]


def _split_of(file: Path, folder: Path) -> str | None:
    """The usual split name a data file is named after, if any."""
    return next((name for name in SPLIT_NAMES if _named_after(file, folder, name)), None)


def data_files(folder: Path, split: str) -> list[Path]:
    """The data files of `folder` for `split`: those named after it, or the only one there
    unless that one is named after another split (a lone test.jsonl is not a train split)."""
    found = sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not found:
        raise DataError(f"{folder}: no data files ({', '.join(DATA_SUFFIXES)}) in this folder")
    named = [p for p in found if _named_after(p, folder, split)]
    if named:
        return named
    if len(found) == 1:
        other = _split_of(found[0], folder)
        if other is None:
            return found
        raise ConfigError(f"{folder}: its only data file {found[0].name} is the '{other}' split, not '{split}'; "
                          f"set data.split={other} to read it anyway, or point data.path at the file")
    listing = ", ".join(str(p.relative_to(folder)) for p in found[:6])
    raise DataError(f"{folder}: no data file for split '{split}' among {listing}; set data.split or point at a file")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


# ---------------------------------------------------------------- rows -> examples


def _convert(rows: Iterator[Located], cfg: DataConfig) -> LoadResult:
    report = LoadReport(cfg.path)
    examples: list[Example] = []
    preset = fields = None
    for where, row in rows:
        report.rows += 1
        try:
            if isinstance(row, RowError):
                raise row
            if preset is None:
                name = detect_preset(row, cfg.path) if cfg.preset == "auto" else cfg.preset
                preset = PRESETS[name]
                fields = with_overrides(preset.fields, cfg.question_field, cfg.answer_field, cfg.id_field,
                                        cfg.tests_field)
                report.preset = name
            examples.append(row_to_example(row, preset, fields, cfg.kind, fallback_id=str(report.rows - 1)))
        except RowError as err:
            if cfg.on_bad_row == "error":
                hint = "" if "bad JSON" not in str(err) else "; set data.on_bad_row=skip to skip such rows"
                raise DataError(f"{where}: {err}{hint}") from None
            report.skipped.append((where, str(err)))
    report.kept = len(examples)
    if report.skipped:
        log.warning("%s", report.summary())
    if not examples:
        why = f"all {report.rows} rows were malformed" if report.rows else "it holds no rows"
        raise DataError(f"{cfg.path}: no examples to use ({why})")
    return LoadResult(examples, report)


# ---------------------------------------------------------------- benchmark files


def _load_preset(path: str | Path, preset: str) -> list[Example]:
    return load_examples(DataConfig(path=str(path), preset=preset))


def load_gsm8k(path: str | Path) -> list[Example]:
    """GSM8K rows: reference = the number after `#### `, commas removed; solution in meta."""
    return _load_preset(path, "gsm8k")


def load_math500(path: str | Path) -> list[Example]:
    """MATH-500 rows: LaTeX reference kept as written; subject, level, unique_id in meta."""
    return _load_preset(path, "math500")


def load_aime(path: str | Path) -> list[Example]:
    """AIME rows: integer references."""
    return _load_preset(path, "aime")


def load_amc(path: str | Path) -> list[Example]:
    """AMC rows: numeric references, "27.0" written as "27"."""
    return _load_preset(path, "amc")


def load_humaneval(path: str | Path) -> list[Example]:
    """HumanEval rows: kind code, tests end with `check(entry_point)`; canonical solution in meta."""
    return _load_preset(path, "humaneval")
