"""Every write rule, in one place: `decide(facts, command) -> events`, for client and server.

A command is a request to change the store. Its fields are validated when it is made (the
limits of tracker.validation), so a command that exists can be stored by every backend. The
decision reads `Facts`, the current state of the streams the command touches, folded from the
log (never from views, which may lag), and returns the events that record the change, or raises
the error MLflow gives for it. It is pure: the CommandHandler (tracker/handler.py) loads the
facts, appends the events with the sequence numbers the facts were read at, and on a conflict
with another writer re-reads and decides again; so the rules hold across processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from tracker.artifacts.paths import join_artifact_uri, parse_artifact_uri
from tracker.errors import (
    AlreadyExistsError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ParamConflictError,
    RunNotActiveError,
)
from tracker.events import (
    ACTIVE,
    DEFAULT_EXPERIMENT_ID,
    DELETED,
    RUN_NAME_TAG,
    ArtifactLogged,
    DatasetInput,
    DatasetInputsLogged,
    DomainEvent,
    ExperimentCreated,
    ExperimentDeleted,
    ExperimentNameClaimed,
    ExperimentNameReleased,
    ExperimentRenamed,
    ExperimentRestored,
    ExperimentTagDeleted,
    ExperimentTagSet,
    MetricSeries,
    MetricsLogged,
    ParamsLogged,
    RunCreated,
    RunDeleted,
    RunRenamed,
    RunRestored,
    RunStatusChanged,
    TagDeleted,
    TagsSet,
)
from tracker.validation import (
    MAX_EXPERIMENT_TAG_VALUE_LENGTH,
    validate_artifact_record,
    validate_dataset,
    validate_experiment_id,
    validate_experiment_name,
    validate_key,
    validate_new_run_id,
    validate_optional_time,
    validate_params,
    validate_run_id,
    validate_run_name,
    validate_status,
    validate_tag,
    validate_tags,
    validate_text,
    validate_timestamp,
    validate_user,
)

# -- the state decisions read --------------------------------------------------------------------


@dataclass(slots=True)
class RunFacts:
    """A run as its own stream (and its experiment's deletions) say it is now."""

    exists: bool = False
    experiment_id: str = ""
    status: str = ""
    lifecycle_stage: str = ACTIVE
    artifact_uri: str = ""
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    stages: list[tuple[int, str]] = field(default_factory=list)
    """(position, stage) of the run's own RunDeleted/RunRestored events."""


@dataclass(slots=True)
class ExperimentFacts:
    exists: bool = False
    name: str = ""
    lifecycle_stage: str = ACTIVE
    artifact_location: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    stages: list[tuple[int, str]] = field(default_factory=list)
    """(position, stage) of ExperimentDeleted/ExperimentRestored, which cascade to its runs."""


@dataclass(slots=True)
class NameFacts:
    """Who holds an experiment name, by its claim stream; `legacy` is an experiment holding it
    without a claim (created before claims existed), found in the views."""

    holder: str | None = None
    legacy: str | None = None


@dataclass(slots=True)
class Facts:
    """What the handler loaded for a batch of commands, keyed like the commands name them."""

    runs: dict[str, RunFacts] = field(default_factory=dict)
    experiments: dict[str, ExperimentFacts] = field(default_factory=dict)
    names: dict[str, NameFacts] = field(default_factory=dict)
    created_at: dict[str, int] = field(default_factory=dict)
    """Position of each run's RunCreated: experiment deletions before it do not concern it."""
    next_experiment_id: int = 1
    artifact_root: str = ""
    now: int = 0

    def run(self, run_id: str) -> RunFacts:
        found = self.runs.get(run_id)
        if found is None or not found.exists:
            raise NotFoundError(f"Run with id={run_id} not found")
        return found

    def run_stage(self, run_id: str) -> str:
        """The run's lifecycle: its own deletions and its experiment's, in log order (an
        experiment's deletion deletes its active runs; its restoration restores them)."""
        run = self.run(run_id)
        experiment = self.experiments.get(run.experiment_id)
        born = self.created_at.get(run_id, 0)
        moves = [(p, s, "run") for p, s in run.stages]
        if experiment is not None:
            moves += [(p, s, "experiment") for p, s in experiment.stages if p > born]
        stage = ACTIVE
        for _, s, _ in sorted(moves):
            stage = s
        return stage

    def active_run(self, run_id: str) -> RunFacts:
        run = self.run(run_id)
        stage = self.run_stage(run_id)
        if stage != ACTIVE:
            raise RunNotActiveError(
                f"The run {run_id} must be in the 'active' state. Current state is {stage}."
            )
        return run

    def experiment(self, experiment_id: str) -> ExperimentFacts:
        found = self.experiments.get(experiment_id)
        if found is None or not found.exists:
            raise NotFoundError(f"No Experiment with id={experiment_id} exists")
        return found


# -- commands --------------------------------------------------------------------------------


def new_command_id() -> bytes:
    return uuid.uuid4().bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """Base of every command. `command_id` makes it idempotent: the events it is decided into
    get ids derived from it, so a command sent twice (a retry after a lost answer) is stored
    once."""

    command_id: bytes = field(default_factory=new_command_id, compare=False)
    kind: ClassVar[str] = ""

    def run_ids(self) -> tuple[str, ...]:
        """Runs whose facts the decision reads."""
        return ()

    def experiment_ids(self) -> tuple[str, ...]:
        """Experiments whose facts the decision reads (besides those of its runs)."""
        return ()

    def names(self) -> tuple[str, ...]:
        """Experiment names whose claims the decision reads."""
        return ()


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateExperiment(Command):
    name: str
    artifact_location: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    experiment_id: str | None = None
    """Given only for the Default experiment (id 0); others get the next free id."""

    def __post_init__(self) -> None:
        _set(self, "name", validate_experiment_name(self.name))
        _set(self, "tags", validate_tags(self.tags, MAX_EXPERIMENT_TAG_VALUE_LENGTH))
        if self.artifact_location is not None:
            validate_text(self.artifact_location, "artifact_location")
            parse_artifact_uri(self.artifact_location)  # refuses what opened holes in MLflow
        if self.experiment_id is not None:
            validate_experiment_id(self.experiment_id)

    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def experiment_ids(self) -> tuple[str, ...]:
        return (self.experiment_id,) if self.experiment_id is not None else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RenameExperiment(Command):
    experiment_id: str
    new_name: str

    def __post_init__(self) -> None:
        validate_experiment_id(self.experiment_id)
        _set(self, "new_name", validate_experiment_name(self.new_name))

    def experiment_ids(self) -> tuple[str, ...]:
        return (self.experiment_id,)

    def names(self) -> tuple[str, ...]:
        return (self.new_name,)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteExperiment(Command):
    experiment_id: str

    def __post_init__(self) -> None:
        validate_experiment_id(self.experiment_id)

    def experiment_ids(self) -> tuple[str, ...]:
        return (self.experiment_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreExperiment(DeleteExperiment):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class SetExperimentTag(Command):
    experiment_id: str
    key: str
    value: str

    def __post_init__(self) -> None:
        validate_experiment_id(self.experiment_id)
        k, v = validate_tag(self.key, self.value, MAX_EXPERIMENT_TAG_VALUE_LENGTH)
        _set(self, "key", k)
        _set(self, "value", v)

    def experiment_ids(self) -> tuple[str, ...]:
        return (self.experiment_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteExperimentTag(Command):
    experiment_id: str
    key: str

    def __post_init__(self) -> None:
        validate_experiment_id(self.experiment_id)
        validate_text(self.key, "tag key")

    def experiment_ids(self) -> tuple[str, ...]:
        return (self.experiment_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateRun(Command):
    run_id: str
    experiment_id: str = DEFAULT_EXPERIMENT_ID
    run_name: str
    start_time: int
    user_id: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    artifact_uri: str | None = None
    """Default: `<experiment artifact_location>/<run_id>/artifacts`."""

    def __post_init__(self) -> None:
        validate_new_run_id(self.run_id)
        validate_experiment_id(self.experiment_id)
        _set(self, "run_name", validate_run_name(self.run_name))
        validate_timestamp(self.start_time, "start_time")
        validate_user(self.user_id)
        tags = validate_tags(self.tags)
        tag_name = tags.pop(RUN_NAME_TAG, None)
        if tag_name is not None and tag_name != self.run_name:
            raise InvalidInputError(
                "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with "
                f"different values (run_name={self.run_name!r}, mlflow.runName={tag_name!r})."
            )
        _set(self, "tags", tags)
        _set(self, "params", validate_params(self.params))
        if self.parent_run_id is not None:
            validate_new_run_id(self.parent_run_id)
        if self.artifact_uri is not None:
            validate_text(self.artifact_uri, "artifact_uri")

    def run_ids(self) -> tuple[str, ...]:
        return (self.run_id,) + ((self.parent_run_id,) if self.parent_run_id else ())

    def experiment_ids(self) -> tuple[str, ...]:
        return (self.experiment_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCommand(Command):
    run_id: str

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)

    def run_ids(self) -> tuple[str, ...]:
        return (self.run_id,)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateRun(RunCommand):
    """MLflow's update-run: a new status, end time and name, each optional."""

    status: str | None = None
    end_time: int | None = None
    run_name: str | None = None

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        if self.status is not None:
            validate_status(self.status)
        validate_optional_time(self.end_time, "end_time")
        if self.run_name is not None:
            validate_run_name(self.run_name)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeRun(RunCommand):
    """Back to RUNNING, with more params and tags (params stay write-once)."""

    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        _set(self, "params", validate_params(self.params))
        _set(self, "tags", validate_tags(self.tags))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteRun(RunCommand):
    deleted_time: int

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        validate_timestamp(self.deleted_time, "deleted_time")


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreRun(RunCommand):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class LogBatch(RunCommand):
    """MLflow's log-batch: metrics, params and tags of one run, stored all or nothing. Metric
    series are validated as they are built (Run.log_metric, or the server's parser)."""

    series: tuple[MetricSeries, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        _set(self, "params", validate_params(self.params))
        _set(self, "tags", validate_tags(self.tags))

    @property
    def point_count(self) -> int:
        return sum(len(s) for s in self.series)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteTag(RunCommand):
    key: str

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        _set(self, "key", validate_key(self.key, "tag key"))


@dataclass(frozen=True, slots=True, kw_only=True)
class LogInputs(RunCommand):
    datasets: tuple[DatasetInput, ...]

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        _set(self, "datasets", tuple(validate_dataset(d) for d in self.datasets))


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordArtifact(RunCommand):
    """Record an artifact whose bytes are stored already."""

    path: str
    size: int
    sha256: str
    content_type: str

    def __post_init__(self) -> None:
        validate_run_id(self.run_id)
        validate_artifact_record(self.path, self.size, self.sha256, self.content_type)


# -- decisions ---------------------------------------------------------------------------------


def decide(facts: Facts, c: Command) -> list[DomainEvent]:
    """The events that record `c` given `facts`, or the error MLflow gives for it. An empty
    list means there is nothing to record (an idempotent repeat, such as a param logged again
    with the same value)."""
    rule = _RULES.get(type(c))
    if rule is None:
        raise TypeError(f"no rule decides {type(c).__name__}")
    events: list[DomainEvent] = rule(facts, c)
    return events


def _create_experiment(f: Facts, c: CreateExperiment) -> list[DomainEvent]:
    name = f.names.get(c.name, NameFacts())
    if name.holder is not None or name.legacy is not None:
        raise AlreadyExistsError(f"Experiment(name={c.name}) already exists.")
    eid = c.experiment_id if c.experiment_id is not None else str(f.next_experiment_id)
    if f.experiments.get(eid, ExperimentFacts()).exists:
        raise AlreadyExistsError(f"Experiment with id={eid} already exists.")
    location = c.artifact_location or join_artifact_uri(f.artifact_root, eid)
    return [
        ExperimentCreated(eid, c.name, location, f.now, dict(c.tags)),
        ExperimentNameClaimed(c.name, eid),
    ]


def _rename_experiment(f: Facts, c: RenameExperiment) -> list[DomainEvent]:
    exp = f.experiment(c.experiment_id)
    if exp.lifecycle_stage != ACTIVE:
        raise InvalidStateError("Cannot rename a non-active experiment.")
    if c.new_name == exp.name:
        return []
    name = f.names.get(c.new_name, NameFacts())
    if name.holder not in (None, c.experiment_id) or name.legacy not in (None, c.experiment_id):
        raise AlreadyExistsError(f"Experiment(name={c.new_name}) already exists.")
    return [
        ExperimentRenamed(c.experiment_id, c.new_name),
        ExperimentNameClaimed(c.new_name, c.experiment_id),
        ExperimentNameReleased(exp.name, c.experiment_id),
    ]


def _delete_experiment(f: Facts, c: DeleteExperiment) -> list[DomainEvent]:
    exp = f.experiment(c.experiment_id)
    if c.experiment_id == DEFAULT_EXPERIMENT_ID:
        raise InvalidInputError("The default experiment (id 0) cannot be deleted.")
    if exp.lifecycle_stage != ACTIVE:
        raise NotFoundError(f"No active Experiment with id={c.experiment_id} exists")
    return [ExperimentDeleted(c.experiment_id)]


def _restore_experiment(f: Facts, c: RestoreExperiment) -> list[DomainEvent]:
    exp = f.experiment(c.experiment_id)
    if exp.lifecycle_stage != DELETED:
        raise NotFoundError(f"No deleted Experiment with id={c.experiment_id} exists")
    return [ExperimentRestored(c.experiment_id)]


def _active_experiment(f: Facts, experiment_id: str) -> ExperimentFacts:
    exp = f.experiment(experiment_id)
    if exp.lifecycle_stage != ACTIVE:
        raise RunNotActiveError(f"The experiment {experiment_id} must be in the 'active' state.")
    return exp


def _set_experiment_tag(f: Facts, c: SetExperimentTag) -> list[DomainEvent]:
    _active_experiment(f, c.experiment_id)
    return [ExperimentTagSet(c.experiment_id, c.key, c.value)]


def _delete_experiment_tag(f: Facts, c: DeleteExperimentTag) -> list[DomainEvent]:
    exp = _active_experiment(f, c.experiment_id)
    if c.key not in exp.tags:
        raise NotFoundError(f"No tag with name: {c.key} in experiment with id {c.experiment_id}")
    return [ExperimentTagDeleted(c.experiment_id, c.key)]


def _create_run(f: Facts, c: CreateRun) -> list[DomainEvent]:
    if f.runs.get(c.run_id, RunFacts()).exists:
        raise AlreadyExistsError(f"Run with id={c.run_id} already exists.")
    exp = f.experiment(c.experiment_id)
    if exp.lifecycle_stage != ACTIVE:
        raise InvalidStateError(
            f"Could not create run under non-active experiment with ID {c.experiment_id}."
        )
    if c.parent_run_id is not None:
        f.run(c.parent_run_id)
    uri = c.artifact_uri or join_artifact_uri(exp.artifact_location, c.run_id, "artifacts")
    out: list[DomainEvent] = [
        RunCreated(
            c.run_id, c.experiment_id, c.run_name, c.start_time, c.user_id, uri, dict(c.tags),
            c.parent_run_id,
        )
    ]  # fmt: skip
    if c.params:
        out.append(ParamsLogged(c.run_id, dict(c.params)))
    return out


def _fresh_params(run_id: str, run: RunFacts, params: Mapping[str, str]) -> dict[str, str]:
    """The params not logged yet; a different value for one that is raises."""
    fresh = {}
    for k, v in params.items():
        old = run.params.get(k)
        if old is None:
            fresh[k] = v
        elif old != v:
            raise ParamConflictError(run_id, k, old, v)
    return fresh


def _update_run(f: Facts, c: UpdateRun) -> list[DomainEvent]:
    run = f.active_run(c.run_id)
    out: list[DomainEvent] = []
    if c.status is not None or c.end_time is not None:
        out.append(RunStatusChanged(c.run_id, c.status or run.status, c.end_time))
    if c.run_name is not None and c.run_name != run.tags.get(RUN_NAME_TAG):
        out.append(RunRenamed(c.run_id, c.run_name))
    return out


def _resume_run(f: Facts, c: ResumeRun) -> list[DomainEvent]:
    run = f.active_run(c.run_id)
    out: list[DomainEvent] = []
    fresh = _fresh_params(c.run_id, run, c.params)
    if fresh:
        out.append(ParamsLogged(c.run_id, fresh))
    if c.tags:
        out.append(TagsSet(c.run_id, dict(c.tags)))
    out.append(RunStatusChanged(c.run_id, "RUNNING"))
    return out


def _delete_run(f: Facts, c: DeleteRun) -> list[DomainEvent]:
    f.run(c.run_id)
    return [RunDeleted(c.run_id, c.deleted_time)]


def _restore_run(f: Facts, c: RestoreRun) -> list[DomainEvent]:
    f.run(c.run_id)
    return [RunRestored(c.run_id)]


def _log_batch(f: Facts, c: LogBatch) -> list[DomainEvent]:
    run = f.active_run(c.run_id)
    out: list[DomainEvent] = []
    fresh = _fresh_params(c.run_id, run, c.params)
    if fresh:
        out.append(ParamsLogged(c.run_id, fresh))
    if c.tags:
        out.append(TagsSet(c.run_id, dict(c.tags)))
    series = tuple(s for s in c.series if len(s))
    if series:
        out.append(MetricsLogged(c.run_id, series))
    return out


def _delete_tag(f: Facts, c: DeleteTag) -> list[DomainEvent]:
    run = f.active_run(c.run_id)
    if c.key not in run.tags:
        raise NotFoundError(f"No tag with name: {c.key} in run with id {c.run_id}")
    return [TagDeleted(c.run_id, c.key)]


def _log_inputs(f: Facts, c: LogInputs) -> list[DomainEvent]:
    f.active_run(c.run_id)
    return [DatasetInputsLogged(c.run_id, c.datasets)] if c.datasets else []


def _record_artifact(f: Facts, c: RecordArtifact) -> list[DomainEvent]:
    # Recorded whatever the run's state: the bytes are stored, and the log must say so.
    f.run(c.run_id)
    return [ArtifactLogged(c.run_id, c.path, c.size, c.sha256, c.content_type)]


_RULES: Final[dict[type[Command], Any]] = {
    CreateExperiment: _create_experiment, RenameExperiment: _rename_experiment,
    DeleteExperiment: _delete_experiment, RestoreExperiment: _restore_experiment,
    SetExperimentTag: _set_experiment_tag, DeleteExperimentTag: _delete_experiment_tag,
    CreateRun: _create_run, UpdateRun: _update_run, ResumeRun: _resume_run,
    DeleteRun: _delete_run, RestoreRun: _restore_run, LogBatch: _log_batch,
    DeleteTag: _delete_tag, LogInputs: _log_inputs, RecordArtifact: _record_artifact,
}  # fmt: skip


# -- folding decided events back into the facts ---------------------------------------------------


EVOLVE_IGNORES: Final[frozenset[type[DomainEvent]]] = frozenset(
    {MetricsLogged, DatasetInputsLogged, ArtifactLogged}
)
"""Event types `evolve` leaves out: they change nothing a decision reads."""


def evolve(f: Facts, e: DomainEvent, position: int) -> None:
    """Fold one event (stored at `position`, or about to be) into the facts. Every event type
    is handled here or listed in EVOLVE_IGNORES; any other (UnreadableEvent included: the
    handler skips those before folding) raises UnhandledEventError instead of being dropped."""
    if isinstance(e, RunCreated):
        run = f.runs.setdefault(e.run_id, RunFacts())
        run.exists, run.experiment_id, run.status = True, e.experiment_id, "RUNNING"
        run.artifact_uri = e.artifact_uri
        run.tags.update(e.tags)
        run.tags[RUN_NAME_TAG] = e.run_name
        f.created_at[e.run_id] = position
    elif isinstance(e, ParamsLogged):
        run = f.runs[e.run_id]
        for k, v in e.params.items():
            run.params.setdefault(k, v)  # write-once, as in the views
    elif isinstance(e, TagsSet):
        f.runs[e.run_id].tags.update(e.tags)
    elif isinstance(e, TagDeleted):
        f.runs[e.run_id].tags.pop(e.key, None)
    elif isinstance(e, RunRenamed):
        f.runs[e.run_id].tags[RUN_NAME_TAG] = e.run_name
    elif isinstance(e, RunStatusChanged):
        f.runs[e.run_id].status = e.status
    elif isinstance(e, RunDeleted):
        f.runs[e.run_id].stages.append((position, DELETED))
    elif isinstance(e, RunRestored):
        f.runs[e.run_id].stages.append((position, ACTIVE))
    elif isinstance(e, ExperimentCreated):
        exp = f.experiments.setdefault(e.experiment_id, ExperimentFacts())
        exp.exists, exp.name, exp.artifact_location = True, e.name, e.artifact_location
        exp.tags.update(e.tags)
        if e.experiment_id.isdigit():
            f.next_experiment_id = max(f.next_experiment_id, int(e.experiment_id) + 1)
    elif isinstance(e, ExperimentRenamed):
        f.experiments[e.experiment_id].name = e.new_name
    elif isinstance(e, ExperimentDeleted):
        exp = f.experiments[e.experiment_id]
        exp.lifecycle_stage = DELETED
        exp.stages.append((position, DELETED))
    elif isinstance(e, ExperimentRestored):
        exp = f.experiments[e.experiment_id]
        exp.lifecycle_stage = ACTIVE
        exp.stages.append((position, ACTIVE))
    elif isinstance(e, ExperimentTagSet):
        f.experiments[e.experiment_id].tags[e.key] = e.value
    elif isinstance(e, ExperimentTagDeleted):
        f.experiments[e.experiment_id].tags.pop(e.key, None)
    elif isinstance(e, ExperimentNameClaimed):
        f.names.setdefault(e.name, NameFacts()).holder = e.experiment_id
    elif isinstance(e, ExperimentNameReleased):
        name = f.names.setdefault(e.name, NameFacts())
        name.holder = None
        name.legacy = None
    elif type(e) not in EVOLVE_IGNORES:
        # Imported here: this module stays pure, free of the projections' SQL imports.
        from tracker.projections.base import UnhandledEventError

        raise UnhandledEventError(
            f"evolve has no rule for {type(e).__name__}: fold it in tracker.commands.evolve "
            "or list it in EVOLVE_IGNORES"
        )


def event_ids(command_id: bytes, n: int) -> list[bytes]:
    """Ids of the events a command is decided into: the first is the command's own id, so
    "is this command stored?" is one id lookup; the others are derived from it."""
    out = [command_id][:n]
    for i in range(1, n):
        out.append(uuid.uuid5(uuid.UUID(bytes=command_id), str(i)).bytes)
    return out
