"""``python -m edge_app.screen PATH... [--csv OUT] [--jsonl OUT] [--case ID] [--workers N] [--shard I/N]
[--models DIR | --bundle DIR]``: the app's screening without a browser, for engineers and hospital scripts.

Every image under the given files and folders (recursive) goes through the page's own core,
``edge_app.screening.Screener``, so the size limit, decoding, image checks and refer rules are the app's. Each
result is the app's CSV row (``edge_app.records.csv_row``, fields ``CSV_FIELDS``) after one column, ``case``.
Rows come in the order of the sorted file list whatever ``--workers``; ``--shard I/N`` (0-based) keeps every
N-th file, so a Slurm array, a Kubernetes indexed Job or GNU parallel can spread an archive over machines.
Exit status: 0 every file screened, 1 some could not be read (one line each on stderr), 2 bad arguments.
Runs in the app's environment (.venv-edge): no Streamlit, no TensorFlow. See docs/screening-cli.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple, TextIO

from edge_app.bundle import list_bundles
from edge_app.records import CSV_FIELDS, csv_row, now
from edge_app.runtime import RuntimeMissingError
from edge_app.screening import Screener, check_size
from edge_app.settings import IMAGE_SUFFIXES, model_folders
from smearscope_core.console import progress
from smearscope_core.errors import ExitCode, InputError, SmearScopeError, report
from smearscope_core.imaging import ImageError

STDOUT = "-"
CASE_FIELD = "case"
# Some files could not be read: the batch is incomplete, as when a gate says no (ExitCode.GATE_FAILED is 1).
SOME_UNREADABLE = ExitCode.GATE_FAILED
INTERRUPTED = 130  # 128 + SIGINT, the shell's own status for a command stopped by Ctrl+C
CHUNK = 4  # files per task sent to a worker: few enough for an even share, enough to keep the queue busy


class Shard(NamedTuple):
    """``--shard I/N``: this process takes files I, I+N, I+2N, ... (0-based) of the sorted list."""

    index: int
    count: int


class Outcome(NamedTuple):
    """One file's answer: its CSV row, or the sentence saying why it could not be read."""

    row: dict | None
    error: str | None


def shard_spec(text: str) -> Shard:
    """Parse ``I/N`` with 0 <= I < N: 0-based like Kubernetes' JOB_COMPLETION_INDEX and a Slurm ``--array=0-...``."""
    index, _, count = text.partition("/")
    try:
        shard = Shard(int(index), int(count))
    except ValueError:
        shard = Shard(-1, 0)
    if not 0 <= shard.index < shard.count:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N with 0 <= I < N (0-based, e.g. 0/4 to 3/4)")
    return shard


def worker_count(text: str) -> int:
    """``--workers N``: a whole number of processes, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes (1 or more)")
    return int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options; anything unusable (a missing PATH or folder, a bad shard) exits 2 through argparse."""
    parser = argparse.ArgumentParser(prog="python -m edge_app.screen", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files and folders (recursive)")
    parser.add_argument("--csv", metavar="OUT", help="write CSV rows here ('-': stdout; the default without --jsonl)")
    parser.add_argument("--jsonl", metavar="OUT", help="write one JSON object per line here ('-': stdout)")
    parser.add_argument("--case", default="", metavar="ID", help="case or specimen ID, the first column of every row")
    parser.add_argument("--workers", type=worker_count, default=1, metavar="N",
                        help="worker processes, each with its own model on one thread (default 1)")  # fmt: skip
    parser.add_argument("--shard", type=shard_spec, default=Shard(0, 1), metavar="I/N",
                        help="only files I, I+N, I+2N, ... of the sorted list (0-based: 0/4 to 3/4)")  # fmt: skip
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                        help="a folder of a site's own bundles, as the launcher's (repeatable); the first bundle "
                             "offered is used, as by `python -m edge_app.launcher --selftest`")  # fmt: skip
    models.add_argument("--bundle", type=Path, metavar="DIR", help="this model bundle folder")
    args = parser.parse_args(argv)
    problems = [f"{p}: no such file or folder" for p in args.paths if not p.exists()]
    problems += [f"--models {p}: not a folder" for p in args.models if not p.is_dir()]
    if args.csv == STDOUT and args.jsonl == STDOUT:
        problems.append("--csv and --jsonl cannot both write to stdout")
    if problems:
        parser.error("; ".join(problems))
    if args.csv is None and args.jsonl is None:
        args.csv = STDOUT
    return args


