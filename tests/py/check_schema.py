"""Validates TOML pipeline files against schemas/pipeline.schema.json with an independent
validator (jsonschema). Usage: check_schema.py SCHEMA FILE...; prints `FILE: ok` or
`FILE: invalid: MESSAGE` per file."""
import json
import sys
import tomllib

import jsonschema

schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    errors = sorted(validator.iter_errors(doc), key=lambda e: e.path)
    if errors:
        print(f"{path}: invalid: {errors[0].message}")
    else:
        print(f"{path}: ok")
