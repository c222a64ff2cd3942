//! Server-side apply of desired objects and pruning of owned objects no longer desired.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::{Api, Client};

use crate::desired::{Capabilities, ChildKind, Desired};
use crate::{Error, FIELD_MANAGER, Result, labels};

/// Apply every desired object in order with one field manager (forcing ownership, as controllers
/// should). Returns the Deployment as the API server stored it, when one was applied.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: &Desired,
) -> Result<Option<Deployment>> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut deployment = None;
    for obj in &desired.objects {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &obj.kind.api_resource());
        let applied = api
            .patch(&obj.name, &params, &Patch::Apply(&obj.body))
            .await
            .map_err(|source| Error::Apply {
                kind: obj.kind.as_str().to_owned(),
                name: obj.name.clone(),
                source: Box::new(source),
            })?;
        if obj.kind == ChildKind::Deployment {
            let value = serde_json::to_value(&applied).map_err(|source| Error::Serialize {
                what: "applied Deployment".into(),
                source,
            })?;
            deployment =
                Some(
                    serde_json::from_value(value).map_err(|source| Error::Serialize {
                        what: "applied Deployment".into(),
                        source,
                    })?,
                );
        }
    }
    Ok(deployment)
}

/// Delete objects labelled as owned by `owner` (and carrying its uid in an owner reference) that
/// are not in `desired`. Kinds whose CRD is missing are not listed. Returns what was deleted.
pub async fn prune(
    client: &Client,
    namespace: &str,
    owner: &str,
    owner_uid: &str,
    desired: &Desired,
    capabilities: &Capabilities,
) -> Result<Vec<(ChildKind, String)>> {
    let keep: BTreeSet<(ChildKind, &str)> = desired
        .objects
        .iter()
        .map(|o| (o.kind, o.name.as_str()))
        .collect();
    let selector = labels::owned_selector(owner);
    let mut deleted = Vec::new();
    for kind in ChildKind::ALL {
        if kind
            .required_crd()
            .is_some_and(|crd| !capabilities.has(crd))
        {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::Read {
                what: format!("{} list in {namespace}", kind.as_str()),
                source: Box::new(source),
            })?;
        for item in list.items {
            let Some(name) = item.metadata.name.clone() else {
                continue;
            };
            let owned = item
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|r| r.uid == owner_uid && r.controller == Some(true));
            if !owned || keep.contains(&(kind, name.as_str())) {
                continue;
            }
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => deleted.push((kind, name)),
                Err(e) if crate::error::is_not_found(&e) => {}
                Err(source) => {
                    return Err(Error::Prune {
                        kind: kind.as_str().to_owned(),
                        name,
                        source: Box::new(source),
                    });
                }
            }
        }
    }
    Ok(deleted)
}
