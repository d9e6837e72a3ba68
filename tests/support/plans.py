"""EXPLAIN a statement the way it ran: a claim sends its candidate query between two SETs, in one round trip."""

from __future__ import annotations

from deliveries.models import SORTS_OFF, SORTS_ON


def statement_of(sql: str) -> str:
    """The statement itself, without the SETs a claim sends around it."""
    return sql.removeprefix(SORTS_OFF).removesuffix(SORTS_ON)


def explain(context: dict, sql: str, params) -> str:
    """The plan of `sql` (from a connection.execute_wrapper), with the settings it was sent with."""
    raw = context["cursor"].cursor  # psycopg's own: through Django's, the wrapper would run again
    statement = statement_of(sql)
    if statement == sql:
        raw.execute("EXPLAIN " + statement, params)
    else:
        raw.execute(f"{SORTS_OFF}EXPLAIN {statement}{SORTS_ON}", params)
        raw.nextset()
    return "\n".join(row[0] for row in raw.fetchall())
