"""Many render jobs: read a jobs file, run them one by one, in worker processes, or on a Ray cluster.

A job that fails (missing file, bad setting, a crash inside the render) is recorded with its message and
the others go on; `format_summary` prints one table at the end. Workers are spawned processes (CUDA
cannot be forked), each pinned to one CUDA device when there are any (round robin), else sharing the
CPU cores. Ray (`pip install ray`) is imported only when `ray_address` is given.

Jobs files: JSON Lines (one object per line; blank lines and `#` comments skipped) or TOML (top-level
keys are defaults for every job, then `[[job]]` tables). Keys are RenderJob fields and StreamConfig
settings; relative paths are relative to the jobs file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, KnotError, MissingDependencyError
from .render import RenderJob, render, state_path
from .render_marker import describe_output
from .text_file import read_text

log = logging.getLogger(__name__)

Status = str  # "done", "failed", "interrupted", "skipped", "not started"


@dataclass(frozen=True)
class BatchEntry:
    """One job of a jobs file, or why it could not be read."""

    name: str
    job: RenderJob | None
    error: str | None = None


@dataclass(frozen=True)
class JobResult:
    name: str
    status: Status
    frames: int = 0
    seconds: float = 0.0
    message: str = ""
    out: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")


def _read_toml(path: Path) -> list[tuple[str, dict]]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError as err:
            raise MissingDependencyError("TOML jobs files need Python >= 3.11 or `pip install tomli`; or write "
                                         "the jobs as JSON Lines (.jsonl)") from err
    try:
        data = tomllib.loads(read_text(path, "jobs file (.jsonl or .toml)"))
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"jobs file {str(path)!r} is not valid TOML ({err})") from err
    tables = data.pop("job", [])
    if not isinstance(tables, list) or not tables:
        raise InputError(f"jobs file {str(path)!r} has no [[job]] tables; add one [[job]] per render")
    return [(f"job {i + 1}", {**data, **table}) for i, table in enumerate(tables)]


def _read_jsonl(path: Path) -> list[tuple[str, dict | str]]:
    rows: list[tuple[str, dict | str]] = []
    for number, line in enumerate(read_text(path, "jobs file (.jsonl or .toml)").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            rows.append((f"line {number}", f"not valid JSON ({err.msg} at column {err.colno})"))
            continue
        rows.append((f"line {number}", row if isinstance(row, dict) else "not a JSON object"))
    return rows


def load_jobs(path: str | Path, *, overwrite: bool = False, save_every: int | None = None) -> list[BatchEntry]:
    """Read a jobs file; a job that cannot be built becomes an entry with its error (reported, not raised)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"jobs file {str(path)!r} does not exist; give a .jsonl or .toml file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".toml"):
        raise InputError(f"jobs file {str(path)!r}: use .jsonl (JSON Lines) or .toml")
    rows = _read_toml(path) if suffix == ".toml" else _read_jsonl(path)
    entries = []
    for where, row in rows:
        if isinstance(row, str):
            entries.append(BatchEntry(where, None, row))
            continue
        defaults = {"overwrite": overwrite} | ({"save_every": save_every} if save_every else {})
        try:
            job = RenderJob.from_mapping(defaults | row, base_dir=path.parent)
        except (KnotError, TypeError) as err:
            entries.append(BatchEntry(str(row.get("name") or row.get("out") or where), None, str(err)))
            continue
        entries.append(BatchEntry(job.name, job))
    if not entries:
        raise InputError(f"jobs file {str(path)!r} holds no jobs")
    return entries


def run_one(job: RenderJob, *, resume: bool = False, device: str | None = None, progress: bool = False,
            should_stop: Callable[[], bool] | None = None) -> JobResult:
    """Render one job and report, never raise: the batch goes on whatever happens inside.
    With resume, only a render that finished (render_marker) is skipped; a stopped one with a state continues."""
    started = time.perf_counter()
    if resume and not job.overwrite and job.out.is_file():
        found = describe_output(job.out, state_path(job.out))
        if found.finished:
            return JobResult(job.name, "skipped", found.frames or 0, message="already rendered", out=str(job.out))
        if found.saved_at is None:
            return JobResult(job.name, "failed", message=found.describe(), out=str(job.out))
        job = job.replace(resume=True)
    if device is not None and job.device is None:
        job = job.replace(device=device)
    try:
        result = render(job, progress=progress, should_stop=should_stop)
    except KnotError as err:
        return JobResult(job.name, "failed", seconds=time.perf_counter() - started, message=str(err),
                         out=str(job.out))
    except Exception as err:  # noqa: BLE001 - a crash in one job is reported; the batch goes on
        log.debug("job %s crashed", job.name, exc_info=True)
        return JobResult(job.name, "failed", seconds=time.perf_counter() - started,
                         message=f"{type(err).__name__}: {err}", out=str(job.out))
    if result.interrupted:
        return JobResult(job.name, "interrupted", result.frames, result.seconds, out=str(job.out),
                         message=describe_output(job.out, state_path(job.out)).describe())
    return JobResult(job.name, "done", result.frames, result.seconds, out=str(job.out))


