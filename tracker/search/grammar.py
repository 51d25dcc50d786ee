"""MLflow's search grammar: filter and order_by strings parsed into small frozen syntax trees."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NoReturn

from tracker.errors import InvalidInputError

__all__ = [
    "Comparison",
    "ExperimentComparison",
    "ExperimentOrderKey",
    "Kind",
    "Op",
    "OrderKey",
    "Value",
    "parse_experiment_filter",
    "parse_experiment_order_by",
    "parse_run_filter",
    "parse_run_order_by",
]


class Kind(StrEnum):
    """What an identifier names, and so which view a comparison or an order key reads."""

    METRIC = "metric"
    PARAM = "param"
    TAG = "tag"
    ATTRIBUTE = "attribute"
    DATASET = "dataset"


class Op(StrEnum):
    """A comparator, spelled as in MLflow's grammar (keywords upper-case)."""

    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    LIKE = "LIKE"
    ILIKE = "ILIKE"
    IN = "IN"
    NOT_IN = "NOT IN"
    IS_NULL = "IS NULL"
    IS_NOT_NULL = "IS NOT NULL"


Value = float | int | str | tuple[str, ...] | None

# The views each kind reads (tracker/stores/schema.py), for the compiler of phase 2.
_RUN_VIEWS: Final[Mapping[Kind, str]] = {
    Kind.METRIC: "latest_metrics",
    Kind.PARAM: "run_params",
    Kind.TAG: "run_tags",
    Kind.ATTRIBUTE: "runs",
    Kind.DATASET: "run_inputs",
}
_EXPERIMENT_VIEWS: Final[Mapping[Kind, str]] = {
    Kind.ATTRIBUTE: "experiments",
    Kind.TAG: "experiment_tags",
}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One clause of a search_runs filter; a filter is the AND of its clauses.

    `key` is the name with its quotes removed; for an attribute it is the view's column, aliases
    resolved (`created` is `start_time`, `Run Name` is `run_name`). `value` is a float for a
    metric; an int (integer literal) or a float for start_time/end_time; a str for a string
    comparison; a tuple of str for IN / NOT IN; None for IS NULL / IS NOT NULL. A run that lacks
    the metric, param or tag does not match any comparison on it except IS NULL.
    """

    kind: Kind
    key: str
    op: Op
    value: Value

    @property
    def view(self) -> str:
        """The view this comparison reads."""
        return _RUN_VIEWS[self.kind]


@dataclass(frozen=True, slots=True)
class ExperimentComparison(Comparison):
    """One clause of a search_experiments filter: an attribute or a tag of the experiment.

    Values: a str for `name` and tags; the canonical decimal string (or a tuple of them) for
    `experiment_id`; an int for creation_time / last_update_time.
    """

    @property
    def view(self) -> str:
        """The view this comparison reads."""
        return _EXPERIMENT_VIEWS[self.kind]


@dataclass(frozen=True, slots=True)
class OrderKey:
    """One search_runs order_by item: sort by (kind, key), ascending unless `ascending` is False.

    Runs that lack the key sort last in both directions (MLflow's rule); the caller adds the
    tie-breaks (start_time DESC unless ordered by, then run_id).
    """

    kind: Kind
    key: str
    ascending: bool = True

    @property
    def view(self) -> str:
        """The view this key reads."""
        return _RUN_VIEWS[self.kind]


@dataclass(frozen=True, slots=True)
class ExperimentOrderKey(OrderKey):
    """One search_experiments order_by item; always an attribute of the experiment."""

    @property
    def view(self) -> str:
        """The view this key reads."""
        return _EXPERIMENT_VIEWS[self.kind]


# -- comparators and what each identifier accepts --------------------------------------------

_NUMERIC_OPS: Final = (Op.EQ, Op.NE, Op.LT, Op.LE, Op.GT, Op.GE)
_STRING_OPS: Final = (Op.EQ, Op.NE, Op.LIKE, Op.ILIKE)
_NULL_OPS: Final = (Op.IS_NULL, Op.IS_NOT_NULL)
_LIST_OPS: Final = (Op.IN, Op.NOT_IN)
_SYMBOL_OPS: Final = {op.value: op for op in _NUMERIC_OPS}
_WRONG_SYMBOLS: Final = {"<>": "!=", "==": "="}


@dataclass(frozen=True, slots=True)
class _Field:
    """What one resolved identifier accepts: its comparators and the type of its values."""

    kind: Kind
    key: str
    ops: tuple[Op, ...]
    value_type: str
    """float | number (int or float) | int | string | experiment_id"""

    def describe(self) -> str:
        return f"{self.kind.value} '{self.key}'"


_RUN_TYPES: Final[Mapping[str, Kind]] = {
    "metric": Kind.METRIC,
    "metrics": Kind.METRIC,
    "param": Kind.PARAM,
    "params": Kind.PARAM,
    "parameter": Kind.PARAM,
    "parameters": Kind.PARAM,
    "tag": Kind.TAG,
    "tags": Kind.TAG,
    "attribute": Kind.ATTRIBUTE,
    "attributes": Kind.ATTRIBUTE,
    "attr": Kind.ATTRIBUTE,
    "run": Kind.ATTRIBUTE,
    "dataset": Kind.DATASET,
    "datasets": Kind.DATASET,
}
_EXPERIMENT_TYPES: Final[Mapping[str, Kind]] = {
    "attribute": Kind.ATTRIBUTE,
    "tag": Kind.TAG,
    "tags": Kind.TAG,
}
_RUN_STRING_ATTRIBUTES: Final = ("artifact_uri", "run_id", "run_name", "status", "user_id")
_RUN_NUMERIC_ATTRIBUTES: Final = ("end_time", "start_time")
_RUN_ATTRIBUTES: Final = tuple(sorted(_RUN_STRING_ATTRIBUTES + _RUN_NUMERIC_ATTRIBUTES))
# MLflow's aliases; the run-name ones are filter-only, as in MLflow's order_by.
_RUN_FILTER_ALIASES: Final = {
    "created": "start_time",
    "Created": "start_time",
    "run name": "run_name",
    "Run name": "run_name",
    "Run Name": "run_name",
}
_RUN_ORDER_ALIASES: Final = {"created": "start_time", "Created": "start_time"}
_DATASET_KEYS: Final = ("context", "digest", "name")
_EXPERIMENT_ATTRIBUTES: Final = ("creation_time", "experiment_id", "last_update_time", "name")
_INT64: Final = range(-(2**63), 2**63)


# -- tokens -------------------------------------------------------------------------------------

# Hand-written rather than sqlparse (MLflow's choice) or another generic SQL lexer: every error
# names the column and the token where the filter broke, which those do not give, and the whole
# lexical grammar is these few patterns.
_QUOTED = r"`(?:[^`]|``)*`|\"(?:[^\"]|\"\")*\""
_SINGLE = r"'(?:[^']|'')*'"
_TOKEN: Final = re.compile(
    rf"""
    (?P<space>\s+)
  | (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)(?![\w.])
  | (?P<name>(?:[^\W\d]\w*|{_QUOTED})(?:\.(?:\w+|{_QUOTED}|{_SINGLE}))*)
  | (?P<string>{_SINGLE})
  | (?P<op><=|>=|!=|<>|==|[<>=])
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
# After a dot a key may also be in single quotes, as MLflow accepts (`metrics.'a b'`).
_SEGMENT: Final = re.compile(rf"\w+|{_QUOTED}|{_SINGLE}")
# What is shown as "the token" when none of the patterns above matches.
_BAD: Final = re.compile(r"[^\s'\"`(),=<>!]+|.")


@dataclass(frozen=True, slots=True)
class _Part:
    """One dot-separated segment of a name, quotes removed; `quote` is '', '`', '"' or "'"."""

    text: str
    quote: str
    column: int


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    """name | string | number | op | ( | ) | , | bad | end"""
    source: str
    column: int
    """1-based character position in the text."""
    parts: tuple[_Part, ...] = ()

    def is_word(self, *words: str) -> bool:
        """Whether this is one bare word, compared case-insensitively (a keyword)."""
        return (
            self.kind == "name"
            and len(self.parts) == 1
            and not self.parts[0].quote
            and self.source.upper() in words
        )

    def shown(self) -> str:
        if self.kind == "end":
            return "end of input"
        quote = '"' if "'" in self.source else "'"
        return f"{quote}{_clip(self.source, 40)}{quote}"


def _clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters for a message; the column still says where."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unquote(quoted: str) -> str:
    """The text between the quotes, a doubled quote standing for one (SQL's only escape)."""
    quote = quoted[0]
    return quoted[1:-1].replace(quote * 2, quote)


def _parts(source: str, column: int) -> tuple[_Part, ...]:
    parts = []
    offset = 0
    while True:
        match = _SEGMENT.match(source, offset)
        assert match is not None  # the name pattern matched these segments already
        text = match.group()
        if text[0] in "`\"'":
            parts.append(_Part(_unquote(text), text[0], column + offset))
        else:
            parts.append(_Part(text, "", column + offset))
        offset = match.end() + 1
        if offset > len(source):
            return tuple(parts)


class _Parser:
    """A cursor over the tokens of one filter or order_by item, failing with the column."""

    def __init__(self, text: str, label: str) -> None:
        self.text = text
        self.label = label
        self.backslash_quote: int | None = None
        """Column of a string ending in a backslash and a quote: a likely escape attempt."""
        self.tokens = self._tokenize()
        self.index = 0

    def fail(self, problem: str) -> NoReturn:
        if self.backslash_quote is not None:
            problem += (
                f" (the string at column {self.backslash_quote} ends at a backslash and a quote: "
                "a backslash does not escape a quote, write the quote twice: 'it''s')"
            )
        raise InvalidInputError(f'{self.label} "{_clip(self.text, 200)}": {problem}')

    def unexpected(self, token: _Token, expected: str) -> NoReturn:
        self.fail(f"unexpected {token.shown()} at column {token.column}; expected {expected}")

    def _tokenize(self) -> list[_Token]:
        tokens: list[_Token] = []
        position = 0
        while position < len(self.text):
            match = _TOKEN.match(self.text, position)
            column = position + 1
            if match is None:
                after_name = bool(tokens) and tokens[-1].kind == "name"
                after_name = after_name and tokens[-1].column + len(tokens[-1].source) == column
                if after_name and self.text[position] == ".":
                    if self.text[position + 1 : position + 2] in ("'", '"', "`"):
                        self._unterminated(position + 1)  # a closed one matched as a name
                    self.fail(f"a name must follow the '.' at column {column}")
                if self.text[position] in "'\"`":
                    self._unterminated(position)
                bad = _BAD.match(self.text, position)
                assert bad is not None  # "." matches any character
                tokens.append(_Token("bad", bad.group(), column))
                position = bad.end()
                continue
            kind = match.lastgroup
            assert kind is not None
            source = match.group()
            position = match.end()
            if kind == "space":
                continue
            if kind == "string" and source.endswith("\\'") and self.backslash_quote is None:
                self.backslash_quote = column
            if kind == "name":
                tokens.append(_Token(kind, source, column, _parts(source, column)))
            elif kind == "punct":
                tokens.append(_Token(source, source, column))
            else:
                tokens.append(_Token(kind, source, column))
        tokens.append(_Token("end", "", len(self.text) + 1))
        return tokens

    def _unterminated(self, position: int) -> NoReturn:
        quote = self.text[position]
        self.fail(
            f"unterminated {quote}...{quote} starting at column {position + 1}; close it with "
            f"{quote} (a {quote} inside is written twice: {quote * 2})"
        )

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def at_end(self) -> bool:
        return self.peek().kind == "end"


# -- identifiers ----------------------------------------------------------------------------------


def _split_identifier(
    parser: _Parser,
    token: _Token,
    types: Mapping[str, Kind],
    backticked_types: bool,
    prefixes: str,
) -> tuple[Kind, str, _Part]:
    """(kind, key, the key's first part) of `type.key` or of a bare attribute name."""
    parts = token.parts
    if len(parts) == 1:
        if not parts[0].quote and parts[0].text in types:
            parser.fail(
                f"the type '{parts[0].text}' at column {token.column} needs its key right after "
                f"a dot, with no spaces (e.g. {parts[0].text}.acc)"
            )
        return Kind.ATTRIBUTE, parts[0].text, parts[0]
    head, rest = parts[0], parts[1:]
    if head.quote == '"' or (head.quote == "`" and not backticked_types):
        parser.fail(
            f"the type {head.quote}{head.text}{head.quote} at column {head.column} cannot be "
            f"quoted{' with double quotes (backticks are allowed)' if backticked_types else ''}; "
            f"use one of {prefixes}"
        )
    if head.text not in types:
        hint = ""
        if head.text.lower() in types:
            hint = f" (types are case-sensitive: write {head.text.lower()}.)"
        parser.fail(
            f"unknown identifier type '{head.text}' at column {head.column}; "
            f"use one of {prefixes} or a bare attribute name{hint}"
        )
    if len(rest) > 1 and any(p.quote for p in rest):
        quoted = next(p for p in rest if p.quote)
        parser.fail(
            f"the quoted name at column {quoted.column} is only part of the key "
            f"'{token.source[rest[0].column - token.column :]}'; quote the whole key "
            f'(e.g. {head.text}."a b.c")'
        )
    return types[head.text], ".".join(p.text for p in rest), rest[0]


def _run_field(parser: _Parser, kind: Kind, key: str, at: _Part, *, order: bool) -> _Field:
    if kind is Kind.METRIC:
        return _Field(kind, key, _NUMERIC_OPS, "float")
    if kind in (Kind.PARAM, Kind.TAG):
        return _Field(kind, key, _STRING_OPS + _NULL_OPS, "string")
    if kind is Kind.DATASET:
        if key not in _DATASET_KEYS:
            parser.fail(
                f"unknown dataset field '{key}' at column {at.column}; "
                f"use one of {', '.join(_DATASET_KEYS)}"
            )
        return _Field(kind, key, _STRING_OPS + _LIST_OPS, "string")
    aliases = _RUN_ORDER_ALIASES if order else _RUN_FILTER_ALIASES
    canonical = aliases.get(key, key)
    if canonical not in _RUN_ATTRIBUTES:
        hint = "; a metric, param or tag needs its prefix (e.g. metrics.acc)"
        if key == "lifecycle_stage":
            hint = "; choose deleted or active runs with run_view_type instead"
        elif key in _RUN_FILTER_ALIASES:
            hint = f"; write {_RUN_FILTER_ALIASES[key]}"
        parser.fail(
            f"unknown attribute '{key}' at column {at.column}; attributes are "
            f"{', '.join(_RUN_ATTRIBUTES)}{hint}"
        )
    if canonical in _RUN_NUMERIC_ATTRIBUTES:
        return _Field(kind, canonical, _NUMERIC_OPS, "number")
    if canonical == "run_id":
        return _Field(kind, canonical, _STRING_OPS + _LIST_OPS, "string")
    return _Field(kind, canonical, _STRING_OPS, "string")


def _experiment_field(parser: _Parser, kind: Kind, key: str, at: _Part) -> _Field:
    if kind is Kind.TAG:
        return _Field(kind, key, _STRING_OPS + _NULL_OPS, "string")
    if key not in _EXPERIMENT_ATTRIBUTES:
        hint = "; a tag needs its prefix (e.g. tags.team)"
        if key == "lifecycle_stage":
            hint = "; choose deleted or active experiments with view_type instead"
        parser.fail(
            f"unknown attribute '{key}' at column {at.column}; attributes are "
            f"{', '.join(_EXPERIMENT_ATTRIBUTES)}{hint}"
        )
    if key == "name":
        return _Field(kind, key, _STRING_OPS, "string")
    if key == "experiment_id":
        return _Field(kind, key, (Op.EQ, Op.NE, Op.IN, Op.NOT_IN), "experiment_id")
    return _Field(kind, key, _NUMERIC_OPS, "int")


# -- filters --------------------------------------------------------------------------------------


def _refusal_note(op: Op, field: _Field, resolve: _FieldResolver) -> str:
    """Why `op` does not apply to `field`, beyond the list of the comparators that do."""
    if op in _LIST_OPS:
        return f" ({resolve.list_note})"
    if op in _NULL_OPS:
        return f" ({resolve.null_note})"
    numeric = field.value_type in ("float", "number", "int")
    if op in (Op.LIKE, Op.ILIKE) and numeric:
        return f" (LIKE and ILIKE match strings; {field.describe()} is a number)"
    if op in (Op.LT, Op.LE, Op.GT, Op.GE) and field.value_type == "string":
        return f" ({op.value} compares numbers; {field.describe()} is a string)"
    return ""


def _comparator(parser: _Parser, field: _Field, resolve: _FieldResolver) -> Op:
    token = parser.take()
    expected = f"a comparator ({', '.join(field.ops)})"
    if token.kind == "op":
        if token.source in _WRONG_SYMBOLS:
            parser.fail(
                f"'{token.source}' at column {token.column} is not a comparator; "
                f"write {_WRONG_SYMBOLS[token.source]}"
            )
        op = _SYMBOL_OPS[token.source]
    elif token.is_word("LIKE", "ILIKE", "IN"):
        op = Op(token.source.upper())
    elif token.is_word("NOT"):
        if not parser.peek().is_word("IN"):
            parser.unexpected(parser.peek(), "IN after NOT (NOT IN)")
        parser.take()
        op = Op.NOT_IN
    elif token.is_word("IS"):
        op = Op.IS_NULL
        if parser.peek().is_word("NOT"):
            parser.take()
            op = Op.IS_NOT_NULL
        if not parser.peek().is_word("NULL"):
            parser.unexpected(parser.peek(), f"NULL ({op.value})")
        parser.take()
    else:
        parser.unexpected(token, expected)
    if op not in field.ops:
        parser.fail(
            f"'{op.value}' at column {token.column} is not allowed on {field.describe()}; "
            f"use one of {', '.join(field.ops)}{_refusal_note(op, field, resolve)}"
        )
    return op


def _string(parser: _Parser, field: _Field) -> tuple[str, _Token]:
    token = parser.take()
    if token.kind == "string":
        return _unquote(token.source), token
    if token.kind == "name" and len(token.parts) == 1 and token.parts[0].quote == '"':
        return token.parts[0].text, token
    hint = ""
    if token.kind == "name":
        hint = f" (write '{token.source}')"
    elif token.kind == "(":
        hint = " (a list needs IN or NOT IN)"
    parser.unexpected(token, f"a quoted string for {field.describe()}{hint}")


def _experiment_id(parser: _Parser, text: str, token: _Token) -> str:
    if not re.fullmatch(r"-?[0-9]+", text):
        parser.fail(
            f"experiment id {text!r} at column {token.column} is not an integer; "
            f"experiment ids are decimal numbers (e.g. '1')"
        )
    return str(int(text))


def _value(parser: _Parser, field: _Field, op: Op) -> Value:
    if op in _NULL_OPS:
        return None
    if op in _LIST_OPS:
        opening = parser.take()
        if opening.kind != "(":
            parser.unexpected(opening, f"'(' opening the list of quoted strings for {op.value}")
        items: list[str] = []
        while True:
            if parser.peek().kind == ")" and items:
                parser.take()
                break
            if parser.peek().kind == ")":
                parser.fail(
                    f"empty list at column {opening.column}; {op.value} needs at least one "
                    f"quoted value"
                )
            text, token = _string(parser, field)
            if field.value_type == "experiment_id":
                text = _experiment_id(parser, text, token)
            items.append(text)
            separator = parser.take()
            if separator.kind == ")":
                break
            if separator.kind != ",":
                parser.unexpected(separator, "',' or ')' in the list")
        return tuple(items)
    if field.value_type == "string":
        return _string(parser, field)[0]
    if field.value_type == "experiment_id":
        text, token = _string(parser, field)
        return _experiment_id(parser, text, token)
    token = parser.take()
    if token.kind != "number":
        hint = " (numbers are not quoted)" if token.kind == "string" else ""
        parser.unexpected(token, f"a number for {field.describe()}{hint}")
    integral = re.fullmatch(r"-?\d+", token.source) is not None
    if field.value_type == "float":
        return float(token.source)
    if not integral and field.value_type == "int":
        parser.unexpected(
            token, f"an integer (milliseconds since the epoch) for {field.describe()}"
        )
    if not integral:
        return float(token.source)
    if int(token.source) not in _INT64:
        parser.fail(
            f"{token.source} at column {token.column} does not fit in 64 bits "
            f"({field.describe()} is in milliseconds since the epoch)"
        )
    return int(token.source)


def _parse_filter(
    text: str | None, what: str, resolve: _FieldResolver, example: str
) -> list[tuple[Kind, str, Op, Value]]:
    if text is None:
        return []
    if not isinstance(text, str):
        raise InvalidInputError(f"The {what} filter must be a string, not {type(text).__name__}")
    parser = _Parser(text, "Invalid filter")
    clauses: list[tuple[Kind, str, Op, Value]] = []
    if parser.at_end():
        return clauses  # blank: no filter
    while True:
        token = parser.take()
        if token.kind == "(":
            parser.fail(
                f"'(' at column {token.column}: parentheses are not supported; "
                f"write clauses joined by AND"
            )
        if token.is_word("NOT"):
            parser.fail(
                f"NOT at column {token.column} is not supported; use != or NOT IN in the clause"
            )
        if token.kind != "name" or token.is_word("AND", "OR"):
            parser.unexpected(token, f"an identifier (e.g. {example})")
        field = resolve(parser, token)
        op = _comparator(parser, field, resolve)
        clauses.append((field.kind, field.key, op, _value(parser, field, op)))
        joint = parser.take()
        if joint.kind == "end":
            return clauses
        if joint.is_word("OR"):
            parser.fail(
                f"OR at column {joint.column} is not supported; MLflow's search joins "
                f"clauses with AND only"
            )
        if not joint.is_word("AND"):
            parser.unexpected(joint, "AND or the end of the filter")
        if parser.at_end():
            parser.unexpected(parser.peek(), "a clause after AND")


class _FieldResolver:
    """Resolves an identifier token to the field it names, for one kind of search."""

    def __init__(
        self,
        types: Mapping[str, Kind],
        *,
        backticked_types: bool,
        prefixes: str,
        list_note: str,
        null_note: str,
        runs: bool,
    ) -> None:
        self.types, self.backticked_types, self.runs = types, backticked_types, runs
        self.prefixes, self.list_note, self.null_note = prefixes, list_note, null_note

    def __call__(self, parser: _Parser, token: _Token, *, order: bool = False) -> _Field:
        kind, key, at = _split_identifier(
            parser, token, self.types, self.backticked_types, self.prefixes
        )
        if self.runs:
            return _run_field(parser, kind, key, at, order=order)
        return _experiment_field(parser, kind, key, at)


_RUNS: Final = _FieldResolver(
    _RUN_TYPES,
    backticked_types=True,
    prefixes="metrics., params., tags., attributes., datasets.",
    list_note="IN and NOT IN work on run_id and datasets only",
    null_note="IS NULL and IS NOT NULL work on params and tags only",
    runs=True,
)
_EXPERIMENTS: Final = _FieldResolver(
    _EXPERIMENT_TYPES,
    backticked_types=False,
    prefixes="attribute., tag., tags.",
    list_note="IN and NOT IN work on experiment_id only",
    null_note="IS NULL and IS NOT NULL work on tags only",
    runs=False,
)


def parse_run_filter(text: str | None) -> tuple[Comparison, ...]:
    """Parse a search_runs filter (MLflow's grammar) into its AND-ed comparisons.

    None, "" and a blank string mean no filter: (). Anything MLflow 3.17 refuses is refused with
    InvalidInputError naming the column and the token, or the identifier and what it allows.
    """
    return tuple(
        Comparison(*clause) for clause in _parse_filter(text, "search_runs", _RUNS, "metrics.acc")
    )


def parse_experiment_filter(text: str | None) -> tuple[ExperimentComparison, ...]:
    """Parse a search_experiments filter into its AND-ed comparisons (see parse_run_filter).

    Identifiers: name (= != LIKE ILIKE), experiment_id (= != IN NOT IN), creation_time and
    last_update_time (numeric comparators, integer values), and tag./tags. keys (= != LIKE ILIKE
    IS NULL IS NOT NULL); the only prefixes are attribute., tag. and tags.
    """
    return tuple(
        ExperimentComparison(*clause)
        for clause in _parse_filter(text, "search_experiments", _EXPERIMENTS, "name")
    )


# -- order_by -------------------------------------------------------------------------------------


def _parse_order_item(
    item: object, index: int, resolve: _FieldResolver
) -> tuple[_Field, bool, _Parser]:
    if not isinstance(item, str):
        raise InvalidInputError(
            f"order_by[{index}] must be a string like 'metrics.acc DESC', not {type(item).__name__}"
        )
    parser = _Parser(item, f"Invalid order_by[{index}]")
    token = parser.take()
    if token.kind != "name" or token.is_word("ASC", "DESC"):
        parser.unexpected(token, "an identifier (e.g. metrics.acc DESC)")
    field = resolve(parser, token, order=True)
    ascending = True
    direction = parser.take()
    if direction.is_word("ASC", "DESC"):
        ascending = direction.source.upper() == "ASC"
        direction = parser.take()
    if direction.kind != "end":
        parser.unexpected(direction, "ASC, DESC or the end of the item")
    return field, ascending, parser


def _order_items(items: Sequence[str] | None) -> Sequence[str]:
    if items is None:
        return ()
    if isinstance(items, str):
        raise InvalidInputError(
            f"order_by must be a list of strings, not one string; write [{items!r}]"
        )
    return items


def parse_run_order_by(items: Sequence[str] | None) -> tuple[OrderKey, ...]:
    """Parse search_runs order_by items, each `<identifier> [ASC|DESC]` (ascending by default).

    Identifiers are metrics, params, tags and the attributes MLflow orders by (run_id, run_name,
    status, user_id, artifact_uri, start_time or created, end_time); datasets cannot be ordered
    by, and a key given twice is refused, as MLflow does.
    """
    keys: list[OrderKey] = []
    seen: dict[tuple[Kind, str], int] = {}
    for index, item in enumerate(_order_items(items)):
        field, ascending, parser = _parse_order_item(item, index, _RUNS)
        if field.kind is Kind.DATASET:
            parser.fail("datasets cannot be ordered by; order by a metric, param, tag or attribute")
        if (field.kind, field.key) in seen:
            parser.fail(
                f"{field.describe()} is already ordered by in order_by[{seen[field.kind, field.key]}]"
                f"; order by each key once"
            )
        seen[field.kind, field.key] = index
        keys.append(OrderKey(field.kind, field.key, ascending))
    return tuple(keys)


def parse_experiment_order_by(items: Sequence[str] | None) -> tuple[ExperimentOrderKey, ...]:
    """Parse search_experiments order_by items: name, experiment_id, creation_time or
    last_update_time, optionally prefixed `attribute.`, then ASC or DESC (default ASC).
    """
    keys: list[ExperimentOrderKey] = []
    for index, item in enumerate(_order_items(items)):
        field, ascending, parser = _parse_order_item(item, index, _EXPERIMENTS)
        if field.kind is Kind.TAG:
            parser.fail(
                "experiments cannot be ordered by tags; order by one of "
                f"{', '.join(_EXPERIMENT_ATTRIBUTES)}"
            )
        keys.append(ExperimentOrderKey(field.kind, field.key, ascending))
    return tuple(keys)
