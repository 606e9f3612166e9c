"""Run batch jobs on a Ray cluster (optional dependency `ray`, imported only here).

Each job is one Ray task running `batch.run_one` on a node; a task asks for one GPU when the cluster
has any, so Ray spreads the jobs over the GPUs of every node. knot_core must be installed on every node
and the jobs' paths must exist there (a shared file system); outputs are written there. Address `local`
starts a throw-away Ray instance on this machine; `auto` joins the cluster this machine belongs to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .errors import MissingDependencyError

log = logging.getLogger(__name__)


def _import_ray():
    try:
        import ray
    except ImportError as err:
        raise MissingDependencyError("--ray needs the optional dependency ray: pip install 'ray>=2.9' "
                                     "(on every node of the cluster), or run without --ray") from err
    return ray


def run_on_ray(todo: dict, address: str, resume: bool, report: Callable, *, run_one: Callable,
               failed: Callable) -> None:
    """todo: index -> RenderJob; report(index, JobResult) as each finishes. address: 'auto', 'local' or host:port.

    run_one(job, resume=, device=) -> JobResult runs on a node; failed(job, message) -> JobResult records a lost
    task (both batch's, passed in so this module needs nothing of batch).
    """
    ray = _import_ray()

    ray.init(address=None if address == "local" else address, ignore_reinit_error=True,
             logging_level=logging.WARNING)
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_gpus=gpus, max_retries=0)(run_one)
    pending = {task.remote(job, resume=resume, device="cuda" if gpus else None): i for i, job in todo.items()}
    log.info("submitted %d jobs to Ray at %s (%s)", len(pending), address, "1 GPU each" if gpus else "CPU")
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(done[0])
        try:
            report(i, ray.get(done[0]))
        except Exception as err:  # noqa: BLE001 - a lost node or a crashed worker fails this job only
            report(i, failed(todo[i], f"Ray task failed: {type(err).__name__}: {err}"))
