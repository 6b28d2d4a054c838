"""The peer tools of the convert benchmark, each converting one CSV to zstd Parquet the
way its documentation suggests, every column read as a string.

usage: peers.py polars|duckdb|pyarrow IN.csv OUT.parquet ZSTD_LEVEL
Prints the seconds spent converting (after imports) on stdout.
"""
import sys
import time


def polars(src, dst, level):
    import polars as pl

    t = time.perf_counter()
    pl.scan_csv(src, infer_schema=False).sink_parquet(
        dst, compression="zstd", compression_level=level
    )
    return time.perf_counter() - t


def duckdb(src, dst, level):
    import duckdb as ddb

    t = time.perf_counter()
    con = ddb.connect()
    con.execute(
        f"COPY (SELECT * FROM read_csv('{src}', all_varchar=true, header=true)) "
        f"TO '{dst}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {level})"
    )
    return time.perf_counter() - t


def pyarrow(src, dst, level):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    t = time.perf_counter()
    with open(src, encoding="utf-8") as f:
        names = [n.strip('"') for n in f.readline().rstrip("\n").split(",")]
    reader = pcsv.open_csv(
        src,
        convert_options=pcsv.ConvertOptions(column_types={n: pa.string() for n in names}),
    )
    with pq.ParquetWriter(
        dst, reader.schema, compression="zstd", compression_level=level
    ) as writer:
        for batch in reader:
            writer.write_batch(batch)
    return time.perf_counter() - t


if __name__ == "__main__":
    tool, src, dst, level = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    print(f"{globals()[tool](src, dst, level):.3f}")
