"""Reads over the views: experiments, runs and metric histories, bounded and paged."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

import numpy as np
import orjson
import sqlalchemy as sa

from tracker import series
from tracker.entities import DatasetInputInfo, Experiment, Metric, Page, RunData, RunInfo, RunView
from tracker.errors import InvalidInputError
from tracker.events import ACTIVE, DELETED
from tracker.search.grammar import (
    parse_experiment_filter,
    parse_experiment_order_by,
    parse_run_filter,
    parse_run_order_by,
)
from tracker.search.sql import (
    EXPERIMENT_COLUMNS,
    RUN_COLUMNS,
    Term,
    experiment_search,
    fingerprint,
    run_search,
)
from tracker.serialization import unpack_series
from tracker.stores.base import Database, EventLog, Row, Session
from tracker.stores.schema import (
    events,
    experiment_tags,
    experiments,
    latest_metrics,
    metric_chunks,
    run_inputs,
    run_params,
    run_tags,
    runs,
)
from tracker.stores.sql import Statement, blob_slice, chunks, in_list, in_params
from tracker.validation import validate_int64, validate_text

VIEW_TYPES: Final = {"ACTIVE_ONLY": (ACTIVE,), "DELETED_ONLY": (DELETED,), "ALL": (ACTIVE, DELETED)}
MAX_SEARCH_RESULTS: Final = 50_000
DEFAULT_HISTORY_PAGE: Final = 25_000
MAX_HISTORY_PAGE: Final = 1_000_000
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
_INDEX_PAGE: Final = 1000

X, XT, R, C = experiments, experiment_tags, runs, metric_chunks


# -- page tokens: opaque to callers, fully checked when they come back ------------------------


def encode_token(kind: str, **fields: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"kind": kind, **fields})).decode()


def decode_token(
    token: object, kind: str, fields: dict[str, type | tuple[type, ...]]
) -> dict[str, Any]:
    """The fields of a token made by `encode_token(kind, ...)`, each of the given type, every
    integer within int64 and every string text that every backend can store; anything else
    (tampered, truncated, from another query) is an InvalidInputError."""
    shown = f"Invalid page token {str(token)[:40]!r}"
    advice = "pass back a next_page_token we returned, unchanged, to the same query"
    bad = InvalidInputError(f"{shown}: {advice}")
    if not isinstance(token, str) or len(token) > 4096:
        raise bad
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeEncodeError, orjson.JSONDecodeError):
        raise bad from None
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise bad
    out = {}
    for name, types in fields.items():
        value = data.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise bad
        # JSON carries integers up to 2**64 - 1 and any text: check them as the store would,
        # so that a forged value is refused here rather than by the database's driver.
        try:
            if isinstance(value, int):
                validate_int64(name, value)
            elif isinstance(value, str):
                validate_text(value, name)
        except InvalidInputError:
            what = "an integer past 64 bits" if isinstance(value, int) else "text no database takes"
            raise InvalidInputError(f"{shown}: its {name} is {what}; {advice}") from None
        out[name] = value
    return out


def _foreign_token(token: str) -> InvalidInputError:
    return InvalidInputError(
        f"Invalid page token {token[:40]!r}: it belongs to another query (another filter, "
        "order_by, experiments or view type); pass a token back only to the query that "
        "returned it"
    )


def _cursor_json(terms: Sequence[Term], values: Sequence[Any]) -> list[Any]:
    """A run search cursor as JSON: floats as their repr (JSON has no Infinity)."""
    out: list[Any] = []
    for term, value in zip(terms, values, strict=True):
        if value is None:
            out.append(None)
        elif term.type == "float":
            out.append(repr(float(value)))
        elif term.type == "text":
            out.append(str(value))
        else:
            out.append(int(value))
    return out


def _run_cursor(token: str, fp: str, terms: Sequence[Term]) -> list[Any]:
    """The cursor a search_runs token carries, every value checked against its term's type."""
    tok = decode_token(token, "runs", {"fp": str, "c": list})
    if tok["fp"] != fp:
        raise _foreign_token(token)
    bad = InvalidInputError(
        f"Invalid page token {token[:40]!r}: pass back a next_page_token we returned, "
        "unchanged, to the same query"
    )
    values: list[Any] = tok["c"]
    if len(values) != len(terms):
        raise bad
    cursor: list[Any] = []
    for term, value in zip(terms, values, strict=True):
        try:
            if value is None and term.type != "rank":
                cursor.append(None)
            elif term.type == "float" and isinstance(value, str):
                number = float(value)
                if math.isnan(number):
                    raise bad
                cursor.append(number)
            elif term.type == "text" and isinstance(value, str):
                cursor.append(validate_text(value, "page_token"))
            elif term.type in ("int", "rank") and type(value) is int:
                cursor.append(validate_int64("page_token", value))
            else:
                raise bad
        except (ValueError, InvalidInputError):
            raise bad from None
    return cursor


