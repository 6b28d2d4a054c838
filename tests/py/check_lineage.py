"""Validates OpenLineage events independently of the code under test, with the
`openlineage-python` package (tests/requirements.txt): every event is built, key by key,
into the package's generated attrs classes (RunEvent, Run, Job, InputDataset,
OutputDataset and the standard facet classes of `openlineage.client.generated`, found by
their schema URL), which runs their validators; a required key missing, a key the class
has no field for, or a value not of the field's annotated type fails. The object is then
serialised back with `Serde.to_dict` and must equal the event exactly (nothing dropped,
renamed or retyped); the event's `schemaURL` must be RunEvent's and each standard facet's
`_schemaURL` its class's. As the package's own checks of `producer` and the schema URLs
accept any string, those are checked as RFC 3986 URIs, `eventTime` as RFC 3339 and
`runId` as a canonical UUID. cohort-sync's own facets are checked with jsonschema against
schemas/openlineage-facets.json. For each output dataset on the local disk (namespace
`file`) the Parquet file is read with pyarrow. Any invalid event fails the script.

usage: check_lineage.py EVENTS.ndjson   (one event a line, or receiver records with "event")
prints JSON: {"events": [...], "parquet_rows": {path: rows}}
"""
import copy
import enum
import importlib
import json
import pathlib
import pkgutil
import sys
import types
import typing
import uuid

import attr
import jsonschema
import openlineage.client.generated as generated
import pyarrow.parquet as pq
from openlineage.client.event_v2 import RunEvent
from openlineage.client.generated.base import BaseFacet
from openlineage.client.serde import Serde
from referencing import Registry, Resource
from rfc3339_validator import validate_rfc3339
from rfc3986_validator import validate_rfc3986

ROOT = pathlib.Path(__file__).resolve().parents[2]
OWN = json.loads((ROOT / "schemas" / "openlineage-facets.json").read_text())
jsonschema.Draft202012Validator.check_schema(OWN)
registry = Registry().with_resources([(OWN["$id"], Resource.from_contents(OWN))])


class Invalid(Exception):
    """An event that is not valid: the message says where and why."""


def standard_facets():
    """Every standard facet class the package generates, by its schema URL."""
    found = {}
    for info in pkgutil.iter_modules(generated.__path__):
        module = importlib.import_module(f"{generated.__name__}.{info.name}")
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and attr.has(value)
                and issubclass(value, BaseFacet)
                and value.__module__ == module.__name__
                and info.name != "base"
            ):
                found[value._get_schema()] = value
    return found


STANDARD = standard_facets()
for name in ("OutputStatisticsOutputDatasetFacet", "ErrorMessageRunFacet", "JobTypeJobFacet"):
    assert any(c.__name__ == name for c in STANDARD.values()), f"openlineage-python has no {name}"


def is_own(facet):
    return isinstance(facet, dict) and str(facet.get("_schemaURL", "")).startswith(OWN["$id"] + "#")


def check_own_facet(where, facet):
    url = facet["_schemaURL"]
    validator = jsonschema.Draft202012Validator(
        {"$ref": url}, registry=registry, format_checker=jsonschema.FormatChecker()
    )
    try:
        errors = list(validator.iter_errors(facet))
    except Exception as e:  # an unresolvable pointer: a facet this schema does not define
        raise Invalid(f"{where}: facet schema {url} is not in schemas/openlineage-facets.json ({type(e).__name__})")
    if errors:
        e = errors[0]
        raise Invalid(f"{where}: facet invalid against {url}: {e.message} at {list(e.path)}")
    check_uri(f"{where}._producer", facet["_producer"])


def check_uri(where, value):
    if not isinstance(value, str) or not validate_rfc3986(value, rule="URI"):
        raise Invalid(f"{where}: {value!r} is not a URI (RFC 3986)")


