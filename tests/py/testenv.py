"""The test peers' one way to reach the object-store servers that scripts/with_stores.sh
starts: endpoints and credentials come from the environment it exports (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; COHORT_SYNC_TEST_AZURE_ENDPOINT,
_ACCOUNT, _KEY), never from constants here."""
import os


def endpoint():
    url = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("COHORT_SYNC_TEST_S3_ENDPOINT")
    if not url:
        raise SystemExit("no S3 endpoint: run the tests with `make test` (scripts/test.sh)")
    return url


def _credentials():
    return (
        os.environ["AWS_ACCESS_KEY_ID"],
        os.environ["AWS_SECRET_ACCESS_KEY"],
        os.environ.get("AWS_REGION", "us-east-1"),
    )


def boto3_client():
    import boto3

    key, secret, region = _credentials()
    return boto3.client(
        "s3",
        endpoint_url=endpoint(),
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name=region,
    )


def arrow_fs():
    from pyarrow import fs

    key, secret, region = _credentials()
    scheme, _, rest = endpoint().partition("://")
    return fs.S3FileSystem(
        endpoint_override=rest, scheme=scheme, access_key=key, secret_key=secret, region=region
    )


def azure_fs():
    """pyarrow's Azure Blob filesystem on Azurite."""
    from pyarrow import fs

    url = os.environ.get("COHORT_SYNC_TEST_AZURE_ENDPOINT")
    if not url:
        raise SystemExit("no Azure endpoint: run the tests with `make test` (scripts/test.sh)")
    scheme, _, authority = url.partition("://")
    return fs.AzureFileSystem(
        account_name=os.environ["COHORT_SYNC_TEST_AZURE_ACCOUNT"],
        account_key=os.environ["COHORT_SYNC_TEST_AZURE_KEY"],
        blob_storage_authority=authority,
        blob_storage_scheme=scheme,
        # Azurite has no Data Lake endpoint: pointed at the blob one, pyarrow's namespace
        # probe is answered on loopback (and never goes to *.dfs.core.windows.net).
        dfs_storage_authority=authority,
        dfs_storage_scheme=scheme,
    )


def filesystem(target):
    """(pyarrow filesystem, path in it) for a local path, an s3:// or an az:// URL."""
    from pyarrow import fs

    if target.startswith("s3://"):
        return arrow_fs(), target[len("s3://"):].rstrip("/")
    if target.startswith("az://"):
        return azure_fs(), target[len("az://"):].rstrip("/")
    return fs.LocalFileSystem(), os.path.abspath(target)
