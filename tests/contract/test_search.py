"""MLflow's search grammar in the database, on every backend: each filter form and operator
against a model of MLflow's semantics, ordering with ties, NaN and NULLs, keyset paging while
runs are added, tokens that belong to their query, and the plans the queries get."""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement, Executable

from tracker import DatasetInput, InvalidInputError, Tracker
from tracker.entities import Metric, RunView
from tracker.search import Comparison, Kind, Op, parse_run_filter, parse_run_order_by
from tracker.search.sql import experiment_search, glob_pattern, like_pattern, run_search
from tracker.stores.base import SqlEventStore
from tracker.stores.sql import compiled, in_params

# -- the data: one experiment whose runs exercise every identifier kind ------------------------


@dataclass
class Spec:
    """A run as MLflow's semantics see it; the model below filters and sorts these."""

    run_id: str
    run_name: str
    start_time: int
    user_id: str = "alice"
    status: str = "RUNNING"
    end_time: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    datasets: list[tuple[str, str, str | None]] = field(default_factory=list)
    artifact_uri: str = ""


NAN = math.nan
SPECS = [
    # Run ids whose case order differs from their alphabetical one; start times with ties.
    Spec("A01", "alpha", 1000, "alice", "FINISHED", 2000,
         {"acc": 0.9, "loss": 0.5, "val loss": 1.5, "a.b": 2.0, "x-y": 3.0},
         {"lr": "0.1", "model name": "res net"}, {"team": "ml", "env": "prod"},
         [("train", "d1", "training"), ("eval", "d2", "eval")]),
    Spec("a02", "beta", 1000, "bob", "FINISHED", 2500,
         {"acc": 0.5, "loss": 0.5}, {"lr": "0.01"}, {"team": "ML"}, [("train", "d3", "training")]),
    Spec("B03", "Gamma", 1000, "bob", "FAILED", 1500,
         {"acc": NAN, "loss": 0.7}, {"lr": "0.1", "opt": "adam"}, {"team": "Ml-ops", "env": "dev"}),
    Spec("b04", "delta", 2000, "carol", "RUNNING", None,
         {"loss": 0.2, "a.b": -1.0}, {"lr": "1e-3"}, {"team": "m_l"}, [("eval", "d2", None)]),
    Spec("C05", "epsilon", 3000, "alice", "RUNNING", None,
         {"acc": 0.7, "loss": 1.5, "val loss": 2.5}, {"model name": "Res Net"}, {"team": "100%"}),
    Spec("c06", "zeta run", 3000, "dave", "FINISHED", 4000,
         {"acc": 0.7, "x-y": 3.0}, {"lr": "0.1"}, {"env": "prod", "note": "a_b"}),
    Spec("D07", "eta", 500, "alice", "KILLED", 900,
         {"acc": -0.25, "loss": 1e300}, {"lr": "%"}, {"team": "mlx", "note": "aXb"}),
]  # fmt: skip


def _spec_tags(spec: Spec) -> dict[str, str]:
    return {**spec.tags, "mlflow.runName": spec.run_name, "mlflow.user": spec.user_id}


async def _load(tk: Tracker, exp: str, specs: Sequence[Spec]) -> None:
    for spec in specs:
        run = await tk.create_run(
            exp, run_id=spec.run_id, run_name=spec.run_name, start_time=spec.start_time,
            user_id=spec.user_id, tags=spec.tags,
        )  # fmt: skip
        spec.artifact_uri = run.info.artifact_uri
        metrics = [Metric(k, v, 1, 0) for k, v in spec.metrics.items()]
        await tk.log_batch(spec.run_id, metrics=metrics, params=spec.params)
        inputs = [
            DatasetInput(n, d, "local", f"/data/{n}", tags={} if c is None else {
                "mlflow.data.context": c})
            for n, d, c in spec.datasets
        ]  # fmt: skip
        if inputs:
            await tk.log_inputs(spec.run_id, inputs)
        if spec.status != "RUNNING":
            await tk.update_run(spec.run_id, status=spec.status, end_time=spec.end_time)
    await tk.flush()


@pytest.fixture
async def tk(store_factory: Callable[[], SqlEventStore]) -> AsyncIterator[Tracker]:
    async with Tracker(store=store_factory(), max_batch_age=0.001) as tracker:
        yield tracker