def _stages(view_type: str) -> tuple[str, ...]:
    try:
        return VIEW_TYPES[view_type]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"view_type must be one of {', '.join(VIEW_TYPES)}, got {view_type!r}"
        ) from None


def _check_max(max_results: object, limit: int = MAX_SEARCH_RESULTS) -> int:
    if (
        isinstance(max_results, bool)
        or not isinstance(max_results, int)
        or not 0 < max_results <= limit
    ):
        raise InvalidInputError(f"max_results must be between 1 and {limit}, got {max_results!r}")
    return max_results


# -- statements ---------------------------------------------------------------------------------

_GET_EXPERIMENT: Final = sa.select(*EXPERIMENT_COLUMNS).where(
    X.c.experiment_id == sa.bindparam("eid")
)
_EXPERIMENT_BY_NAME: Final = (
    sa.select(*EXPERIMENT_COLUMNS)
    .where(X.c.name == sa.bindparam("name"))
    .order_by(X.c.lifecycle_stage)
)
_EXPERIMENT_IDS: Final = sa.select(X.c.experiment_id)
_GET_RUN: Final = sa.select(*RUN_COLUMNS).where(R.c.run_id == sa.bindparam("rid"))


@lru_cache(maxsize=64)
def _by_run(table: sa.Table, columns: tuple[str, ...], n: int) -> Statement:
    return sa.select(table.c.run_id, *(table.c[c] for c in columns)).where(
        table.c.run_id.in_(in_list(n))
    )


@lru_cache(maxsize=32)
def _experiment_tags(n: int) -> Statement:
    return sa.select(XT.c.experiment_id, XT.c.tag_key, XT.c.tag_value).where(
        XT.c.experiment_id.in_(in_list(n))
    )


_METRIC_KEYS: Final = (
    sa.select(latest_metrics.c.metric_key)
    .where(latest_metrics.c.run_id == sa.bindparam("rid"))
    .order_by(latest_metrics.c.metric_key)
)

ChunkCursor = tuple[int, int, int]
"""Where a read of the chunk index stands: the last chunk's (min_step, first_ts, position)."""
_INDEX_START: Final[ChunkCursor] = (INT64_MIN, INT64_MIN, -1)

# A chunk's first and last point in history order bound every point it holds by (step,
# timestamp), so chunks are read in order of their first point (min_step is its step), and one
# that ends before the page's cursor is skipped: with every point at one step (MLflow's
# default, step 0), the timestamps still tell chunks apart.
_CHUNK_INDEX: Final = (
    sa.select(C.c.position, C.c.blob_offset, C.c.blob_size, C.c.n, C.c.min_step, C.c.first_ts)
    .where(
        C.c.run_id == sa.bindparam("rid"),
        C.c.metric_key == sa.bindparam("key"),
        C.c.max_step >= sa.bindparam("from_step"),
        C.c.min_step <= sa.bindparam("to_step"),
        # (last_step, last_ts) >= the cursor's (step, timestamp)
        sa.or_(
            C.c.last_step > sa.bindparam("from_point_step"),
            sa.and_(
                C.c.last_step == sa.bindparam("from_point_step"),
                C.c.last_ts >= sa.bindparam("from_point_ts"),
            ),
        ),
        # (min_step, first_ts, position) > the index cursor
        sa.or_(
            C.c.min_step > sa.bindparam("after_min"),
            sa.and_(
                C.c.min_step == sa.bindparam("after_min"),
                sa.or_(
                    C.c.first_ts > sa.bindparam("after_ts"),
                    sa.and_(
                        C.c.first_ts == sa.bindparam("after_ts"),
                        C.c.position > sa.bindparam("after_pos"),
                    ),
                ),
            ),
        ),
    )
    .order_by(C.c.min_step, C.c.first_ts, C.c.position)
    .limit(sa.bindparam("limit"))
)


