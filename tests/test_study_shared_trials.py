"""How shared-study workers decide which trial trains a job, on a real (in-memory) Optuna study: two workers that
start the same job at once must not both give it up, and a job every trial gave up is enqueued again."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from cnnarena.study.runner import Job
from cnnarena.study.shared import _holder, _queue, _requeue_orphans

JOBS = [Job("lr simple-2conv 0.001", None, Path("a"), "simple-2conv"),
        Job("lr simple-2conv 0.01", None, Path("b"), "simple-2conv")]


def _study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def _start(study):
    trial = study.ask()
    trial.suggest_int("job", 0, len(JOBS) - 1)
    return trial


def test_of_two_trials_started_at_once_for_one_job_only_the_later_gives_way():
    study = _study()
    for _ in range(2):  # two workers enqueued the stage at once
        study.enqueue_trial({"job": 0}, user_attrs={"stage": "lr"})
    first, second = _start(study), _start(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.RUNNING]
    assert _holder(trials, first.number, 0, "lr") is None
    assert _holder(trials, second.number, 0, "lr").number == first.number
    assert _holder(trials, first.number, 0, "final") is None  # another stage's job 0 is another job

    study.tell(first, 0.9)  # a finished job is held by its trial, whatever the numbers
    assert _holder(study.get_trials(deepcopy=False), second.number, 0, "lr").number == first.number


def test_a_job_every_trial_gave_up_is_enqueued_again_once():
    study = _study()
    _queue(study, "lr", JOBS)
    _queue(study, "lr", JOBS)  # a second worker: the waiting trials hold the jobs already
    assert len(study.get_trials()) == 2
    _requeue_orphans(study, "lr", JOBS)
    assert len(study.get_trials()) == 2  # both wait

    for _ in JOBS:  # both trials given up, as when two workers each saw the other's trial running
        study.tell(_start(study), state=TrialState.PRUNED)
    _requeue_orphans(study, "lr", JOBS)
    _requeue_orphans(study, "lr", JOBS)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["job"] for t in waiting) == [0, 1]
    assert all(t.user_attrs == {"stage": "lr", "key": JOBS[t.system_attrs["fixed_params"]["job"]].key}
               for t in waiting)
