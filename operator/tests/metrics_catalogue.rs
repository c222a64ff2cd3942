//! docs/metrics.md lists exactly the operator's metric families: every collector registered by
//! `Metrics::new` (label vectors included before they have a child) with its type and label
//! names, and nothing else. The runtime's half is checked against a real scrape by
//! `tests/alerts/e2e.sh` (`tests/metrics/catalogue.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use facekey_operator::metrics::Metrics;

/// `name -> (type, labels)` of the table rows under `## Operator` in docs/metrics.md.
fn catalogue() -> BTreeMap<String, (String, Vec<String>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut section = String::new();
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.trim().to_lowercase();
            continue;
        }
        if section != "operator" || !line.starts_with("| `") {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(
            cells.len(),
            5,
            "row needs metric|type|labels|unit|meaning: {line}"
        );
        assert!(
            !cells[3].is_empty() && !cells[4].is_empty(),
            "unit or meaning missing: {line}"
        );
        let name = cells[0].trim_matches('`').to_owned();
        let labels = cells[2]
            .split(',')
            .map(|l| l.trim().trim_matches('`').to_owned())
            .filter(|l| !l.is_empty() && l != "–")
            .collect();
        rows.insert(name, (cells[1].to_owned(), labels));
    }
    assert!(!rows.is_empty(), "no rows under '## Operator' in {path:?}");
    rows
}

#[test]
fn docs_metrics_md_lists_exactly_the_operator_metrics() {
    let documented = catalogue();
    let registered: BTreeMap<String, (String, Vec<String>)> = Metrics::new()
        .unwrap()
        .describe()
        .into_iter()
        .map(|f| (f.name, (f.kind.to_owned(), f.labels)))
        .collect();
    let mut problems = Vec::new();
    for (name, (kind, labels)) in &registered {
        match documented.get(name) {
            None => problems.push(format!("registered but not in docs/metrics.md: {name}")),
            Some((k, l)) if k != kind || l != labels => problems.push(format!(
                "{name}: docs say {k} {l:?}, registered {kind} {labels:?}"
            )),
            Some(_) => {}
        }
    }
    for name in documented.keys().filter(|n| !registered.contains_key(*n)) {
        problems.push(format!("in docs/metrics.md but not registered: {name}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
