"""Bucket administration on the test S3 server with boto3, independent of the code under
test (endpoint and credentials: testenv.py).

usage: s3_admin.py create-bucket NAME
       s3_admin.py list BUCKET [PREFIX]        JSON [[key, size], ...]
       s3_admin.py get BUCKET KEY OUT          writes the object's bytes to OUT
       s3_admin.py put BUCKET KEY FILE
       s3_admin.py uploads BUCKET              JSON [[key, parts], ...] of multipart
                                               uploads in progress
"""
import json
import sys

import testenv


def main(argv):
    cmd = argv[1]
    s3 = testenv.boto3_client()
    if cmd == "create-bucket":
        s3.create_bucket(Bucket=argv[2])
        print("created", argv[2])
    elif cmd == "list":
        prefix = argv[3] if len(argv) > 3 else ""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=argv[2], Prefix=prefix)
        print(json.dumps([[o["Key"], o["Size"]] for p in pages for o in p.get("Contents", [])]))
    elif cmd == "get":
        body = s3.get_object(Bucket=argv[2], Key=argv[3])["Body"].read()
        with open(argv[4], "wb") as f:
            f.write(body)
        print("got", len(body))
    elif cmd == "put":
        with open(argv[4], "rb") as f:
            s3.put_object(Bucket=argv[2], Key=argv[3], Body=f.read())
        print("put", argv[3])
    elif cmd == "uploads":
        out = []
        for up in s3.list_multipart_uploads(Bucket=argv[2]).get("Uploads", []):
            parts = s3.list_parts(Bucket=argv[2], Key=up["Key"], UploadId=up["UploadId"])
            out.append([up["Key"], len(parts.get("Parts", []))])
        print(json.dumps(out))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
