"""`cnnarena study ... --storage URL`: the study's runs shared by workers through an Optuna study.

Every worker runs the same command. The study's trainings (the learning-rate comparison first, then the final runs
with the learning rates it chose) are enqueued as Optuna trials of one parameter, the job's index; each worker takes
waiting trials (Optuna hands each to one worker) and trains its run. A worker killed mid-run stops sending
heartbeats: another worker fails its trial and retries it, and the run resumes in its directory. When every run is
done, the worker that finds it so writes the report with the ordinary study code, which reuses every finished run
(the report is marked written in the Optuna study, so it is written once).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .. import rundir
from ..errors import UserError
from .config import StudyConfig
from .runner import CallbacksFor, Job, best_lr, final_jobs, lr_jobs, prepare_study, run_study, train_job
from .tune import _retry_callback, _storage

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0


def _job_of(trial) -> int | None:
    """The job index a trial holds; a waiting trial has it only as the enqueued fixed parameter."""
    return trial.params.get("job", trial.system_attrs.get("fixed_params", {}).get("job"))


def _queue(optuna_study, stage: str, jobs: list[Job]) -> None:
    """Enqueue the stage's jobs that no trial holds yet (another worker may have enqueued them)."""
    held = {(_job_of(t), t.user_attrs.get("stage")) for t in optuna_study.get_trials(deepcopy=False)}
    for i, job in enumerate(jobs):
        if (i, stage) not in held:
            optuna_study.enqueue_trial({"job": i}, user_attrs={"stage": stage, "key": job.key})


def _done(optuna_study, stage: str, jobs: list[Job]) -> bool:
    from optuna.trial import TrialState

    complete = {t.params.get("job") for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("stage") == stage}
    return all(i in complete for i in range(len(jobs)))


def _holder(trials, number: int, index: int, stage: str):
    """The trial that has job `index` of the stage instead of trial `number`: one that finished it, or an earlier one
    training it. Two workers that start the same job at once each see the other running; only the later one gives
    way, so the job is never given up by both."""
    from optuna.trial import TrialState

    for t in trials:
        if t.number == number or _job_of(t) != index or t.user_attrs.get("stage") != stage:
            continue
        if t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number < number):
            return t
    return None


def _requeue_orphans(optuna_study, stage: str, jobs: list[Job]) -> None:
    """Enqueue again the jobs that no trial finished, trains or waits for: every trial of it gave way, or was pruned
    by a worker that found its run locked. A duplicate (another worker's retry or requeue) gives way in `_holder`."""
    from optuna.trial import TrialState

    live = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE)
    trials = [t for t in optuna_study.get_trials(deepcopy=False) if t.user_attrs.get("stage") == stage]
    for i, job in enumerate(jobs):
        mine = [t for t in trials if _job_of(t) == i]
        if not any(t.state in live for t in mine):
            log.info(f"[worker] {job.key}: no trial holds it; enqueued again")
            optuna_study.enqueue_trial({"job": i}, user_attrs={"stage": stage, "key": job.key})


def _work(optuna_study, stage: str, jobs: list[Job], callbacks_for: CallbacksFor | None = None) -> int:
    """Train waiting jobs of the stage until none waits; the number this worker trained."""
    import optuna
    from optuna.trial import TrialState

    trained = 0

    def objective(trial) -> float:
        nonlocal trained
        index = trial.suggest_int("job", 0, len(jobs) - 1)
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        if frozen.user_attrs.get("stage") != stage:  # asked with nothing waiting: not a job of ours
            raise optuna.TrialPruned("no job waiting")
        job = jobs[index]
        holder = _holder(trial.study.get_trials(deepcopy=False), trial.number, index, stage)
        if holder is not None:  # two workers enqueued the stage at once: the job has a trial already
            raise optuna.TrialPruned(f"{job.key}: trial {holder.number} has it")
        retried = _retry_callback().retried_trial_number(frozen)
        log.info(f"[worker] {job.key}" + (f" (retry of trial {retried})" if retried is not None else ""))
        try:
            metrics = train_job(job, callbacks_for)
        except UserError as e:
            if "is being written by" not in str(e):
                raise
            raise optuna.TrialPruned(f"{job.key}: another worker trains it") from None
        trained += 1
        return float(metrics["test_accuracy"])

    while any(t.user_attrs.get("stage") == stage
              for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING,))):
        optuna_study.optimize(objective, n_trials=1)
    return trained


def _wait(optuna_study, stage: str, jobs: list[Job], callbacks_for: CallbacksFor | None = None) -> None:
    """Until every job of the stage is complete (other workers still training), retrying dead workers' jobs."""
    import optuna
    from optuna.trial import TrialState

    while not _done(optuna_study, stage, jobs):
        optuna.storages.fail_stale_trials(optuna_study)  # a dead worker's trial: failed, its retry waiting
        _requeue_orphans(optuna_study, stage, jobs)
        _work(optuna_study, stage, jobs, callbacks_for)
        failed_for_good = [i for i in range(len(jobs))
                           if sum(t.params.get("job") == i and t.user_attrs.get("stage") == stage
                                  for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.FAIL,))) > 1]
        if failed_for_good:
            raise UserError(f"study runs failed twice: {', '.join(jobs[i].key for i in failed_for_good)}")
        time.sleep(POLL_SECONDS)


def run_shared_study(study: StudyConfig, storage: str, name: str | None = None, heartbeat: float = 10.0,
                     callbacks_for: CallbacksFor | None = None) -> dict[str, Any] | None:
    """This worker's share of the study; the comparison when this worker wrote the report, else None.
    callbacks_for: more training callbacks for each run this worker trains (a tracker logging it live)."""
    import optuna

    data, _, split_path = prepare_study(study)
    optuna_study = optuna.create_study(study_name=name or f"cnnarena-study-{Path(study.out).resolve().name}",
                                       storage=_storage(storage, heartbeat), load_if_exists=True,
                                       direction="maximize")
    first = lr_jobs(study, data, split_path)
    _queue(optuna_study, "lr", first)
    _work(optuna_study, "lr", first, callbacks_for)
    _wait(optuna_study, "lr", first, callbacks_for)
    curves: dict[str, dict[float, list]] = {}
    for job in first:
        history = rundir.read_history(job.run_dir)
        curves.setdefault(job.model, {})[job.cfg.train.lr] = history
    final = final_jobs(study, data, split_path, {m: best_lr(c) for m, c in curves.items()})
    _queue(optuna_study, "final", final)
    _work(optuna_study, "final", final, callbacks_for)
    _wait(optuna_study, "final", final, callbacks_for)
    if optuna_study.user_attrs.get("report_written"):
        log.info("[worker] every run is done; another worker wrote the report")
        return None
    try:
        comparison = run_study(study)  # every run finished: it trains nothing, it compares and reports
    except UserError as e:
        if "is being written by" in str(e):
            log.info("[worker] every run is done; another worker is writing the report")
            return None
        raise
    optuna_study.set_user_attr("report_written", True)
    return comparison
