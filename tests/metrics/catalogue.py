#!/usr/bin/env python3
"""Compare a section of docs/metrics.md with a real Prometheus text exposition.

usage: catalogue.py SECTION CATALOGUE.md SCRAPE.txt     (SECTION: runtime)

Fails (exit 1, listing every difference) when the scrape has a metric family the catalogue lacks,
the catalogue lists one the scrape does not have, or a family's type or label names differ.
Label names are the union over the family's samples, without `le` and `quantile`.
"""

import re
import sys

ROW = re.compile(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|\s*([a-z]+)\s*\|([^|]*)\|([^|]*)\|([^|]*)\|\s*$")


def catalogue(path, section):
    """{name: (type, frozenset(labels))} of the table under `## <Section>`."""
    out, current = {}, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("## "):
            current = line[3:].strip().lower()
            continue
        if current != section:
            continue
        m = ROW.match(line.strip())
        if not m:
            continue
        name, kind, labels, unit, meaning = m.groups()
        if not unit.strip() or not meaning.strip():
            sys.exit(f"{path}: {name} lacks a unit or a meaning")
        out[name] = (kind, frozenset(re.findall(r"`([a-zA-Z_][a-zA-Z0-9_]*)`", labels)))
    if not out:
        sys.exit(f"{path}: no table rows under '## {section.title()}'")
    return out


def scrape(path):
    """{family: (type, frozenset(labels))} from the text exposition."""
    types, labels = {}, {}
    for line in open(path, encoding="utf-8"):
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
            labels.setdefault(name, set())
        elif line.strip() and not line.startswith("#"):
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?", line)
            series = m.group(1)
            family = next(
                (f for f in (series, re.sub(r"_(bucket|sum|count)$", "", series)) if f in types),
                None,
            )
            if family is None:
                sys.exit(f"sample {series} has no # TYPE line")
            for pair in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(3) or ""):
                if pair not in ("le", "quantile"):
                    labels[family].add(pair)
    return {n: (types[n], frozenset(labels[n])) for n in types}


def main():
    section, cat_path, scrape_path = sys.argv[1:4]
    documented, exposed = catalogue(cat_path, section), scrape(scrape_path)
    problems = []
    for name in sorted(set(exposed) - set(documented)):
        problems.append(f"exposed but not in {cat_path}: {name} ({exposed[name][0]}, labels {sorted(exposed[name][1])})")
    for name in sorted(set(documented) - set(exposed)):
        problems.append(f"in {cat_path} but not exposed: {name}")
    for name in sorted(set(documented) & set(exposed)):
        if documented[name][0] != exposed[name][0]:
            problems.append(f"{name}: catalogue says {documented[name][0]}, exposition says {exposed[name][0]}")
        if documented[name][1] != exposed[name][1]:
            problems.append(f"{name}: catalogue labels {sorted(documented[name][1])}, exposed {sorted(exposed[name][1])}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{len(exposed)} {section} metric families match {cat_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
