"""Files for the reverse-pipeline tests, written by independent tools (pyarrow, boto3).

usage: reverse_files.py parquet OUT SPEC_JSON
         SPEC_JSON: {"columns": {"name": {"type": TYPE, "values": [...]}},
                     TYPE: string, large_string, string_view, dictionary (of strings),
                     int64, int32, uint64, float64, bool, timestamp (seconds),
                     list (of strings), binary
                     "metadata": {"key": "value", ...}}   (null values are nulls)
       reverse_files.py put ENDPOINT BUCKET KEY FILE
"""
import json
import sys

import pyarrow as pa
import pyarrow.parquet as pq


def parquet(out, spec_json):
    spec = json.loads(spec_json)
    arrays, names = [], []
    for name, col in spec["columns"].items():
        kind = {
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
        }[col["type"]]
        arrays.append(pa.array(col["values"], type=kind))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)
    meta = {k.encode(): v.encode() for k, v in spec.get("metadata", {}).items()}
    if meta:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, out, compression="zstd", row_group_size=spec.get("row_group_size", 1 << 20))
    print("wrote", out, table.num_rows)


def put(endpoint, bucket, key, path):
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    with open(path, "rb") as f:
        s3.put_object(Bucket=bucket, Key=key, Body=f.read())
    print("put", key)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "parquet":
        parquet(sys.argv[2], sys.argv[3])
    elif cmd == "put":
        put(*sys.argv[2:6])
    else:
        raise SystemExit(f"unknown command {cmd}")
