//! A replica that lost the leader Lease stops reconciling before any write: no child, Job or
//! status update reaches the API once `leading` turns false.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{harness, test_context};
use facekey_operator::Error;
use facekey_operator::reconcile;
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;

#[tokio::test]
async fn a_replica_that_lost_the_lease_writes_nothing() {
    let h = harness(&[]).await;
    h.create(
        "app",
        json!({"image": "ghcr.io/acme/facekey:1.0", "scanGate": {"enabled": false}}),
    )
    .await;
    let (leading_tx, leading_rx) = tokio::sync::watch::channel(true);
    let ctx = Arc::new(test_context(&h.client, &h.clock).with_leadership(leading_rx));
    leading_tx.send(false).unwrap();
    let fkd = h.get("app").await;
    let err = reconcile::reconcile(Arc::new(fkd), ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotLeader), "{err}");
    assert!(
        h.api::<Deployment>()
            .get_opt("app")
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.jobs().await.is_empty());
    assert!(h.get("app").await.status.is_none(), "no status written");

    // Leading again (a new term), the same reconcile proceeds.
    leading_tx.send(true).unwrap();
    let fkd = h.get("app").await;
    reconcile::reconcile(Arc::new(fkd), ctx).await.unwrap();
    assert!(
        h.api::<Deployment>()
            .get_opt("app")
            .await
            .unwrap()
            .is_some()
    );
}
