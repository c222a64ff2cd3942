//! API calls and reconciles per change, with the controller's watch triggers replayed
//! (`common::replay`) over the server-side-apply harness (`common::ssa`), where a write that
//! changes nothing is no write. Asserts that every change settles, that the operator's own status
//! writes queue no reconcile, that status churn it does not read costs nothing, and that a
//! steady-state reconcile reads one list per child kind and no child one by one. The benchmark
//! (`cargo bench -p facekey-operator --bench reconcile`) prints the same costs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::replay::{Cost, standard_changes};

fn find<'a>(costs: &'a [(&str, Cost)], what: &str) -> &'a Cost {
    &costs.iter().find(|(w, _)| w.starts_with(what)).unwrap().1
}

#[tokio::test]
async fn every_change_settles_and_status_churn_costs_nothing() {
    let costs = standard_changes(6).await;
    for (what, cost) in &costs {
        println!("{what:<45} {}", cost.line());
        assert!(cost.settled, "{what}: kept re-queueing itself: {cost:?}");
    }

    let created = find(&costs, "resource created");
    assert_eq!(
        created.reconciles, 2,
        "creation, then once for the children it created: {created:?}"
    );
    let rolled_out = find(&costs, "Deployment rolled out");
    assert_eq!(
        rolled_out.reconciles, 1,
        "Ready turns True in one reconcile; its own status write queues none: {rolled_out:?}"
    );
    let resync = find(&costs, "periodic requeue");
    assert_eq!(resync.reconciles, 1, "{resync:?}");
    assert!(
        !resync
            .calls
            .keys()
            .any(|k| k.contains("facekeydeployments/status") || k.contains("events")),
        "a steady-state reconcile writes no status and no Event: {resync:?}"
    );
    let single_gets: Vec<_> = resync
        .calls
        .keys()
        .filter(|k| k.starts_with("GET ") && *k != "GET deployments")
        .collect();
    assert!(
        single_gets.is_empty(),
        "ownership comes from the listed inventory, not a GET per child: {single_gets:?}"
    );
    // Every child kind is listed once per reconcile (the inventory), the sidecars' PodMonitor
    // included, and nothing is listed twice.
    for kind in [
        "configmaps",
        "deployments",
        "services",
        "servicemonitors",
        "podmonitors",
        "prometheusrules",
        "alertmanagerconfigs",
    ] {
        assert_eq!(
            resync.calls.get(&format!("LIST {kind}")).copied(),
            Some(1),
            "{kind}: {resync:?}"
        );
    }
    assert_eq!(
        resync.calls.get("PATCH podmonitors").copied(),
        Some(1),
        "the PodMonitor is applied like every other child: {resync:?}"
    );
    assert!(
        created.calls.contains_key("PATCH podmonitors"),
        "{created:?}"
    );
    let hpa_status = find(&costs, "HPA status written");
    assert_eq!(hpa_status.reconciles, 0, "{hpa_status:?}");
    let threshold = find(&costs, "spec change");
    assert!(
        threshold.writes() > 0 && threshold.reconciles <= 2,
        "{threshold:?}"
    );
}
