"""Reads a Parquet file back with independent readers and prints it as JSON.

usage: parquet_dump.py dump PATH|s3://BUCKET/KEY [--duckdb]
           {"schema": [[name, type, nullable]], "rows": [{...}], "metadata": {...},
            "row_groups": N, "num_rows": N}   (--duckdb: rows read by DuckDB, not pyarrow)
       parquet_dump.py layout PATH|s3://BUCKET/KEY [--max-row-groups N]
           {"row_group_rows": [rows per row group], "codecs": [codec per column chunk],
            "zstd_levels": [L...], "zstd_pages": N}
           Parquet does not record the zstd level, so it is found from the file's bytes:
           the page headers are parsed here (Thrift compact protocol), every zstd page
           (of the first N row groups) is decompressed with pyarrow and compressed again
           at levels 1..=22; `zstd_levels` are those that reproduce every page byte for
           byte. (A streaming encoder, as parquet-rs uses, picks the parameters of a
           one-shot compression at most levels; a few, and tiny pages, match several
           levels or none.)
"""
import io
import json
import sys
import tempfile

import pyarrow as pa
import pyarrow.parquet as pq

import testenv

LEVELS = range(1, 23)


def load_bytes(target):
    if target.startswith("s3://"):
        bucket, key = target[len("s3://"):].split("/", 1)
        return testenv.boto3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    with open(target, "rb") as f:
        return f.read()


def plain(v):
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def dump(target, use_duckdb):
    data = load_bytes(target)
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


class Compact:
    """Reads Thrift's compact protocol (Parquet's page headers) into {field id: value}."""

    def __init__(self, buf, pos):
        self.b, self.p = buf, pos

    def byte(self):
        v = self.b[self.p]
        self.p += 1
        return v

    def varint(self):
        shift = out = 0
        while True:
            v = self.byte()
            out |= (v & 0x7F) << shift
            shift += 7
            if not v & 0x80:
                return out

    def zigzag(self):
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def value(self, t):
        if t in (1, 2):
            return t == 1
        if t == 3:
            return self.byte()
        if t in (4, 5, 6):
            return self.zigzag()
        if t == 7:
            self.p += 8
            return None
        if t == 8:
            n = self.varint()
            self.p += n
            return self.b[self.p - n:self.p]
        if t in (9, 10):
            h = self.byte()
            n, et = h >> 4, h & 0xF
            if n == 15:
                n = self.varint()
            return [bool(self.byte()) if et in (1, 2) else self.value(et) for _ in range(n)]
        if t == 11:
            n = self.varint()
            if n == 0:
                return {}
            kv = self.byte()
            return {self.value(kv >> 4): self.value(kv & 0xF) for _ in range(n)}
        if t == 12:
            return self.struct()
        raise ValueError(f"unknown Thrift compact type {t}")

    def struct(self):
        out, last = {}, 0
        while True:
            h = self.byte()
            if h == 0:
                return out
            delta, t = h >> 4, h & 0xF
            fid = last + delta if delta else self.zigzag()
            out[fid] = self.value(t)
            last = fid


def pages(data, start, length):
    """(PageHeader fields, payload) of each page of a column chunk."""
    p, end = start, start + length
    while p < end:
        r = Compact(data, p)
        header = r.struct()
        size = header[3]  # compressed_page_size
        yield header, data[r.p:r.p + size]
        p = r.p + size


def zstd_pages(data, md, max_row_groups):
    """(decompressed, as written) of every zstd page of the first row groups."""
    out = []
    for rg in range(min(md.num_row_groups, max_row_groups)):
        for c in range(md.num_columns):
            col = md.row_group(rg).column(c)
            if col.compression != "ZSTD":
                continue
            start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
            for header, payload in pages(data, start, col.total_compressed_size):
                skip = 0
                if 8 in header:  # data page v2: levels are stored uncompressed
                    v2 = header[8]
                    skip = v2.get(5, 0) + v2.get(6, 0)
                    if v2.get(7, True) is False:
                        continue
                body = payload[skip:]
                raw = pa.Codec("zstd").decompress(body, decompressed_size=header[2] - skip)
                out.append((raw, body))
    return sorted(out, key=lambda p: len(p[1]))


def zstd_levels(written):
    """The levels whose compression reproduces every page byte for byte (checked from the
    smallest page up, so a wrong level is usually dismissed on a small one)."""
    found = []
    for level in LEVELS:
        codec = pa.Codec("zstd", compression_level=level)
        if all(codec.compress(raw).to_pybytes() == body for raw, body in written):
            found.append(level)
    return found


def layout(target, max_row_groups):
    data = load_bytes(target)
    md = pq.ParquetFile(io.BytesIO(data)).metadata
    codecs = [
        md.row_group(rg).column(c).compression
        for rg in range(md.num_row_groups)
        for c in range(md.num_columns)
    ]
    written = zstd_pages(data, md, max_row_groups)
    print(
        json.dumps(
            {
                "row_group_rows": [md.row_group(i).num_rows for i in range(md.num_row_groups)],
                "codecs": codecs,
                "zstd_levels": zstd_levels(written) if written else [],
                "zstd_pages": len(written),
            }
        )
    )


def main(argv):
    if argv[1] == "dump":
        dump(argv[2], "--duckdb" in argv[3:])
    elif argv[1] == "layout":
        n = int(argv[argv.index("--max-row-groups") + 1]) if "--max-row-groups" in argv else 1 << 30
        layout(argv[2], n)
    else:
        raise SystemExit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
