"""Bucket administration on the test S3 server, independent of the code under test.

usage: s3_admin.py create-bucket ENDPOINT NAME
       s3_admin.py list ENDPOINT BUCKET [PREFIX]     (one "key size" per line)
       s3_admin.py uploads ENDPOINT BUCKET           (in-progress multipart uploads)
"""
import sys

import boto3


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def main(argv):
    cmd, endpoint = argv[1], argv[2]
    s3 = client(endpoint)
    if cmd == "create-bucket":
        s3.create_bucket(Bucket=argv[3])
        print("created", argv[3])
    elif cmd == "list":
        prefix = argv[4] if len(argv) > 4 else ""
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=argv[3], Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                print(obj["Key"], obj["Size"])
    elif cmd == "uploads":
        for up in s3.list_multipart_uploads(Bucket=argv[3]).get("Uploads", []):
            print(up["Key"], up["UploadId"])
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv)