def folder_images(folder: Path) -> Iterator[Path]:
    """The images under ``folder``, recursively, by suffix; hidden files and folders (``.DS_Store``, macOS'
    ``._name.jpg`` resource forks, ``.git``) are left out: they are never smears. Links to folders are not
    followed, so a link loop cannot make the walk endless."""
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                yield Path(root) / name


def find_images(paths: Iterable[Path]) -> list[Path]:
    """Every file to screen, sorted and without repeats (the same file named twice, or through a link, counts
    once), so every machine of a sharded run sees the same list. A file named on the command line is taken
    whatever its suffix: when it is not an image, its line on stderr says so."""
    found = [path for given in paths for path in (folder_images(given) if given.is_dir() else [given])]
    unique, seen = [], set()
    for path in sorted(found):
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def bundle_folder(args: argparse.Namespace) -> Path:
    """``--bundle``, else the first bundle the app offers (the shipped default first), as the launcher's selftest."""
    if args.bundle is not None:
        return args.bundle
    bundles = list_bundles(*model_folders(args.models))
    if not bundles:
        raise InputError(f"There is no model bundle in {', '.join(str(f) for f in model_folders(args.models))}.")
    return bundles[0]


def load_screener(folder: Path) -> Screener:
    """The app's screener on one thread; a bundle the app would refuse is refused here with its sentence."""
    try:
        return Screener(folder, num_threads=1)
    except RuntimeMissingError as error:
        raise SmearScopeError(str(error)) from None  # exit 3: install the runtime
    except ValueError as error:  # BundleError, or a card section this app version cannot read
        raise InputError(str(error)) from None


def screen_path(screener: Screener, path: Path) -> Outcome:
    """One file through the app's path (size limit before reading, decode, checks, classify) to its CSV row."""
    name = str(path)
    try:
        check_size(path.stat().st_size, name)  # a huge file is refused before it is read into memory
        result = screener.screen_file(path.read_bytes(), name).result
    except ImageError as error:
        return Outcome(None, " ".join(str(error).split()))  # one line, whatever the message holds
    except OSError as error:
        return Outcome(None, f"{name} could not be read: {error.strerror or error}.")
    return Outcome(csv_row(result, now()), None)


# One BLAS thread per worker: numpy's own threads (the embedding check's matrix product) on top of N workers
# oversubscribe the cores (measured on 2 cores: 2 workers at 0.84x of one; with one BLAS thread each, 1.95x).
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_WORKER_SCREENER: Screener | None = None  # one per worker process, made once by _start_worker


def _start_worker(folder: str) -> None:
    """Each worker loads (and checks) the bundle itself: an interpreter cannot be sent between processes."""
    global _WORKER_SCREENER
    _WORKER_SCREENER = Screener(folder, num_threads=1)


def _screen_in_worker(path: Path) -> Outcome:
    """``screen_path`` with the worker's own screener; only the path goes in and the row comes out."""
    if _WORKER_SCREENER is None:
        raise RuntimeError("the worker was started without its screener")
    return screen_path(_WORKER_SCREENER, path)