def convert(where, hint, value):
    """`value` (JSON) as the field type `hint` says: attrs classes built, enums looked up,
    lists and facet maps converted item by item; a JSON type other than the hint's fails."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) != 1:
            raise Invalid(f"{where}: the field's type {hint} is not one this checker knows")
        return convert(where, kinds[0], value)
    if hint is typing.Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected an array, got {value!r}")
        return [convert(f"{where}[{i}]", args[0], v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected an object, got {value!r}")
        return {k: convert(f"{where}.{k}", args[1], v) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, BaseFacet):
        return facet(where, hint, value)
    if isinstance(hint, type) and attr.has(hint):
        return build(where, hint, value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = [m.value for m in hint]
            raise Invalid(f"{where}: {value!r} is not one of {allowed}")
    if hint is int or hint is float:
        ok = isinstance(value, (int, float) if hint is float else int) and not isinstance(value, bool)
    else:
        ok = isinstance(hint, type) and isinstance(value, hint)
    if not ok:
        raise Invalid(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")
    return value


def facet(where, base, value):
    """A standard facet: the generated class its `_schemaURL` names, which must be of the
    kind the place allows (a run facet under run.facets, ...)."""
    if not isinstance(value, dict):
        raise Invalid(f"{where}: expected a facet object, got {value!r}")
    url = value.get("_schemaURL")
    cls = STANDARD.get(url)
    if cls is None:
        raise Invalid(f"{where}: facet schema {url!r} is not a standard facet of openlineage-python")
    if not issubclass(cls, base):
        raise Invalid(f"{where}: {cls.__name__} is not a {base.__name__}")
    return build(where, cls, value)


def build(where, cls, data):
    """An instance of the attrs class `cls` from the JSON object `data`: every key a field,
    every field without a default present (and a facet's `_producer`, an event's
    `producer`, which the spec requires though the class defaults them), each value
    converted to its field's type; `schemaURL`/`_schemaURL` must be the class's own."""
    if not isinstance(data, dict):
        raise Invalid(f"{where}: expected an object for {cls.__name__}, got {data!r}")
    fields = {f.name: f for f in attr.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise Invalid(f"{where}: {cls.__name__} has no field {unknown} (fields: {sorted(fields)})")
    required = {n for n, f in fields.items() if f.default is attr.NOTHING or not f.init}
    required |= {"producer", "_producer"} & set(fields)
    missing = sorted(required - set(data))
    if missing:
        raise Invalid(f"{where}: {cls.__name__} requires {missing}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        if not f.init:  # schemaURL / _schemaURL: set by the class itself
            if value != cls._get_schema():
                raise Invalid(f"{where}.{name}: {value!r} is not {cls.__name__}'s {cls._get_schema()}")
            continue
        kwargs[f.alias] = convert(f"{where}.{name}", hints[name], value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, OverflowError) as e:
        raise Invalid(f"{where}: {cls.__name__} refused it: {type(e).__name__}: {e}")


def own_facets(event):
    """(where, the facets map, key) of each cohort-sync facet of the event."""
    places = [("run.facets", event.get("run", {}).get("facets")), ("job.facets", event.get("job", {}).get("facets"))]
    for side in ("inputs", "outputs"):
        for i, ds in enumerate(event.get(side) or []):
            for group in ("facets", "inputFacets", "outputFacets"):
                places.append((f"{side}[{i}].{group}", ds.get(group) if isinstance(ds, dict) else None))
    for where, facets in places:
        if isinstance(facets, dict):
            for key, value in facets.items():
                if is_own(value):
                    yield f"{where}.{key}", facets, key


def check_event(event):
    if not isinstance(event, dict):
        raise Invalid(f"not a JSON object: {event!r}")
    standard = copy.deepcopy(event)
    for where, facets, key in list(own_facets(standard)):
        check_own_facet(where, facets[key])
        del facets[key]  # checked above; the rest is the package's to check
    built = build("event", RunEvent, standard)
    check_uri("event.producer", built.producer)
    check_uri("event.schemaURL", built.schemaURL)
    if not validate_rfc3339(built.eventTime):
        raise Invalid(f"event.eventTime: {built.eventTime!r} is not an RFC 3339 date-time")
    run_id = built.run.runId
    if str(uuid.UUID(run_id)) != run_id:
        raise Invalid(f"event.run.runId: {run_id!r} is not a canonical UUID (8-4-4-4-12 lower-case hex)")
    for where, facets in [("run.facets", built.run.facets), ("job.facets", built.job.facets)] + [
        (f"{side}[{i}].{group}", getattr(ds, group))
        for side in ("inputs", "outputs")
        for i, ds in enumerate(getattr(built, side) or [])
        for group in ("facets", "inputFacets", "outputFacets")
        if hasattr(ds, group)
    ]:
        for key, f in (facets or {}).items():
            if f._schemaURL != type(f)._get_schema():
                raise Invalid(f"{where}.{key}._schemaURL: {f._schemaURL!r} is not {type(f).__name__}'s")
            check_uri(f"{where}.{key}._producer", f._producer)
            check_uri(f"{where}.{key}._schemaURL", f._schemaURL)
    if built.schemaURL != RunEvent._get_schema():
        raise Invalid(f"event.schemaURL: {built.schemaURL!r} is not RunEvent's {RunEvent._get_schema()}")
    back = without_added_defaults(Serde.to_dict(built), standard)
    canon = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731 (1, 1.0 and true differ)
    if canon(back) != canon(standard):
        where, sent, got = first_difference("event", standard, back)
        raise Invalid(f"the round trip through openlineage-python changed {where}: sent {sent}, got back {got}")


def without_added_defaults(back, sent):
    """`back` less the keys `sent` does not have whose value is an empty map or list: the
    default a class gives an optional field the event left out (`inputFacets: {}` of an
    input, ...). Any other difference stays, for the comparison to see."""
    if isinstance(back, dict) and isinstance(sent, dict):
        return {
            k: without_added_defaults(v, sent.get(k))
            for k, v in back.items()
            if k in sent or v not in ({}, [])
        }
    if isinstance(back, list) and isinstance(sent, list) and len(back) == len(sent):
        return [without_added_defaults(b, s) for b, s in zip(back, sent)]
    return back


def first_difference(where, a, b):
    """(path, JSON of a there, JSON of b there) of the first place `a` and `b` differ."""
    canon = lambda v: json.dumps(v, sort_keys=True)  # noqa: E731
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b or canon(a[k]) != canon(b[k]):
                if k in a and k in b:
                    return first_difference(f"{where}.{k}", a[k], b[k])
                return f"{where}.{k}", canon(a.get(k, "(absent)")), canon(b.get(k, "(absent)"))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if canon(x) != canon(y):
                return first_difference(f"{where}[{i}]", x, y)
    return where, canon(a), canon(b)


def main(argv):
    events, rows = [], {}
    for n, line in enumerate(pathlib.Path(argv[1]).read_text().splitlines(), 1):
        if not line.strip():
            raise SystemExit(f"line {n} is empty")
        record = json.loads(line)
        event = record["event"] if "event" in record and "eventType" not in record else record
        try:
            check_event(event)
        except Invalid as e:
            raise SystemExit(f"event {n} invalid: {e}")
        for ds in event.get("outputs", []):
            if ds["namespace"] == "file" and ds["name"].endswith(".parquet"):
                rows[ds["name"]] = pq.ParquetFile(ds["name"]).metadata.num_rows
        events.append(record)
    print(json.dumps({"events": events, "parquet_rows": rows}))


if __name__ == "__main__":
    main(sys.argv)
