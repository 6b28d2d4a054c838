"""Parses a `--metrics-file` with prometheus_client's text parser (the Prometheus text
format as the official Python client reads it), independently of the code under test,
and prints JSON: {"families": {name: {"type", "help", "samples": [{"labels", "value"}]}}}.
A line the parser refuses fails the script (and so the test).

usage: parse_metrics.py FILE
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main(argv):
    with open(argv[1], encoding="utf-8") as f:
        text = f.read()
    families = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in families:
            raise SystemExit(f"metric family {fam.name} appears twice")
        families[fam.name] = {
            "type": fam.type,
            "help": fam.documentation,
            "samples": [{"labels": s.labels, "value": s.value} for s in fam.samples],
        }
    print(json.dumps({"families": families}))


if __name__ == "__main__":
    main(sys.argv)
