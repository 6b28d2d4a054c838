"""Reads the sync-history dataset under an output (`ROOT/_history/`) as a warehouse would,
independently of the code under test, and prints JSON:

- "rows": every row, partition columns `pipeline` and `date` included (from the
  Hive-style path), timestamps as ISO strings; sorted by pipeline, run_id, cohort_id;
- "reader": which reader produced them: DuckDB's `read_parquet('…/_history/**/*.parquet',
  hive_partitioning = 1)` for a local ROOT, pyarrow.dataset (hive partitioning) for s3://
  (DuckDB reaches S3 through an extension this machine cannot fetch);
- "files": every object under `_history/` (hidden ones included).

usage: read_history.py ROOT
"""
import json
import sys

from pyarrow import fs

import testenv


def iso(v):
    return v.isoformat() if hasattr(v, "isoformat") else v


def main(argv):
    root = argv[1]
    filesys, base = testenv.filesystem(root)
    hist = f"{base}/_history"
    infos = filesys.get_file_info(fs.FileSelector(hist, recursive=True, allow_not_found=True))
    files = sorted(i.path[len(hist) + 1:] for i in infos if i.type == fs.FileType.File)
    rows = []
    if any(f.endswith(".parquet") for f in files):
        if root.startswith("s3://"):
            import pyarrow.dataset as ds

            table = ds.dataset(
                hist, filesystem=filesys, format="parquet", partitioning="hive"
            ).to_table()
            rows = table.to_pylist()
            reader = "pyarrow.dataset"
        else:
            import duckdb

            rel = duckdb.sql(
                f"select * from read_parquet('{hist}/**/*.parquet', hive_partitioning = 1)"
            )
            names = rel.columns
            rows = [dict(zip(names, r)) for r in rel.fetchall()]
            reader = "duckdb"
    else:
        reader = None
    rows = [{k: iso(v) for k, v in r.items()} for r in rows]
    rows.sort(key=lambda r: (str(r.get("pipeline")), r["run_id"], str(r.get("cohort_id"))))
    print(json.dumps({"rows": rows, "reader": reader, "files": files}))


if __name__ == "__main__":
    main(sys.argv)