@lru_cache(maxsize=32)
def _chunk_blobs(n: int) -> Statement:
    """Packed points of chunks, sliced out of the log's payloads in the database."""
    e = events
    return (
        sa.select(
            C.c.position,
            # PostgreSQL's substr takes int4 offsets; blobs stay far below 2 GiB.
            blob_slice(
                e.c.payload,
                sa.cast(C.c.blob_offset + 1, sa.Integer),
                sa.cast(C.c.blob_size, sa.Integer),
            ),
        )
        .select_from(C.join(e, e.c.position == C.c.position))
        .where(
            C.c.run_id == sa.bindparam("rid"),
            C.c.metric_key == sa.bindparam("key"),
            C.c.position.in_(in_list(n)),
        )
    )


# -- metric points as arrays ----------------------------------------------------------------------


Ints = np.ndarray[Any, np.dtype[np.int64]]
Floats = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class Points:
    """Metric points as columns, ordered by (step, timestamp, value), NaN after numbers."""

    steps: np.ndarray[Any, np.dtype[np.int64]]
    timestamps: np.ndarray[Any, np.dtype[np.int64]]
    values: np.ndarray[Any, np.dtype[np.float64]]

    def __len__(self) -> int:
        return len(self.values)


def rank_dedupe(steps: Ints, stamps: Ints, values: Floats) -> Points:
    """Points in history order (tracker.series.merge's), with those equal under `point_rank`
    kept once: -0.0 and 0.0 are one value, every NaN at a step and timestamp one NaN, as in
    MLflow's SQL store (and as page tokens, which name a point by its rank, need)."""
    if len(values) < 2:
        return Points(steps, stamps, values)
    nan = np.isnan(values)
    same_value = (values[1:] == values[:-1]) | (nan[1:] & nan[:-1])
    repeat = (steps[1:] == steps[:-1]) & (stamps[1:] == stamps[:-1]) & same_value
    if not repeat.any():
        return Points(steps, stamps, values)
    keep = np.concatenate(([True], ~repeat))
    return Points(steps[keep], stamps[keep], values[keep])


def _after_mask(p: Points, after: tuple[int, int, int, float]) -> np.ndarray[Any, Any]:
    """Which points rank strictly after `after` = (step, timestamp, is_nan, value)."""
    step, ts, nan_flag, value = after
    nan = np.isnan(p.values).astype(np.int8)
    key = np.where(nan == 1, 0.0, p.values)
    mask: np.ndarray[Any, Any] = (p.steps > step) | (
        (p.steps == step)
        & (
            (p.timestamps > ts)
            | ((p.timestamps == ts) & ((nan > nan_flag) | ((nan == nan_flag) & (key > value))))
        )
    )
    return mask


