#!/usr/bin/env python3
"""Parses Prometheus exposition text on stdin with prometheus_client's own parser, and checks
what the parser alone does not: the families are ollama-auth's, each histogram's buckets are
cumulative and end with +Inf equal to its _count. Prints a summary; exits 1 on any problem.

    python3 tests/check_exposition.py [--show-labels] < metrics.txt

Needs `pip install prometheus_client`. Not part of the test suite.
"""

import math
import sys
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families

EXPECTED = {
    # family name as the parser reports it (counters lose `_total`) -> type
    "ollama_auth_requests": "counter",
    "ollama_auth_prompt_tokens": "counter",
    "ollama_auth_completion_tokens": "counter",
    "ollama_auth_estimated_tokens": "counter",
    "ollama_auth_refused": "counter",
    "ollama_auth_request_duration_seconds": "histogram",
}
LABELS = {
    "ollama_auth_requests": {"user", "model", "code"},
    "ollama_auth_prompt_tokens": {"user", "model"},
    "ollama_auth_completion_tokens": {"user", "model"},
    "ollama_auth_estimated_tokens": {"user", "model"},
    "ollama_auth_refused": {"reason"},
}


def main():
    show_labels = "--show-labels" in sys.argv[1:]
    text = sys.stdin.buffer.read().decode("utf-8")
    problems = []
    seen = {}
    samples = 0
    for family in text_string_to_metric_families(text):
        name = family.name[: -len("_total")] if family.name.endswith("_total") else family.name
        if name in seen:
            problems.append(f"family {name} appears twice")
        seen[name] = family.type
        if EXPECTED.get(name) != family.type:
            problems.append(f"unexpected family {family.name} of type {family.type}")
        series = set()
        histograms = defaultdict(dict)
        for sample in family.samples:
            samples += 1
            labels = dict(sample.labels)
            if show_labels:
                print(f"{sample.name} {labels!r} {sample.value!r}")
            if not math.isfinite(sample.value) or sample.value < 0:
                problems.append(f"{sample.name} {labels}: value {sample.value}")
            key = (sample.name, tuple(sorted(labels.items())))
            if key in series:
                problems.append(f"duplicate series {key}")
            series.add(key)
            if family.type == "histogram":
                le = labels.pop("le", None)
                part = sample.name[len(family.name) :]
                histograms[tuple(sorted(labels.items()))][(part, le)] = sample.value
                if set(labels) != {"model"}:
                    problems.append(f"{sample.name}: labels {sorted(labels)}")
            elif name in LABELS and set(labels) != LABELS[name]:
                problems.append(f"{sample.name}: labels {sorted(labels)}")
        for labels, parts in histograms.items():
            buckets = [(float(le), value) for (part, le), value in parts.items() if part == "_bucket"]
            buckets.sort()
            values = [value for _, value in buckets]
            if not buckets or buckets[-1][0] != math.inf:
                problems.append(f"{labels}: no +Inf bucket")
            elif values != sorted(values):
                problems.append(f"{labels}: buckets not cumulative {values}")
            elif parts.get(("_count", None)) != values[-1]:
                problems.append(f"{labels}: _count {parts.get(('_count', None))} != +Inf {values[-1]}")
            if ("_sum", None) not in parts:
                problems.append(f"{labels}: no _sum")
    for name in EXPECTED:
        if name not in seen:
            problems.append(f"family {name} missing")
    for problem in problems[:50]:
        print("PROBLEM:", problem, file=sys.stderr)
    print(f"{len(seen)} families, {samples} samples, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
