"""Parses Prometheus text exposition format with the official Python client's parser.

Usage: prometheus_parse.py < metrics.txt

Reads the text on stdin with prometheus_client.parser.text_string_to_metric_families and prints
one JSON object: {"families": [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}]}.
The parser names a counter family without its `_total` suffix and leaves a sample that belongs to
no preceding `# TYPE` (a family split in two, a misnamed sample) as an `untyped` family of its own.
Exits 1 with the parser's error when the text does not parse.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
try:
    families = [
        {
            "name": f.name,
            "type": f.type,
            "help": f.documentation,
            "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples],
        }
        for f in text_string_to_metric_families(text)
    ]
except Exception as e:  # the parser raises ValueError and others on malformed lines
    print(f"does not parse: {e!r}", file=sys.stderr)
    sys.exit(1)
json.dump({"families": families}, sys.stdout)
