"""Validates OpenLineage events with jsonschema (independent of the code under test)
against the spec's schema vendored in tests/openlineage/ (OpenLineage.json 2-0-2 and the
standard facets used), with formats checked (uuid, date-time, uri), and each facet against
its own schema: a standard facet against the spec's facet file, a cohort-sync facet against
schemas/openlineage-facets.json. For each output dataset on the local disk (namespace
`file`) the Parquet file is read with pyarrow. Any invalid event fails the script.

usage: check_lineage.py EVENTS.ndjson   (one event a line, or receiver records with "event")
prints JSON: {"events": [...], "parquet_rows": {path: rows}}
"""
import json
import pathlib
import sys
import uuid

import jsonschema
import pyarrow.parquet as pq
from referencing import Registry, Resource

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC = ROOT / "tests" / "openlineage"
OWN = json.loads((ROOT / "schemas" / "openlineage-facets.json").read_text())


def load(name):
    return json.loads((SPEC / name).read_text())


core = load("OpenLineage.json")
facet_files = {
    "OutputStatisticsOutputDatasetFacet": load("OutputStatisticsOutputDatasetFacet.json"),
    "ErrorMessageRunFacet": load("ErrorMessageRunFacet.json"),
    "JobTypeJobFacet": load("JobTypeJobFacet.json"),
}
resources = [(core["$id"], Resource.from_contents(core))]
resources += [(s["$id"], Resource.from_contents(s)) for s in facet_files.values()]
resources.append((OWN["$id"], Resource.from_contents(OWN)))
registry = Registry().with_resources(resources)
checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
for fmt in ("uuid", "date-time", "uri"):
    assert fmt in checker.checkers, f"jsonschema cannot check format {fmt}: install tests/requirements.txt"
jsonschema.Draft202012Validator.check_schema(core)


def validator(schema):
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=checker)


event_validator = validator(core)


def check_facet(where, facet):
    url = facet["_schemaURL"]
    base, _, pointer = url.partition("#")
    name = pointer.rsplit("/", 1)[-1]
    if base == OWN["$id"]:
        schema = {"$ref": url}
    elif name in facet_files and base == facet_files[name]["$id"]:
        schema = {"$ref": url}
    else:
        raise SystemExit(f"{where}: facet schema {url} is not one this test knows")
    errors = list(validator(schema).iter_errors(facet))
    if errors:
        raise SystemExit(f"{where}: facet invalid against {url}: {errors[0].message}")


def facets_of(event):
    for key, facet in event.get("run", {}).get("facets", {}).items():
        yield f"run.facets.{key}", facet
    for key, facet in event.get("job", {}).get("facets", {}).items():
        yield f"job.facets.{key}", facet
    for side in ("inputs", "outputs"):
        for i, ds in enumerate(event.get(side, [])):
            for group in ("facets", "inputFacets", "outputFacets"):
                for key, facet in ds.get(group, {}).items():
                    yield f"{side}[{i}].{group}.{key}", facet


def main(argv):
    events, rows = [], {}
    for n, line in enumerate(pathlib.Path(argv[1]).read_text().splitlines(), 1):
        if not line.strip():
            raise SystemExit(f"line {n} is empty")
        record = json.loads(line)
        event = record["event"] if "event" in record and "eventType" not in record else record
        errors = sorted(event_validator.iter_errors(event), key=lambda e: list(e.path))
        if errors:
            raise SystemExit(f"event {n} invalid: {errors[0].message} at {list(errors[0].path)}")
        uuid.UUID(event["run"]["runId"])
        for where, facet in facets_of(event):
            check_facet(f"event {n} {where}", facet)
        for ds in event.get("outputs", []):
            if ds["namespace"] == "file" and ds["name"].endswith(".parquet"):
                rows[ds["name"]] = pq.ParquetFile(ds["name"]).metadata.num_rows
        events.append(record)
    print(json.dumps({"events": events, "parquet_rows": rows}))


if __name__ == "__main__":
    main(sys.argv)