class Queries:
    """Read-side SQL shared by every backend; each method takes a session of the views'
    database. Metric points are read from the log's payloads: by a join where the log lives in
    the same database, else through the log's `read_slices`."""

    def __init__(self, database: Database, log: EventLog, log_in_database: bool) -> None:
        self.db = database
        self.log = log
        self.joined = log_in_database

    # -- experiments -----------------------------------------------------------------------

    async def _experiments(self, s: Session, rows: Sequence[Row]) -> list[Experiment]:
        ids = [r[0] for r in rows]
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        for part in chunks(ids):
            for eid, k, v in await s.fetchall(_experiment_tags(len(part)), in_params(part)):
                tags[eid][k] = v
        return [Experiment(r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), tags[r[0]]) for r in rows]

    async def get_experiment(self, s: Session, experiment_id: str) -> Experiment | None:
        found = await self._experiments(
            s, await s.fetchall(_GET_EXPERIMENT, {"eid": experiment_id})
        )
        return found[0] if found else None

    async def get_experiment_by_name(self, s: Session, name: str) -> Experiment | None:
        """Prefers an active experiment over a deleted one of the same name."""
        rows = await s.fetchall(_EXPERIMENT_BY_NAME, {"name": name})
        found = await self._experiments(s, rows[:1])
        return found[0] if found else None

    async def search_experiments(
        self, s: Session, view_type: str = "ACTIVE_ONLY", max_results: int = 1000,
        page_token: str | None = None, *, filter_string: str | None = None,
        order_by: Sequence[str] | None = None,
    ) -> Page[Experiment]:  # fmt: skip
        """Experiments matching MLflow's search_experiments filter, in its order (default
        creation_time DESC, experiment_id ASC), offset-paged as MLflow pages them: few
        experiments are created while one pages through them. A token belongs to its query."""
        max_results = _check_max(max_results)
        stages = _stages(view_type)
        comparisons = parse_experiment_filter(filter_string)
        order = parse_experiment_order_by(order_by)
        statement, params = experiment_search(self.db.family, comparisons, order, stages)
        fp = fingerprint("experiments", comparisons, order, stages)
        offset = 0
        if page_token:
            tok = decode_token(page_token, "experiments", {"offset": int, "fp": str})
            if tok["fp"] != fp:
                raise _foreign_token(page_token)
            offset = tok["offset"]
            if offset < 0:
                raise InvalidInputError("Invalid page token: a negative offset")
        rows = await s.fetchall(statement, {**params, "limit": max_results + 1, "offset": offset})
        token = None
        if len(rows) > max_results:
            token = encode_token("experiments", offset=offset + max_results, fp=fp)
        return Page(await self._experiments(s, rows[:max_results]), token)

    async def next_experiment_id(self, s: Session) -> int:
        rows = await s.fetchall(_EXPERIMENT_IDS)
        return 1 + max((int(r[0]) for r in rows if str(r[0]).isdigit()), default=0)

    # -- runs -------------------------------------------------------------------------------

    async def _by_run(
        self, s: Session, table: sa.Table, columns: tuple[str, ...], ids: Sequence[str]
    ) -> list[Row]:
        out: list[Row] = []
        for part in chunks(ids):
            out += await s.fetchall(_by_run(table, columns, len(part)), in_params(part))
        return out

    async def runs(self, s: Session, rows: Sequence[Row]) -> list[RunView]:
        """Run views for rows of `RUN_COLUMNS`, with their params, tags, metrics and inputs."""
        if not rows:
            return []
        ids = [r[0] for r in rows]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        latest: dict[str, dict[str, Metric]] = {i: {} for i in ids}
        inputs: dict[str, list[DatasetInputInfo]] = {i: [] for i in ids}
        for rid, k, v in await self._by_run(s, run_params, ("param_key", "param_value"), ids):
            params[rid][k] = v
        for rid, k, v in await self._by_run(s, run_tags, ("tag_key", "tag_value"), ids):
            tags[rid][k] = v
        metric_columns = ("metric_key", "metric_value", "is_nan", "ts", "step")
        for rid, k, v, nan, ts, step in await self._by_run(s, latest_metrics, metric_columns, ids):
            value = math.nan if nan else self.db.decode_float(float(v))
            metrics[rid][k] = value
            latest[rid][k] = Metric(k, value, int(ts), int(step))
        columns = ("dataset_name", "dataset_digest", "data")
        found = await self._by_run(s, run_inputs, columns, ids)
        for rid, name, digest, data in sorted(found, key=lambda r: (r[1], r[2])):
            d = orjson.loads(data)
            inputs[rid].append(
                DatasetInputInfo(
                    name, digest, d["source_type"], d["source"], d["schema"], d["profile"],
                    d["tags"],
                )
            )  # fmt: skip
        out = []
        for r in rows:
            rid = r[0]
            end = None if r[6] is None else int(r[6])
            info = RunInfo(rid, r[1], r[2], r[3], r[4], int(r[5]), end, r[7], r[8])
            out.append(
                RunView(
                    info,
                    RunData(metrics[rid], params[rid], tags[rid], latest[rid]),
                    tuple(inputs[rid]),
                )
            )
        return out

    async def get_run(self, s: Session, run_id: str) -> RunView | None:
        found = await self.runs(s, await s.fetchall(_GET_RUN, {"rid": run_id}))
        return found[0] if found else None

    async def search_runs(
        self, s: Session, experiment_ids: Sequence[str], *, status: str | None = None,
        view_type: str = "ACTIVE_ONLY", max_results: int = 1000, page_token: str | None = None,
        filter_string: str | None = None, order_by: Sequence[str] | None = None,
    ) -> Page[RunView]:  # fmt: skip
        """Runs of the given experiments matching MLflow's filter grammar, in order_by's order
        then start_time DESC and run_id (tracker.search.sql.run_search), filtered, sorted and
        cut to a page by one SQL statement per 512 experiment ids.

        Keyset-paged: a token holds the last run's sort values, so a run added or changed
        while one pages through lands on a page not yet read or on none, and no run is
        returned twice or skipped because others were added. (A run whose sort value changes
        meanwhile, e.g. a newer latest metric, may move across the cursor.)"""
        max_results = _check_max(max_results)
        stages = _stages(view_type)
        comparisons = parse_run_filter(filter_string)
        order = parse_run_order_by(order_by)
        experiment_ids = list(dict.fromkeys(experiment_ids))
        if not experiment_ids:
            return Page([])
        if len(experiment_ids) > 1000:
            raise InvalidInputError("search at most 1000 experiments at once")
        search = run_search(self.db.family, comparisons, order, stages=stages, status=status)
        fp = fingerprint("runs", comparisons, order, sorted(experiment_ids), stages, status)
        cursor = None if not page_token else _run_cursor(page_token, fp, search.terms)
        params: dict[str, Any] = {**search.params, "limit": max_results + 1}
        if cursor is not None:
            params.update(search.cursor_params(cursor))
        parts = chunks(experiment_ids)
        rows: list[Row] = []
        for part in parts:
            statement = search.statement(len(part), cursor)
            rows += await s.fetchall(statement, {**params, **in_params(part, "e")})
        if len(parts) > 1:
            # Each chunk's rows are in the search order; so is their merge, as the SQL sorts
            # text by code point, as Python does.
            rows.sort(key=search.sort_key)
            del rows[max_results + 1 :]
        token = None
        if len(rows) > max_results:
            last = rows[max_results - 1][len(RUN_COLUMNS) :]
            token = encode_token("runs", fp=fp, c=_cursor_json(search.terms, last))
        return Page(await self.runs(s, rows[:max_results]), token)

    # -- metric histories ----------------------------------------------------------------------

    async def metric_keys(self, s: Session, run_id: str) -> list[str]:
        return [r[0] for r in await s.fetchall(_METRIC_KEYS, {"rid": run_id})]

    async def _chunk_points(
        self, s: Session, run_id: str, key: str, index: Sequence[Row]
    ) -> list[Points]:
        """Decode the points of chunks (rows of _CHUNK_INDEX)."""
        if not index:
            return []
        blobs: dict[int, bytes] = {}
        if self.joined:
            positions = [int(r[0]) for r in index]
            for part in chunks(positions):
                rows = await s.fetchall(
                    _chunk_blobs(len(part)), {"rid": run_id, "key": key, **in_params(part)}
                )
                blobs.update((int(p), bytes(b)) for p, b in rows)
        else:
            refs = [(int(r[0]), int(r[1]), int(r[2])) for r in index]
            blobs = dict(
                zip((p for p, _, _ in refs), await self.log.read_slices(refs), strict=True)
            )
        out = []
        for position, _, _, n, _, _ in index:
            series = unpack_series(key, blobs[int(position)], int(n))
            out.append(
                Points(
                    np.asarray(series.steps, dtype=np.int64),
                    np.asarray(series.timestamps, dtype=np.int64),
                    np.asarray(series.values, dtype=np.float64),
                )
            )
        return out

    async def _index(
        self, s: Session, run_id: str, key: str, from_step: int, to_step: int,
        cursor: ChunkCursor = _INDEX_START, from_point: tuple[int, int] = (INT64_MIN, INT64_MIN),
        limit: int = _INDEX_PAGE,
    ) -> list[Row]:  # fmt: skip
        """Rows of _CHUNK_INDEX: chunks holding steps in [from_step, to_step] whose last point
        is at or after `from_point` = (step, timestamp), after `cursor`, in cursor order."""
        return await s.fetchall(
            _CHUNK_INDEX,
            {"rid": run_id, "key": key, "from_step": from_step, "to_step": to_step,
             "from_point_step": from_point[0], "from_point_ts": from_point[1],
             "after_min": cursor[0], "after_ts": cursor[1], "after_pos": cursor[2],
             "limit": limit},
        )  # fmt: skip

    async def get_metric_history(
        self, s: Session, run_id: str, key: str, *, max_results: int = DEFAULT_HISTORY_PAGE,
        page_token: str | None = None, start_step: int | None = None, end_step: int | None = None,
    ) -> Page[Metric]:  # fmt: skip
        """Points ordered by (step, timestamp, value), exact duplicates dropped, keyset-paged,
        optionally within [start_step, end_step]. A page costs O(page): the chunk index says
        which chunks can hold it, and only those are read."""
        max_results = _check_max(max_results, MAX_HISTORY_PAGE)
        after: tuple[int, int, int, float] | None = None
        if page_token:
            t = decode_token(
                page_token, "history", {"step": int, "ts": int, "nan": int, "v": str, "key": str}
            )
            if t["key"] != key or t["nan"] not in (0, 1):
                raise InvalidInputError("Invalid page token: it belongs to another metric")
            try:
                value = float(t["v"])
            except ValueError:
                raise InvalidInputError("Invalid page token: not a value we wrote") from None
            after = (t["step"], t["ts"], t["nan"], value)
        lo = INT64_MIN if start_step is None else start_step
        hi = INT64_MAX if end_step is None else end_step
        from_step = max(lo, after[0]) if after else lo
        points = await self._page_points(s, run_id, key, from_step, hi, after, max_results + 1)
        page = [
            Metric(key, v, ts, step)
            for step, ts, v in zip(
                points.steps[:max_results].tolist(), points.timestamps[:max_results].tolist(),
                points.values[:max_results].tolist(), strict=True,
            )
        ]  # fmt: skip
        token = None
        if len(points) > max_results:
            last = page[-1]
            nan = math.isnan(last.value)
            # The value as text: JSON has no NaN or Infinity, and float() reads repr() back.
            token = encode_token(
                "history", key=key, step=last.step, ts=last.timestamp, nan=int(nan),
                v=repr(0.0 if nan else last.value),
            )  # fmt: skip
        return Page(page, token)

    async def _page_points(
        self, s: Session, run_id: str, key: str, from_step: int, to_step: int,
        after: tuple[int, int, int, float] | None, want: int,
    ) -> Points:  # fmt: skip
        """The first `want` points after `after` within the steps, reading chunks in order of
        their first point until no unread chunk can hold a point that sorts into them."""
        parts: list[Points] = []
        cursor = _INDEX_START
        from_point = (INT64_MIN, INT64_MIN) if after is None else (after[0], after[1])
        have = 0
        while True:
            index = await self._index(s, run_id, key, from_step, to_step, cursor, from_point)
            if not index:
                break
            taken: list[Row] = []
            for row in index:
                taken.append(row)
                have += int(row[3])
                if have >= want:
                    break
            for p in await self._chunk_points(s, run_id, key, taken):
                inside = (p.steps >= from_step) & (p.steps <= to_step)
                if after is not None:
                    inside &= _after_mask(p, after)
                parts.append(Points(p.steps[inside], p.timestamps[inside], p.values[inside]))
            cursor = _index_cursor(taken[-1])
            merged = _merge(parts)
            parts = [merged]
            have = len(merged)
            if have >= want:
                nxt = await self._index(
                    s, run_id, key, from_step, to_step, cursor, from_point, limit=1
                )
                # Every point of a chunk ranks at or after its first point, and chunks come in
                # that order: once one starts after the want-th point's (step, timestamp),
                # no unread chunk can change the page. (At an equal one, a smaller value could.)
                last = (int(merged.steps[want - 1]), int(merged.timestamps[want - 1]))
                if not nxt or (int(nxt[0][4]), int(nxt[0][5])) > last:
                    break
        merged = _merge(parts)
        return Points(merged.steps[:want], merged.timestamps[:want], merged.values[:want])

    async def get_metric_series(
        self, s: Session, run_id: str, key: str, *, start_step: int | None = None,
        end_step: int | None = None,
    ) -> Points:  # fmt: skip
        """Every point of a series within the steps, as arrays (for notebooks and plots)."""
        lo = INT64_MIN if start_step is None else start_step
        hi = INT64_MAX if end_step is None else end_step
        parts: list[Points] = []
        cursor = _INDEX_START
        while index := await self._index(s, run_id, key, lo, hi, cursor):
            for p in await self._chunk_points(s, run_id, key, index):
                inside = (p.steps >= lo) & (p.steps <= hi)
                parts.append(Points(p.steps[inside], p.timestamps[inside], p.values[inside]))
            cursor = _index_cursor(index[-1])
        return _merge(parts)


def _index_cursor(row: Row) -> ChunkCursor:
    """The cursor just past a row of _CHUNK_INDEX."""
    return int(row[4]), int(row[5]), int(row[0])


def _merge(parts: Sequence[Points]) -> Points:
    steps, stamps, values = series.merge((p.steps, p.timestamps, p.values) for p in parts)
    return rank_dedupe(steps, stamps, values)