def outcomes(files: list[Path], screener: Screener, workers: int) -> Iterator[Outcome]:
    """Each file's outcome, in the order of ``files``; with several workers, in 'spawn' processes (the same on
    Linux, macOS and Windows, and no copy of this process' interpreter) that each load the bundle once."""
    if workers == 1 or len(files) < 2:
        yield from (screen_path(screener, path) for path in files)
        return
    for variable in BLAS_THREAD_VARIABLES:  # inherited by the spawned workers, read when their numpy loads
        os.environ.setdefault(variable, "1")
    context = multiprocessing.get_context("spawn")
    folder = str(screener.bundle.folder)
    pool = ProcessPoolExecutor(min(workers, len(files)), mp_context=context, initializer=_start_worker,
                               initargs=(folder,))  # fmt: skip
    try:
        yield from pool.map(_screen_in_worker, files, chunksize=CHUNK)  # map keeps the input order
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def output_fields() -> tuple[str, ...]:
    """The app's CSV fields after ``case``: read from edge_app.records on every run, never copied."""
    return (CASE_FIELD, *CSV_FIELDS)


class RowWriter:
    """Writes each row to the CSV and/or JSONL stream as it comes, flushed, so a stopped run keeps its rows."""

    def __init__(self, csv_stream: TextIO | None, jsonl_stream: TextIO | None):
        self.fields = output_fields()
        self.csv_stream, self.jsonl_stream = csv_stream, jsonl_stream
        self.csv = None
        if csv_stream is not None:  # the app's results_csv dialect: "\n" line ends, unknown keys ignored
            self.csv = csv.DictWriter(csv_stream, self.fields, lineterminator="\n", extrasaction="ignore")
            self.csv.writeheader()
            csv_stream.flush()

    def write(self, row: dict) -> None:
        if self.csv is not None and self.csv_stream is not None:
            self.csv.writerow(row)
            self.csv_stream.flush()
        if self.jsonl_stream is not None:  # the same keys and values as the CSV row
            self.jsonl_stream.write(json.dumps({key: row[key] for key in self.fields}, ensure_ascii=False) + "\n")
            self.jsonl_stream.flush()


def open_output(target: str | None, stack: ExitStack) -> TextIO | None:
    """An output stream: stdout for '-', else the file (replaced), closed by ``stack``; bad input if unwritable."""
    if target is None:
        return None
    if target == STDOUT:
        return sys.stdout
    try:
        return stack.enter_context(open(target, "w", newline="", encoding="utf-8"))
    except OSError as error:
        raise InputError(f"{target} cannot be written: {error.strerror or error}.") from None


def say(line: str) -> None:
    """One line on stderr, drawn above the progress bar when there is one (tqdm.write keeps the bar whole)."""
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
        except ImportError:
            pass
        else:
            tqdm.write(line, file=sys.stderr)
            return
    print(line, file=sys.stderr, flush=True)


def screen_all(args: argparse.Namespace, files: list[Path], screener: Screener, writer: RowWriter) -> ExitCode:
    """Screen ``files`` in order, writing each row as it comes and one line per unreadable file."""
    screened = referred = unreadable = 0
    for outcome in progress(outcomes(files, screener, args.workers), "screening", total=len(files)):
        if outcome.row is None:
            unreadable += 1
            say(outcome.error or "a file could not be read")
            continue
        writer.write({CASE_FIELD: args.case, **outcome.row})
        screened += 1
        referred += str(outcome.row.get("inconclusive")) == "True"
    say(f"screened {screened} of {len(files)} files ({referred} referred); {unreadable} could not be read")
    return SOME_UNREADABLE if unreadable else ExitCode.OK


def run(args: argparse.Namespace) -> ExitCode:
    """Find, shard and screen the files; bad input (no images, no bundle, an unwritable output) exits 2."""
    every = find_images(args.paths)
    if not every:
        raise InputError(f"There are no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, args.paths))}.")
    files = every[args.shard.index :: args.shard.count]
    if args.shard.count > 1:
        say(f"shard {args.shard.index}/{args.shard.count}: {len(files)} of {len(every)} files")
    screener = load_screener(bundle_folder(args))
    with ExitStack() as stack:
        writer = RowWriter(open_output(args.csv, stack), open_output(args.jsonl, stack))
        return screen_all(args, files, screener, writer)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except SmearScopeError as error:
        return report(error)
    except KeyboardInterrupt:
        say("interrupted: the rows written so far are complete")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
