"""The explorer's query language: compiled to parameterized SQL, checked against a Python evaluation of the same
query on random rows, and one clear line for every malformed query."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from overparam.store.query import QueryError, compile_query, field_sql


def _table(rows: list[dict]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE runs (run_id TEXT, study TEXT, status TEXT, config TEXT, metrics TEXT, checks TEXT, "
                 "preset TEXT, error TEXT, notes TEXT, created REAL, started REAL, finished REAL)")
    for i, r in enumerate(rows):
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, 'quick', NULL, '', ?, ?, ?)",
                     (f"r{i}", r["study"], r["status"], json.dumps(r["config"]), json.dumps(r["metrics"]),
                      json.dumps(r.get("checks", [])), i, i, i + r.get("seconds", 1.0)))
    return conn


def _select(conn: sqlite3.Connection, query: str) -> set[str]:
    where, params = compile_query(query)
    return {r[0] for r in conn.execute(f"SELECT run_id FROM runs WHERE {where}", params)}


ROWS = [
    {"study": "dd", "status": "done", "config": {"label_noise": 0.15, "width": 8, "dataset": "digits"},
     "metrics": {"peak_test_error": 0.55}, "checks": [{"passed": True}, {"passed": False}]},
    {"study": "dd", "status": "done", "config": {"label_noise": 0.15, "width": 16, "dataset": "mnist1d"},
     "metrics": {"peak_test_error": 0.45}, "checks": [{"passed": True}, {"passed": True}]},
    {"study": "dd", "status": "failed", "config": {"label_noise": 0.0, "width": 8, "dataset": "digits"},
     "metrics": {}},
    {"study": "mem", "status": "done", "config": {"nested": {"depth": 3}, "flag": True},
     "metrics": {"fit-time": 12}, "seconds": 30.0},
]


@pytest.mark.parametrize("query, expected", [
    ("config.label_noise = 0.15 and metrics.peak_test_error > 0.5", {"r0"}),
    ("config.label_noise = 0.15", {"r0", "r1"}),
    ("study = 'dd' and (status = 'failed' or config.width >= 16)", {"r1", "r2"}),
    ("not config.dataset = 'digits'", {"r1", "r3"}),                 # a missing key is "not digits"
    ("metrics.peak_test_error = null", {"r2", "r3"}),
    ("metrics.peak_test_error != null", {"r0", "r1"}),
    ("checks.passed < checks.total", {"r0"}),
    ("checks.passed = 2", {"r1"}),
    ("config.nested.depth >= 3 and config.flag = true", {"r3"}),
    ("metrics.fit-time > 10", {"r3"}),
    ("seconds > 10", {"r3"}),
    ('study = "mem"', {"r3"}),
    ("STATUS = 'done' AND NOT study = 'mem'", {"r0", "r1"}),
    ("config.width == 8", {"r0", "r2"}),
    ("study = 'x\\' or 1=1 --'", set()),                           # an escaped quote stays inside the string
])
def test_queries_select_the_runs_they_describe(query, expected):
    assert _select(_table(ROWS), query) == expected


def test_no_text_of_the_query_reaches_sql():
    sql, params = compile_query("config.a = 'x; DROP TABLE runs' or metrics.b < -1.5e3 and study != 'dd'")
    assert "DROP" not in sql and "'x" not in sql and "dd" not in sql and "1.5" not in sql
    assert params == ['$."a"', "x; DROP TABLE runs", '$."b"', -1500.0, "dd"]
    assert sql.count("?") == len(params)


@pytest.mark.parametrize("query, message", [
    ("", "empty query"),
    ("config.x >", "expected a value (a number, a 'quoted string', true, false, null or a field) at the end"),
    ("config.x 3", "expected one of <= >= != = < > after 'config.x' at column 10"),
    ("foo = 1", "unknown field 'foo' at column 1"),
    ("config = 1", "unknown field 'config' at column 1"),
    ("(status = 'done'", "the parenthesis at column 1 is not closed"),
    ("status = 'done')", "unexpected ')' at column 16"),
    ("status = 'done", "unclosed string starting at column 10"),
    ("status = 'done' status = 'x'", "unexpected 'status' at column 17; join comparisons with and / or"),
    ("config.x < null", "null can only be compared with = or !="),
    ("null = config.x", "a comparison starts with a field, not null"),
    ("config.x = and", "expected a value"),
    ("status ~ 'x'", "unexpected '~' at column 8"),
    ("metrics.a..b = 1", "'metrics.a..b' is not a valid key"),
    ("study = 'x'' or 1=1 --'", "unexpected \"' or 1=1 --'\" at column 12"),    # no SQL-style doubled quote
])
def test_bad_queries_get_one_line_naming_the_problem(query, message):
    with pytest.raises(QueryError) as info:
        compile_query(query)
    text = str(info.value)
    assert message in text and "\n" not in text and text.startswith("query: ")


def test_field_sql_for_sorting_and_columns():
    assert field_sql("study") == ("study", [])
    assert field_sql("metrics.peak_test_error") == ("json_extract(metrics, ?)", ['$."peak_test_error"'])
    with pytest.raises(QueryError, match="unknown field 'rowid'"):
        field_sql("rowid")


# -- property: SQL agrees with a Python evaluation of the same query -------------------------------------------

NUM_KEYS, STR_KEYS = ["a", "b"], ["s"]
values = st.sampled_from([-1, 0, 0.5, 1, 2.25, 3])
strings = st.sampled_from(["x", "y", "it's"])
row_strategy = st.fixed_dictionaries({
    "config": st.fixed_dictionaries({}, optional={"a": values, "b": values, "s": strings}),
    "metrics": st.fixed_dictionaries({}, optional={"a": values}),
})
OPS = ["=", "!=", "<", "<=", ">", ">="]


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


@st.composite
def queries(draw, depth=0):
    """(query text, python predicate row -> True/False/None) with SQL's three-valued logic."""
    kind = draw(st.sampled_from(["cmp", "cmp", "and", "or", "not", "null"] if depth < 3 else ["cmp"]))
    if kind == "cmp":
        column = draw(st.sampled_from(["config", "metrics"]))
        key = draw(st.sampled_from(NUM_KEYS if column == "metrics" else NUM_KEYS + STR_KEYS))
        op = draw(st.sampled_from(OPS))
        value = draw(strings if key in STR_KEYS else values)
        text = f"{column}.{key} {op} {_quote(value) if isinstance(value, str) else value}"

        def pred(row, column=column, key=key, op=op, value=value):
            have = row[column].get(key)
            if have is None:
                return None
            return {"=": have == value, "!=": have != value, "<": have < value, "<=": have <= value,
                    ">": have > value, ">=": have >= value}[op]
        return text, pred
    if kind == "null":
        key = draw(st.sampled_from(NUM_KEYS + STR_KEYS))
        op = draw(st.sampled_from(["=", "!="]))
        return f"config.{key} {op} null", lambda row, key=key, op=op: (row["config"].get(key) is None) == (op == "=")
    if kind == "not":
        text, inner = draw(queries(depth + 1))
        return f"not ({text})", lambda row: not bool(inner(row))
    (lt, left), (rt, right) = draw(queries(depth + 1)), draw(queries(depth + 1))
    if kind == "and":
        def pred(row):
            a, b = left(row), right(row)
            return False if a is False or b is False else (None if a is None or b is None else True)
        return f"({lt}) and ({rt})", pred

    def pred(row):
        a, b = left(row), right(row)
        return True if a is True or b is True else (None if a is None or b is None else False)
    return f"({lt}) or ({rt})", pred


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(row_strategy, min_size=1, max_size=8), query=queries())
def test_sql_agrees_with_python_evaluation(rows, query):
    text, pred = query
    table = _table([{"study": "s", "status": "done", **r} for r in rows])
    expected = {f"r{i}" for i, r in enumerate(rows) if pred(r) is True}
    assert _select(table, text) == expected, text
