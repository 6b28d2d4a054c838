"""Reads a whole export output tree the way a warehouse user would, independently of the
code under test, and prints JSON:

- "objects": every object under the root (relative paths, `_`-prefixed ones included);
- "files": per Parquet file of the Hive tree (paths not under a `_`/`.` folder), its
  rows, column names and a SHA-256 digest of the named COLUMNS (same digest as
  parquet_digest.py);
- "dataset_rows": rows read by pyarrow.dataset(root, partitioning="hive") (which fails on
  any file that is not Parquet, e.g. a half-written one);
- "duckdb_rows": rows read by DuckDB read_parquet([the snapshot files], hive_partitioning=1)
  (the Parquet files outside `_`/`.` folders, as pyarrow.dataset finds them; local trees
  only: DuckDB reads object stores through extensions this machine cannot fetch).

usage: check_tree.py ROOT COLUMN[,COLUMN...]
"""
import json
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs

import testenv
from parquet_digest import digest


def hidden(rel):
    return any(part.startswith(("_", ".")) for part in rel.split("/")[:-1])


def main(argv):
    root = argv[1]
    names = [c for c in argv[2].split(",") if c]
    filesys, base = testenv.filesystem(root)
    infos = filesys.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
    objects = sorted(
        i.path[len(base) + 1:] for i in infos if i.type == fs.FileType.File
    )
    files = {}
    for rel in objects:
        if hidden(rel) or not rel.endswith(".parquet"):
            continue
        with filesys.open_input_file(f"{base}/{rel}") as f:
            table = pq.read_table(f)
        files[rel] = {
            "rows": table.num_rows,
            "columns": table.schema.names,
            "digest": digest(table, names),
        }
    dataset_rows = None
    if files:
        dataset_rows = ds.dataset(
            base, filesystem=filesys, format="parquet", partitioning="hive"
        ).count_rows()
    duckdb_rows = None
    if files and "://" not in root:
        import duckdb

        # The snapshot files, as a layout's glob names them: `**/*.parquet` would also
        # match the tool's own `_history/` dataset (DuckDB does not skip `_` folders).
        listed = ", ".join(f"'{base}/{rel}'" for rel in sorted(files))
        duckdb_rows = duckdb.sql(
            f"select count(*) from read_parquet([{listed}], hive_partitioning = 1)"
        ).fetchall()[0][0]
    print(
        json.dumps(
            {
                "objects": objects,
                "files": files,
                "dataset_rows": dataset_rows,
                "duckdb_rows": duckdb_rows,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv)