@pytest.fixture
async def loaded(tk: Tracker) -> tuple[Tracker, str]:
    exp = await tk.create_experiment("search")
    await _load(tk, exp, SPECS)
    # A deleted run: only run_view_type ALL or DELETED_ONLY finds it.
    await _load(tk, exp, [Spec("E08", "gone", 5000, metrics={"acc": 0.95})])
    await tk.delete_run("E08")
    return tk, exp


# -- the model: MLflow's semantics in plain Python -------------------------------------------


def _like(pattern: str, text: str) -> bool:
    regex, chars = "", iter(pattern)
    for c in chars:
        if c == "\\":
            regex += re.escape(next(chars, "\\"))
        else:
            regex += {"%": ".*", "_": "."}.get(c, re.escape(c))
    return re.fullmatch(regex, text, re.DOTALL) is not None


def _match_text(op: Op, value: Any, text: str | None) -> bool:
    if text is None:
        return False
    checks: dict[Op, Callable[[], bool]] = {
        Op.EQ: lambda: text == value, Op.NE: lambda: text != value,
        Op.LIKE: lambda: _like(value, text), Op.ILIKE: lambda: _like(value.lower(), text.lower()),
        Op.IN: lambda: text in value, Op.NOT_IN: lambda: text not in value,
    }  # fmt: skip
    return checks[op]()


def _match_number(op: Op, value: Any, number: float | None) -> bool:
    if number is None:
        return False
    if math.isnan(number):
        return op is Op.NE
    return bool({
        Op.EQ: number == value, Op.NE: number != value, Op.LT: number < value,
        Op.LE: number <= value, Op.GT: number > value, Op.GE: number >= value,
    }[op])  # fmt: skip


def _attribute(spec: Spec, key: str) -> Any:
    return getattr(spec, key)


def _matches(spec: Spec, c: Comparison) -> bool:
    if c.kind is Kind.METRIC:
        return _match_number(c.op, c.value, spec.metrics.get(c.key))
    if c.kind in (Kind.PARAM, Kind.TAG):
        values = spec.params if c.kind is Kind.PARAM else _spec_tags(spec)
        if c.op is Op.IS_NULL:
            return c.key not in values
        if c.op is Op.IS_NOT_NULL:
            return c.key in values
        return _match_text(c.op, c.value, values.get(c.key))
    if c.kind is Kind.DATASET:
        index = {"name": 0, "digest": 1, "context": 2}[c.key]
        return any(_match_text(c.op, c.value, d[index]) for d in spec.datasets)
    value = _attribute(spec, c.key)
    if c.key in ("start_time", "end_time"):
        return _match_number(c.op, c.value, value)
    return _match_text(c.op, c.value, value)


def _model_order(specs: Sequence[Spec], order_by: Sequence[str]) -> list[str]:
    keys = parse_run_order_by(order_by)

    def key(spec: Spec) -> tuple[Any, ...]:
        out: list[Any] = []
        for k in keys:
            if k.kind is Kind.METRIC:
                v = spec.metrics.get(k.key)
                rank = 2 if v is None else 1 if math.isnan(v) else 0
                value: Any = 0.0 if rank else v
            elif k.kind in (Kind.PARAM, Kind.TAG):
                got = (spec.params if k.kind is Kind.PARAM else _spec_tags(spec)).get(k.key)
                rank, value = (1, "") if got is None else (0, got)
            else:
                got = _attribute(spec, k.key)
                rank, value = (1, 0) if got is None else (0, got)
            out += [rank, _Desc(value) if not k.ascending else value]
        if not any(k.kind is Kind.ATTRIBUTE and k.key == "start_time" for k in keys):
            out.append(-spec.start_time)
        out.append(spec.run_id)
        return tuple(out)

    return [s.run_id for s in sorted(specs, key=key)]


