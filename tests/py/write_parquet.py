"""Writes a Parquet file with pyarrow (an independent writer) for the tests' sources and
snapshots.

usage: write_parquet.py OUT SPEC_JSON
         SPEC_JSON: {"columns": {"name": {"type": TYPE, "values": [...]}},
                     "metadata": {"key": "value", ...},      (optional)
                     "row_group_size": N}                    (optional)
         TYPE: string, large_string, string_view, dictionary (of strings), int64, int32,
               uint64, float64, bool, timestamp (seconds), list (of strings), binary
         (null values are nulls)
"""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq

TYPES = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "string_view": pa.string_view(),
    "dictionary": pa.dictionary(pa.int32(), pa.string()),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "uint64": pa.uint64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("s"),
    "list": pa.list_(pa.string()),
    "binary": pa.binary(),
}


def main(out, spec_json):
    spec = json.loads(spec_json)
    arrays, names = [], []
    for name, col in spec["columns"].items():
        arrays.append(pa.array(col["values"], type=TYPES[col["type"]]))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)
    meta = {k.encode(): v.encode() for k, v in spec.get("metadata", {}).items()}
    if meta:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(
        table, out, compression="zstd", row_group_size=spec.get("row_group_size", 1 << 20)
    )
    print("wrote", out, table.num_rows)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
