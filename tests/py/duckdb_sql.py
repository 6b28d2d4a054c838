"""Runs a SQL script in a fresh in-memory DuckDB, then one query; prints its rows as JSON
(values as text, with each column's DuckDB type). Usage: duckdb_sql.py SCRIPT.sql QUERY"""

import json
import sys

import duckdb


def main(argv):
    con = duckdb.connect()
    with open(argv[1]) as f:
        con.execute(f.read())
    rel = con.sql(argv[2])
    print(json.dumps({
        "columns": rel.columns,
        "types": [str(t) for t in rel.types],
        "rows": [[None if v is None else str(v) for v in row] for row in rel.fetchall()],
    }))


if __name__ == "__main__":
    main(sys.argv)
