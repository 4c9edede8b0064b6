"""A small query language over the runs table, compiled to parameterized SQL (never evaluated).

    config.label_noise = 0.15 and metrics.peak_test_error > 0.5
    study = 'double-descent' and (status = 'failed' or status = 'interrupted')
    not config.dataset = 'digits' and checks.passed < checks.total

Fields: ``study``, ``status``, ``run_id``, ``preset``, ``error``, ``notes``, ``config.KEY``, ``metrics.KEY``
(a dotted KEY reaches into nested objects), ``checks.passed``, ``checks.total``, ``seconds`` (run time),
``created``, ``started``, ``finished`` (Unix times). Comparisons ``= != < <= > >=``, joined by ``and``,
``or``, ``not`` and parentheses; values are numbers, quoted strings, ``true``, ``false`` and ``null``
(``= null`` is "the key is missing"). A field may also stand on either side: ``checks.passed < checks.total``.

Every field becomes a fixed SQL expression or ``json_extract(column, ?)`` with the JSON path as a parameter,
and every value a parameter, so no text of the query reaches SQL. A malformed query raises
:class:`QueryError` with one line naming the problem and where it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_COLUMNS = {
    "study": "study", "status": "status", "run_id": "run_id", "preset": "preset", "error": "error",
    "notes": "notes", "created": "created", "started": "started", "finished": "finished",
    "seconds": "(finished - started)",
    "checks.total": "json_array_length(checks)",
    "checks.passed": "(SELECT COUNT(*) FROM json_each(runs.checks) AS c "
                     "WHERE json_extract(c.value, '$.passed') = 1)",
}
FIELDS_HELP = ("study, status, run_id, preset, error, notes, seconds, created, started, finished, "
               "checks.passed, checks.total, config.KEY, metrics.KEY")
_JSON_COLUMNS = ("config", "metrics")
_KEY = r"[A-Za-z_][A-Za-z0-9_-]*"
_OPERATORS = ("<=", ">=", "!=", "=", "<", ">")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_.]))
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op><=|>=|!=|==|=|<|>)
  | (?P<paren>[()])
  | (?P<word>[A-Za-z_][A-Za-z0-9_.-]*)
""", re.VERBOSE)


class QueryError(ValueError):
    """A query that cannot be read: one line saying what is wrong and where."""


@dataclass(frozen=True)
class Token:
    kind: str      # number, string, op, paren, word, end
    text: str
    pos: int       # 1-based column, for messages


def tokenize(text: str) -> list[Token]:
    tokens, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            if text[i] in "'\"":
                raise QueryError(f"query: unclosed string starting at column {i + 1}")
            raise QueryError(f"query: unexpected {text[i]!r} at column {i + 1}")
        if m.lastgroup != "space":
            tokens.append(Token(m.lastgroup, m.group(), i + 1))
        i = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def field_sql(name: str, pos: int = 0) -> tuple[str, list[Any]]:
    """SQL for one field name (also used for sorting and table columns): (expression, parameters)."""
    if name.lower() in _COLUMNS:
        return _COLUMNS[name.lower()], []
    column, dot, key = name.partition(".")
    if column.lower() in _JSON_COLUMNS and dot:
        parts = key.split(".")
        if all(re.fullmatch(_KEY, p) for p in parts):
            return f"json_extract({column.lower()}, ?)", ["$" + "".join(f'."{p}"' for p in parts)]
        raise QueryError(f"query: {name!r} is not a valid key{_at(pos)}; keys are letters, digits, _ and -")
    raise QueryError(f"query: unknown field {name!r}{_at(pos)}; use {FIELDS_HELP}")


def _at(pos: int) -> str:
    return f" at column {pos}" if pos else ""


class _Parser:
    """Recursive descent: or_ -> and_ -> not_ -> atom (parenthesized or a comparison)."""

    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_word(self, word: str) -> bool:
        return self.tok.kind == "word" and self.tok.text.lower() == word

    def parse(self) -> tuple[str, list[Any]]:
        if self.tok.kind == "end":
            raise QueryError("query: empty query")
        sql, params = self.or_()
        if self.tok.kind != "end":
            raise QueryError(f"query: unexpected {self.tok.text!r} at column {self.tok.pos}; "
                             "join comparisons with and / or")
        return sql, params

    def or_(self):
        return self._joined("or", self.and_)

    def and_(self):
        return self._joined("and", self.not_)

    def _joined(self, word: str, operand):
        sql, params = operand()
        while self.is_word(word):
            self.take()
            right, more = operand()
            sql, params = f"({sql} {word.upper()} {right})", params + more
        return sql, params

    def not_(self):
        if self.is_word("not"):
            self.take()
            sql, params = self.not_()
            return f"(NOT coalesce({sql}, 0))", params
        return self.atom()

    def atom(self):
        if self.tok.text == "(":
            opening = self.take()
            sql, params = self.or_()
            if self.tok.text != ")":
                raise QueryError(f"query: the parenthesis at column {opening.pos} is not closed")
            self.take()
            return sql, params
        left = self.operand(first=True)
        if self.tok.kind != "op":
            where = "at the end" if self.tok.kind == "end" else f"at column {self.tok.pos}"
            raise QueryError(f"query: expected one of {' '.join(_OPERATORS)} after {left[2]!r} {where}")
        op = self.take().text
        op = "=" if op == "==" else op
        right = self.operand(first=False)
        (lsql, lparams, _), (rsql, rparams, _) = left, right
        if rsql == "NULL":
            if op not in ("=", "!="):
                raise QueryError(f"query: null can only be compared with = or != (column {self.tokens[self.i - 1].pos})")
            return f"({lsql} IS {'NOT ' if op == '!=' else ''}NULL)", lparams
        return f"({lsql} {op} {rsql})", lparams + rparams

    def operand(self, first: bool) -> tuple[str, list[Any], str]:
        tok = self.take()
        if tok.kind == "word":
            lowered = tok.text.lower()
            if lowered in ("true", "false"):
                return "?", [1 if lowered == "true" else 0], tok.text
            if lowered == "null":
                if first:
                    raise QueryError(f"query: a comparison starts with a field, not null (column {tok.pos})")
                return "NULL", [], tok.text
            if lowered in ("and", "or", "not"):
                raise QueryError(f"query: expected a {'field' if first else 'value'} at column {tok.pos}, "
                                 f"got {tok.text!r}")
            sql, params = field_sql(tok.text, tok.pos)
            return sql, params, tok.text
        if tok.kind == "number":
            number = float(tok.text)
            value = int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", tok.text) else number
            return "?", [value], tok.text
        if tok.kind == "string":
            return "?", [_unquote(tok.text)], tok.text
        what = "a field" if first else "a value (a number, a 'quoted string', true, false, null or a field)"
        where = "at the end" if tok.kind == "end" else f"at column {tok.pos}, got {tok.text!r}"
        raise QueryError(f"query: expected {what} {where}")


def compile_query(text: str) -> tuple[str, list[Any]]:
    """A query as an SQL condition over the ``runs`` table and its parameters; raises QueryError."""
    return _Parser(text).parse()
