"""Reads a whole export output tree the way a warehouse user would, independently of the
code under test, and prints JSON:

- "objects": every object under the root (relative paths, `_`-prefixed ones included);
- "files": per Parquet file of the Hive tree (paths not under a `_`/`.` folder), its
  rows, column names and a SHA-256 digest of the named COLUMNS (same digest as
  parquet_digest.py);
- "dataset_rows": rows read by pyarrow.dataset(root, partitioning="hive") (which fails on
  any file that is not Parquet, e.g. a half-written one);
- "duckdb_rows": rows read by DuckDB read_parquet('root/**/*.parquet', hive_partitioning=1)
  (local trees only: DuckDB reads S3 through an extension this machine cannot fetch).

usage: check_tree.py ROOT COLUMN[,COLUMN...] [S3_ENDPOINT]
"""
import hashlib
import json
import os
import sys

import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs


def filesystem(root, endpoint):
    if root.startswith("s3://"):
        scheme, _, rest = endpoint.partition("://")
        s3 = fs.S3FileSystem(
            endpoint_override=rest,
            scheme=scheme,
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
        )
        return s3, root[len("s3://"):].rstrip("/")
    return fs.LocalFileSystem(), os.path.abspath(root)


def hidden(rel):
    return any(part.startswith(("_", ".")) for part in rel.split("/")[:-1])


def digest(table, names):
    h = hashlib.sha256()
    cols = [table.column(n).to_pylist() for n in names]
    for row in zip(*cols):
        h.update(
            ("\x1f".join("\x00N" if v is None else str(v) for v in row) + "\x1e").encode()
        )
    return h.hexdigest()


def main(argv):
    root = argv[1]
    names = [c for c in argv[2].split(",") if c]
    endpoint = argv[3] if len(argv) > 3 else ""
    filesys, base = filesystem(root, endpoint)
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
    if files and not root.startswith("s3://"):
        import duckdb

        duckdb_rows = duckdb.sql(
            f"select count(*) from read_parquet('{base}/**/*.parquet', hive_partitioning = 1)"
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
