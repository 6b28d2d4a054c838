"""Reads a Parquet file with pyarrow (independent of the code under test) and prints JSON:
row count, column names and types, key-value metadata, row groups, and a SHA-256 digest
of the named columns, row by row, so a Rust test can compare it with what the emulator
generated.

usage: parquet_digest.py PATH_OR_S3_URL COLUMN[,COLUMN...]

Digest: for each row, the values of the named columns joined by U+001F, each row ended by
U+001E; null is U+0000 'N'; integers in decimal; strings as they are; UTF-8 encoded.
"""
import hashlib
import json
import sys

import pyarrow.parquet as pq

import testenv


def digest(table, names):
    h = hashlib.sha256()
    cols = [table.column(n).to_pylist() for n in names]
    for row in zip(*cols):
        h.update(
            ("\x1f".join("\x00N" if v is None else str(v) for v in row) + "\x1e").encode()
        )
    return h.hexdigest()


def main(argv):
    target, names = argv[1], [c for c in argv[2].split(",") if c]
    filesys, path = testenv.filesystem(target)
    with filesys.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        table = pf.read()
        meta = {
            k.decode(): v.decode()
            for k, v in (pf.metadata.metadata or {}).items()
            if not k.startswith(b"ARROW")
        }
        print(
            json.dumps(
                {
                    "rows": table.num_rows,
                    "columns": table.schema.names,
                    "types": [str(t) for t in table.schema.types],
                    "metadata": meta,
                    "row_groups": pf.num_row_groups,
                    "digest": digest(table, names),
                }
            )
        )


if __name__ == "__main__":
    main(sys.argv)