def run_jobs(entries: Iterable[BatchEntry], *, workers: int = 1, ray_address: str | None = None,
             resume: bool = False, progress: bool = True, on_result: Callable[[JobResult], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> list[JobResult]:
    """Run every readable entry; results come back in the jobs file's order. Once should_stop() is true the
    running jobs stop after their chunk (saving their resume state) and the others are not started."""
    stop = should_stop or (lambda: False)
    entries = list(entries)
    if workers < 1:
        raise InputError(f"workers={workers}; must be >= 1")
    results: dict[int, JobResult] = {i: JobResult(e.name, "failed", message=e.error or "")
                                     for i, e in enumerate(entries) if e.job is None}
    todo = {i: e.job for i, e in enumerate(entries) if e.job is not None}

    def report(i: int, result: JobResult) -> None:
        results[i] = result
        log.info("%s: %s %s", result.name, result.status, result.message)
        if on_result is not None:
            on_result(result)

    if ray_address is not None:
        from .batch_ray import run_on_ray

        run_on_ray(todo, ray_address, resume, report, run_one=run_one,
                   failed=lambda job, message: JobResult(job.name, "failed", message=message, out=str(job.out)))
    elif workers == 1:
        for i, job in todo.items():
            if not stop():
                report(i, run_one(job, resume=resume, progress=progress, should_stop=stop))
    else:
        _run_in_processes(todo, workers, resume, report, stop)
    for i, job in todo.items():
        results.setdefault(i, JobResult(job.name, "not started", message="the batch was stopped", out=str(job.out)))
    return [results[i] for i in range(len(entries))]


def worker_devices(workers: int) -> list[str | None]:
    """One device per worker: CUDA devices round robin when present, else None (the CPU)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:
        count = 0
    return [f"cuda:{i % count}" for i in range(workers)] if count else [None] * workers


_WORKER: dict[str, Any] = {}  # this worker process's device (set once by the pool initializer)


def _init_worker(devices, threads: int) -> None:
    import signal

    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # Ctrl-C reaches the whole process group: a worker finishes its chunk and saves its state (the parent
    # stops handing out jobs); a second one stops it at once
    signal.signal(signal.SIGINT, _worker_stop)
    signal.signal(signal.SIGTERM, _worker_stop)
    _WORKER["device"] = devices.get()
    if _WORKER["device"] is None:
        torch.set_num_threads(threads)


def _worker_stop(signum: int, frame: Any) -> None:
    if _WORKER.get("stop"):
        raise KeyboardInterrupt
    _WORKER["stop"] = True


def _run_in_worker(job: RenderJob, resume: bool) -> JobResult:
    if _WORKER.get("stop"):
        return JobResult(job.name, "not started", message="the batch was stopped", out=str(job.out))
    return run_one(job, resume=resume, device=_WORKER.get("device"), should_stop=lambda: bool(_WORKER.get("stop")))


def _run_in_processes(todo: dict[int, RenderJob], workers: int, resume: bool,
                      report: Callable[[int, JobResult], None], stop: Callable[[], bool]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    ctx = multiprocessing.get_context("spawn")  # CUDA and fork do not mix
    devices = ctx.Queue()
    for device in worker_devices(workers):
        devices.put(device)
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(devices, threads)) as pool:
        futures = {pool.submit(_run_in_worker, job, resume): i for i, job in todo.items()}
        for future in as_completed(futures):
            i = futures[future]
            if stop():
                for other in futures:
                    other.cancel()  # not started yet: reported "not started"
            if future.cancelled():
                continue
            try:
                report(i, future.result())
            except BrokenProcessPool as err:  # a worker died (killed, out of memory): its job failed
                report(i, JobResult(todo[i].name, "failed", message=f"worker process died ({err})",
                                    out=str(todo[i].out)))


def format_summary(results: list[JobResult]) -> str:
    """A plain-text table: one row per job, then the totals."""
    rows = [("job", "status", "frames", "time", "fps", "message")]
    for r in results:
        fps = f"{r.frames / r.seconds:.1f}" if r.seconds > 0 and r.frames else "-"
        rows.append((r.name, r.status, str(r.frames), f"{r.seconds:.1f}s", fps, r.message.replace("\n", " ")))
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    counts = {s: sum(r.status == s for r in results)
              for s in ("done", "skipped", "interrupted", "not started", "failed")}
    lines.append(f"{len(results)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(line.rstrip() for line in lines)
