"""Container administration on the test Azure Blob server (Azurite) with pyarrow's Azure
filesystem, independent of the code under test (endpoint and account: testenv.py).

usage: az_admin.py create-container NAME
       az_admin.py put CONTAINER KEY FILE
       az_admin.py list CONTAINER [PREFIX]     JSON [[key, size], ...]
"""
import json
import sys

from pyarrow import fs

import testenv


def main(argv):
    cmd = argv[1]
    az = testenv.azure_fs()
    if cmd == "create-container":
        az.create_dir(argv[2])
        print("created", argv[2])
    elif cmd == "put":
        with open(argv[4], "rb") as src, az.open_output_stream(f"{argv[2]}/{argv[3]}") as out:
            out.write(src.read())
        print("put", argv[3])
    elif cmd == "list":
        base = argv[2] + ("/" + argv[3].strip("/") if len(argv) > 3 and argv[3] else "")
        infos = az.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True))
        print(json.dumps(sorted(
            [i.path[len(argv[2]) + 1:], i.size] for i in infos if i.type == fs.FileType.File
        )))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
