"""Reads a Parquet file back with an independent reader and prints it as JSON.

usage: parquet_dump.py dump PATH|s3://BUCKET/KEY [--duckdb]
           {"schema": [[name, type, nullable]], "rows": [{...}], "metadata": {...},
            "row_groups": N}   (--duckdb: rows read by DuckDB instead of pyarrow)
       parquet_dump.py s3-parts ENDPOINT BUCKET
           {"uploads": N, "parts": M}  (in-progress multipart uploads and their parts)
S3 access uses COHORT_SYNC_TEST_S3_ENDPOINT and the dummy test credentials.
"""
import io
import json
import os
import sys
import tempfile

import pyarrow.parquet as pq


def s3_client(endpoint=None):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ["COHORT_SYNC_TEST_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def load_bytes(path):
    if path.startswith("s3://"):
        bucket, key = path[5:].split("/", 1)
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(path, "rb") as f:
        return f.read()


def plain(v):
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def dump(path, use_duckdb):
    data = load_bytes(path)
    pf = pq.ParquetFile(io.BytesIO(data))
    table = pf.read()
    meta = pf.metadata.metadata or {}
    out = {
        "schema": [[f.name, str(f.type), f.nullable] for f in table.schema],
        "metadata": {
            k.decode(): v.decode() for k, v in meta.items() if not k.startswith(b"ARROW:")
        },
        "row_groups": pf.metadata.num_row_groups,
        "num_rows": pf.metadata.num_rows,
    }
    if use_duckdb:
        import duckdb

        with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
            tmp.write(data)
            tmp.flush()
            con = duckdb.connect()
            rel = con.execute(f"SELECT * FROM read_parquet('{tmp.name}')")
            names = [d[0] for d in rel.description]
            out["rows"] = [
                {n: plain(v) for n, v in zip(names, row)} for row in rel.fetchall()
            ]
    else:
        out["rows"] = [{k: plain(v) for k, v in r.items()} for r in table.to_pylist()]
    print(json.dumps(out, ensure_ascii=False))


def s3_parts(endpoint, bucket):
    s3 = s3_client(endpoint)
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    parts = 0
    for up in uploads:
        listed = s3.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
        parts += len(listed.get("Parts", []))
    print(json.dumps({"uploads": len(uploads), "parts": parts}))


def main(argv):
    if argv[1] == "dump":
        dump(argv[2], "--duckdb" in argv[3:])
    elif argv[1] == "s3-parts":
        s3_parts(argv[2], argv[3])
    else:
        raise SystemExit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