class _Desc:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Desc) -> bool:
        return bool(self.value > other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and self.value == other.value


def _expected(filter_string: str, order_by: Sequence[str] = ()) -> list[str]:
    clauses = parse_run_filter(filter_string)
    found = [s for s in SPECS if all(_matches(s, c) for c in clauses)]
    return _model_order(found, order_by)


async def _all_pages(
    tk: Tracker, exp: str, filter_string: str | None, order_by: Sequence[str] | None = None,
    max_results: int = 1000, view_type: str = "ACTIVE_ONLY",
) -> list[RunView]:  # fmt: skip
    got: list[RunView] = []
    token = None
    for _ in range(100):
        page = await tk.search_runs(
            [exp], filter_string, order_by=order_by, max_results=max_results,
            page_token=token, run_view_type=view_type,
        )  # fmt: skip
        got += page
        token = page.next_page_token
        if token is None:
            return got
    raise AssertionError("paging did not end")


# -- filters ------------------------------------------------------------------------------------

FILTERS = [
    # metrics: every comparator, quoted names, a metric some runs lack, NaN
    "metrics.acc = 0.7", "metrics.acc != 0.7", "metrics.acc < 0.7", "metrics.acc <= 0.7",
    "metrics.acc > 0.5", "metrics.acc >= 0.5", "metric.loss > 1e299", "metrics.acc < -0.1",
    'metrics."val loss" < 2', "metrics.`val loss` >= 1.5", "metrics.`a.b` >= 0",
    'metrics."x-y" = 3', "metrics.absent > -1e300", "metrics.absent != 0",
    "`metrics`.acc >= .5",
    # params: = != LIKE ILIKE IS NULL IS NOT NULL; every prefix; quoted keys
    "params.lr = '0.1'", "param.lr != '0.1'", "parameter.lr LIKE '0.%'", "parameters.lr LIKE '%e%'",
    "params.`model name` = 'res net'", "params.\"model name\" ILIKE 'RES NET'",
    "params.`model name` LIKE 'res%'", "params.opt IS NULL", "params.opt IS NOT NULL",
    "params.lr IS NULL", "params.lr = \"0.01\"", "params.lr LIKE '\\%'",
    # tags: case-sensitive LIKE, ILIKE, escapes and wildcards
    "tags.team = 'ml'", "tags.team != 'ml'", "tags.team LIKE 'm%'", "tags.team ILIKE 'm%'",
    "tags.team LIKE 'M%'", "tag.team LIKE 'm_'", "tags.team LIKE 'm\\_l'", "tags.team LIKE '100\\%'",
    "tags.team LIKE '%\\%'", "tags.note LIKE 'a_b'", "tags.note LIKE 'a\\_b'",
    "tags.note ILIKE 'AXB'", "tags.env IS NULL", "tags.env IS NOT NULL",
    "tags.`mlflow.runName` = 'beta'", "tags.team LIKE '[m]%'",
    # attributes: strings, IN and NOT IN on run_id, numbers, aliases, prefixes
    "attributes.run_id = 'A01'", "run_id != 'A01'", "attributes.run_id IN ('A01', 'b04', 'zz')",
    "attributes.run_id NOT IN ('A01', 'b04')", "run_id LIKE 'a%'", "run_id ILIKE 'a%'",
    "attributes.run_name = 'zeta run'", "run_name LIKE '%a'", "attr.run_name ILIKE 'g%'",
    "`Run name` = 'beta'", "attributes.status = 'FINISHED'", "status != 'RUNNING'",
    "run.user_id = 'bob'", "user_id LIKE 'a%'", "attributes.start_time > 1000",
    "start_time = 1000", "created >= 2000", "Created < 1000", "attributes.end_time > 1600",
    "end_time <= 2000", "artifact_uri LIKE '%A01%'",
    # datasets
    "datasets.name = 'train'", "dataset.digest != 'd2'", "datasets.context = 'training'",
    "datasets.context LIKE 'ev%'", "datasets.name IN ('eval', 'x')",
    "datasets.name NOT IN ('train')", "datasets.digest ILIKE 'D%'",
    # several clauses
    "metrics.acc > 0.4 AND params.lr = '0.1' AND tags.team LIKE 'm%'",
    "metrics.loss <= 0.5 AND metrics.acc >= 0.5 and tags.env = 'prod'",
    "params.lr LIKE '0%' AND attributes.status = 'FINISHED' AND datasets.name = 'train'",
]  # fmt: skip


@pytest.mark.parametrize("filter_string", FILTERS)
async def test_each_filter_matches_mlflows_semantics(
    loaded: tuple[Tracker, str], filter_string: str
) -> None:
    """Each filter form returns exactly the runs MLflow's semantics select (a run lacking the
    metric, param or tag does not match; NaN matches only !=; LIKE is case-sensitive, with
    backslash escapes; ILIKE is not), in the default order: start_time DESC, then run_id."""
    tk, exp = loaded
    got = [r.info.run_id for r in await _all_pages(tk, exp, filter_string)]
    assert got == _expected(filter_string), filter_string


async def test_filters_select_what_the_run_view_type_allows(loaded: tuple[Tracker, str]) -> None:
    """A deleted run is found by run_view_type ALL and DELETED_ONLY only; a filter applies too."""
    tk, exp = loaded
    active = [r.info.run_id for r in await _all_pages(tk, exp, "metrics.acc > 0.8")]
    every = await _all_pages(tk, exp, "metrics.acc > 0.8", view_type="ALL")
    deleted = await _all_pages(tk, exp, None, view_type="DELETED_ONLY")
    assert active == ["A01"]
    assert [r.info.run_id for r in every] == ["E08", "A01"]
    assert [r.info.run_id for r in deleted] == ["E08"]


async def test_values_are_bound_never_pasted(loaded: tuple[Tracker, str]) -> None:
    """Quotes, semicolons and SQL in values and keys are data: they match nothing, break
    nothing, and the runs are all still there afterwards."""
    tk, exp = loaded
    for text in (
        "params.lr = 'x''; DROP TABLE runs; --'",
        "tags.`a'b` = 'v'",
        "params.\"lr' OR '1'='1\" = '0.1'",
        "run_id IN ('A01'') OR (''1''=''1')",
    ):
        assert await _all_pages(tk, exp, text) == []
    assert len(await _all_pages(tk, exp, None)) == len(SPECS)


# -- ordering and paging -------------------------------------------------------------------

ORDERS = [
    ["metrics.acc DESC"], ["metrics.acc"], ["params.lr", "metrics.loss DESC"], ["tags.team DESC"],
    ["attributes.end_time"], ["end_time DESC"], ["start_time"], ["run_name DESC"],
    ["metrics.loss", "params.lr DESC", "tags.team"], ["created DESC"], ["attributes.run_id DESC"],
    ["status", "user_id DESC"], ["metrics.`val loss` DESC"], ["params.`model name`"],
    ["artifact_uri"],
]  # fmt: skip


@pytest.mark.parametrize("order_by", ORDERS, ids=lambda o: ",".join(o))
async def test_order_by_with_ties_nan_and_nulls_pages_every_run_once(
    loaded: tuple[Tracker, str], order_by: list[str]
) -> None:
    """Several keys, ASC/DESC, ties broken by start_time DESC and run_id; a NaN metric after
    every number and a missing value after that, in both directions; paged 1, 2 and 3 at a
    time, every run comes exactly once, in the same order as one page."""
    tk, exp = loaded
    expected = _expected("", order_by)
    for size in (1000, 1, 2, 3):
        got = [r.info.run_id for r in await _all_pages(tk, exp, None, order_by, size)]
        assert got == expected, (order_by, size)


async def test_filter_and_order_together_page_by_keyset(loaded: tuple[Tracker, str]) -> None:
    """The three-clause filter ordered by a metric pages through its runs exactly once."""
    tk, exp = loaded
    text = "metrics.loss < 1e301 AND params.lr LIKE '%' AND tags.team ILIKE 'M%'"
    expected = _expected(text, ["metrics.acc DESC", "params.lr"])
    for size in (1, 2):
        got = await _all_pages(tk, exp, text, ["metrics.acc DESC", "params.lr"], size)
        assert [r.info.run_id for r in got] == expected


async def test_pages_stay_right_while_runs_are_added(tk: Tracker) -> None:
    """Runs added between pages: those sorting before the cursor are not returned (they are
    on pages already read), those after it are; no run is returned twice or skipped, as an
    offset would do."""
    exp = await tk.create_experiment("moving")
    await _load(tk, exp, [Spec(f"r{i:02d}", f"r{i}", 1000 + 10 * i) for i in range(10)])
    page = await tk.search_runs([exp], max_results=3)
    seen = [r.info.run_id for r in page]
    assert seen == ["r09", "r08", "r07"]
    added = 0
    while page.next_page_token:
        added += 1
        await _load(tk, exp, [
            Spec(f"new{added}", "newer", 5000 + added),  # before the cursor: on no page
            Spec(f"old{added}", "older", 500 - added),  # after it: on a later page
        ])  # fmt: skip
        page = await tk.search_runs([exp], max_results=3, page_token=page.next_page_token)
        seen += [r.info.run_id for r in page]
    originals = [f"r{i:02d}" for i in range(9, -1, -1)]
    olds = [f"old{i}" for i in range(1, added + 1)]
    assert seen == originals + olds[: len(seen) - len(originals)]
    assert len(seen) == len(set(seen))


# -- tokens and errors --------------------------------------------------------------------


async def test_a_token_belongs_to_its_query(loaded: tuple[Tracker, str]) -> None:
    """A token returned for one filter or order is refused by another query, and a tampered
    one is refused; both as InvalidInputError saying what to do."""
    tk, exp = loaded
    page = await tk.search_runs([exp], "metrics.acc > 0", max_results=1)
    token = page.next_page_token
    assert token is not None
    for other in (
        {"filter_string": "metrics.acc > 1"},
        {"filter_string": "metrics.acc > 0", "order_by": ["metrics.acc"]},
        {"filter_string": "metrics.acc > 0", "run_view_type": "ALL"},
    ):
        with pytest.raises(InvalidInputError, match="belongs to another query"):
            await tk.search_runs([exp], max_results=1, page_token=token, **other)
    with pytest.raises(InvalidInputError, match="Invalid page token"):
        await tk.search_runs([exp], "metrics.acc > 0", max_results=1, page_token=token[:-4])
    exps = await tk.search_experiments(max_results=1, filter_string="name != 'x'")
    assert exps.next_page_token is not None
    with pytest.raises(InvalidInputError, match="belongs to another query"):
        await tk.search_experiments(max_results=1, page_token=exps.next_page_token)
    with pytest.raises(InvalidInputError, match="Invalid page token"):
        await tk.search_runs([exp], max_results=1, page_token=exps.next_page_token)


@pytest.mark.parametrize(
    ("filter_string", "order_by", "message"),
    [
        ("metrics.acc > 0 OR params.lr = '1'", None, "OR at column 17 is not supported"),
        ("attributes.colour = 'red'", None, "unknown attribute 'colour' at column 12"),
        ("metrics.acc LIKE 'a'", None, "'LIKE' at column 13 is not allowed on metric 'acc'"),
        ("params.lr > '1'", None, "'>' at column 11 is not allowed on param 'lr'"),
        ("metrics.acc > 'x'", None, "unexpected \"'x'\" at column 15; expected a number"),
        ("run_name IN ('a')", None, "IN and NOT IN work on run_id and datasets only"),
        (None, ["metrics.acc SIDEWAYS"], "unexpected 'SIDEWAYS' at column 13"),
        (None, ["datasets.name"], "datasets cannot be ordered by"),
    ],
)
async def test_malformed_filters_say_where_they_broke(
    loaded: tuple[Tracker, str], filter_string: str | None, order_by: list[str] | None,
    message: str,
) -> None:  # fmt: skip
    """A malformed filter or order_by is an InvalidInputError naming the column and token."""
    tk, exp = loaded
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        await tk.search_runs([exp], filter_string, order_by=order_by)


# -- experiments ----------------------------------------------------------------------------


async def test_search_experiments_filters_orders_and_pages(tk: Tracker) -> None:
    """name with = != LIKE ILIKE, tags, creation_time; order_by name and experiment_id (in
    numeric order); paging two at a time returns every match once."""
    ids = {}
    for name, tags in (("prod-a", {"team": "ml"}), ("Prod-B", {"team": "ML"}),
                       ("dev_c", {}), ("prod%d", {"team": "ops"})):  # fmt: skip
        ids[name] = await tk.create_experiment(name, tags=tags)
    for i in range(8):  # experiment ids past 9, so that string order would be wrong
        await tk.create_experiment(f"filler-{i}")

    async def names(filter_string: str | None, order_by: list[str] | None = None,
                    size: int = 1000) -> list[str]:  # fmt: skip
        got, token = [], None
        while True:
            page = await tk.search_experiments(
                max_results=size, page_token=token, filter_string=filter_string,
                order_by=order_by,
            )  # fmt: skip
            got += [e.name for e in page]
            if not (token := page.next_page_token):
                return got

    assert await names("name = 'prod-a'") == ["prod-a"]
    assert set(await names("name LIKE 'prod%'")) == {"prod-a", "prod%d"}
    assert set(await names("name ILIKE 'prod%'")) == {"prod-a", "Prod-B", "prod%d"}
    assert await names("name LIKE 'prod\\%d'") == ["prod%d"]
    assert await names("tags.team = 'ml'") == ["prod-a"]
    assert set(await names("tags.team ILIKE 'ML' AND name != 'prod-a'")) == {"Prod-B"}
    assert "dev_c" in await names("tags.team IS NULL")
    assert set(await names("tags.team IS NOT NULL")) == {"prod-a", "Prod-B", "prod%d"}
    everything = await names(None, ["experiment_id"], size=2)
    assert everything == await names(None, ["experiment_id"])
    by_id = [e.experiment_id for e in await tk.search_experiments(order_by=["experiment_id"])]
    assert by_id == sorted(by_id, key=int) and len(by_id) == 13
    with pytest.raises(InvalidInputError, match="OR at column"):
        await names("name = 'a' OR name = 'b'")
    assert await names("name LIKE '%'", ["name DESC"], size=3) == sorted(
        await names(None), reverse=True
    )
    every = list(await tk.search_experiments(order_by=["creation_time"]))
    assert [e.creation_time for e in every] == sorted(e.creation_time for e in every)
    middle = every[6].creation_time
    later = await names(f"creation_time > {middle} AND last_update_time >= 0")
    assert set(later) == {e.name for e in every if e.creation_time > middle}


# -- SQL Server, LIKE translation, and plans ------------------------------------------------


def test_every_shape_compiles_for_sql_server_and_each_backend() -> None:
    """Every filter and order shape compiles for every dialect, SQL Server included, with
    every value a bound parameter (no value from the filter appears in the SQL)."""
    for family in ("sqlite", "postgresql", "mysql", "mssql"):
        for text in FILTERS:
            for order in ([], *ORDERS[:4]):
                search = run_search(family, parse_run_filter(text), parse_run_order_by(order),
                                    stages=("active",))  # fmt: skip
                for cursor in (None, [0] * len(search.terms)):
                    sql = compiled(search.statement(3, cursor), family).sql
                    for value in search.params.values():
                        if isinstance(value, str) and len(value) > 2:
                            assert f"'{value}'" not in sql
        statement, _ = experiment_search(family, (), (), ("active",))
        compiled(statement, family)


def test_like_patterns_translate_exactly() -> None:
    """% and _ are wildcards and a backslash escapes; GLOB and SQL Server's [ are literal."""
    assert like_pattern("a\\%b_[c", "postgresql") == "a\\%b_[c"
    assert like_pattern("a\\%b_[c", "mssql") == "a\\%b_\\[c"
    assert like_pattern("50\\", "sqlite") == "50\\\\"
    assert glob_pattern("a%b_c*?[") == "a*b?c[*][?][[]"
    assert glob_pattern("100\\%") == "100%"


class Explain(Executable, ClauseElement):
    """EXPLAIN of a statement, with the statement's parameters."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(Explain)
def _explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


@compiles(Explain, "sqlite")
def _explain_sqlite(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN QUERY PLAN " + compiler.process(element.statement, **kw)


async def test_the_three_clause_query_uses_indexes(
    loaded: tuple[Tracker, str], request: pytest.FixtureRequest
) -> None:
    """EXPLAIN of the benchmark's query (a metric comparison, a param equality and a tag LIKE,
    ordered by a metric): the runs are found through the experiment index and each view is
    read through its (run_id, key) primary key, never scanned (SQLite and PostgreSQL)."""
    backend = request.node.callspec.params["store_factory"]
    if backend not in ("sqlite", "postgres-asyncpg"):
        pytest.skip("plans are checked on the native SQLite and PostgreSQL stores")
    tk, exp = loaded
    text = "metrics.acc > 0.4 AND params.lr = '0.1' AND tags.team LIKE 'm%'"
    search = run_search(tk.database.family, parse_run_filter(text),
                        parse_run_order_by(["metrics.loss DESC"]), stages=("active",))  # fmt: skip
    params = {**search.params, **in_params([exp], "e"), "limit": 101}
    async with tk.database.transaction() as s:
        if backend.startswith("postgres"):
            # A handful of rows makes any table cheaper to scan than to index; this says
            # whether an index can serve each step, which is what 10,000 runs need.
            await s.execute_raw("SET LOCAL enable_seqscan = off")
        rows = await s.fetchall(Explain(search.statement(1, None)), params)
    plan = "\n".join(" ".join(str(c) for c in row) for row in rows)
    print(plan)
    if backend == "sqlite":
        assert "ix_runs_0" in plan, plan
        for alias in ("f0", "f1", "f2", "o0"):
            assert re.search(rf"SEARCH {alias} USING (PRIMARY KEY|INDEX)", plan), plan
            assert f"SCAN {alias}" not in plan, plan
    else:
        assert "Seq Scan" not in plan, plan
        assert "Index" in plan, plan
