//! Server-side apply of desired objects, and pruning of owned objects no longer desired (children
//! and finished scan Jobs of other images).

use std::collections::{BTreeMap, BTreeSet};

use facekey_crds::FaceKeyDeployment;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;

use crate::desired::{
    ADMIN_KEY, Capabilities, ChildKind, Desired, GENERATED_API_KEY_ID, GeneratedContent,
    GeneratedSecret,
};
use crate::error::{ApplyError, PruneError, ReadError, is_not_found, is_refusal};
use crate::{FIELD_MANAGER, labels};

/// What [`apply_all`] applied.
#[derive(Debug, Default)]
pub struct Applied {
    /// The runtime Deployment as the API server stored it, when one was applied.
    pub deployment: Option<Deployment>,
    /// The refusal of the template store's claim or CloudNativePG `Cluster`, when the API server
    /// refused one ([`apply_all`]): every other object was still applied.
    pub refused_store: Option<ApplyError>,
}

/// Apply every desired object in order with one field manager (forcing ownership, as controllers
/// should).
///
/// The first failure stops the rest, except the template store's volume claim or CloudNativePG
/// `Cluster` refused by the API server or an admission webhook (a claim's shrunk size, changed
/// storage class or class that cannot expand: claims are mostly immutable; CloudNativePG's
/// webhook refusing a shrunk `storage.size`): the runtime keeps the claim or database it has, so
/// the objects after it, the Deployment above all, are still applied and a new image (a security
/// fix) still rolls out. The refusal comes back in [`Applied::refused_store`], for the status.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    desired: &Desired,
) -> Result<Applied, ApplyError> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut applied_all = Applied::default();
    for obj in &desired.objects {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &obj.kind.api_resource());
        let applied = match api
            .patch(&obj.name, &params, &Patch::Apply(&obj.body))
            .await
        {
            Ok(applied) => applied,
            Err(source) => {
                let store = matches!(
                    obj.kind,
                    ChildKind::PersistentVolumeClaim | ChildKind::PostgresCluster
                );
                let refused = store && is_refusal(&source);
                let error = ApplyError::Patch {
                    kind: obj.kind.as_str(),
                    name: obj.name.clone(),
                    source: Box::new(source),
                };
                if refused {
                    // The first refusal is the one reported.
                    applied_all.refused_store.get_or_insert(error);
                    continue;
                }
                return Err(error);
            }
        };
        if obj.kind == ChildKind::Deployment {
            let decode = |source| ApplyError::Decode {
                what: "applied Deployment".into(),
                source,
            };
            let value = serde_json::to_value(&applied).map_err(decode)?;
            applied_all.deployment = Some(serde_json::from_value(value).map_err(decode)?);
        }
    }
    Ok(applied_all)
}

/// Field manager of the one-off apply that hands the runtime Deployment's `spec.replicas` to the
/// HorizontalPodAutoscaler (see [`hand_over_replicas`]).
pub const HANDOVER_FIELD_MANAGER: &str = "facekey-operator-handover";

/// Whether `manager`'s server-side apply owns `spec.replicas` of `deployment` (from its
/// `metadata.managedFields`).
pub fn applies_replicas(deployment: &Deployment, manager: &str) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|e| {
            e.manager.as_deref() == Some(manager)
                && e.operation.as_deref() == Some("Apply")
                && e.subresource.as_deref().unwrap_or_default().is_empty()
                && e.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
}

/// `count` within the desired HorizontalPodAutoscaler's `minReplicas` (1 when unset, as the
/// API server defaults it) and `maxReplicas`; `count` when none is desired.
fn within_autoscaling_bounds(desired: &Desired, count: i32) -> i32 {
    let Some(hpa) = desired
        .objects
        .iter()
        .find(|o| o.kind == ChildKind::HorizontalPodAutoscaler)
    else {
        return count;
    };
    let bound = |field: &str| {
        hpa.body
            .pointer(&format!("/spec/{field}"))
            .and_then(serde_json::Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
    };
    let min = bound("minReplicas").unwrap_or(1).max(1);
    let max = bound("maxReplicas").unwrap_or(i32::MAX).max(min);
    count.clamp(min, max)
}

/// Hand `spec.replicas` of the runtime Deployment over to the autoscaler without a capacity dip,
/// as the Kubernetes server-side-apply documentation describes ("Transferring ownership").
///
/// When the desired Deployment leaves `replicas` out (autoscaling) while our field manager still
/// owns it, the next apply would make the API server remove the field (its only manager dropped
/// it) and default it to 1. So first the live count is applied once under a separate manager
/// ([`HANDOVER_FIELD_MANAGER`], not forced); the main apply then drops the field and it stays,
/// owned by the hand-over manager until the HPA controller writes it through `/scale` and takes
/// it. A 409 means another manager (the HPA) already owns it with another value: nothing to hand
/// over. The count is brought within the HorizontalPodAutoscaler's bounds: the HPA controller
/// never scales a target standing at 0 (`ScalingDisabled`), so a resource scaled to zero and
/// then autoscaled would otherwise stay at zero pods. Returns the count handed over, if any.
pub async fn hand_over_replicas(
    client: &Client,
    namespace: &str,
    desired: &Desired,
    live: Option<&Deployment>,
) -> Result<Option<i32>, ApplyError> {
    let Some(obj) = desired
        .objects
        .iter()
        .find(|o| o.kind == ChildKind::Deployment)
    else {
        return Ok(None);
    };
    let Some(live) = live else {
        return Ok(None);
    };
    if obj.body.pointer("/spec/replicas").is_some() || !applies_replicas(live, FIELD_MANAGER) {
        return Ok(None);
    }
    let live_count = live.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let replicas = within_autoscaling_bounds(desired, live_count);
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": obj.name},
        "spec": {"replicas": replicas},
    });
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    match api
        .patch(
            &obj.name,
            // A count brought within the bounds differs from the one our own manager applied,
            // which a plain apply would conflict with: it is taken from it by force. (Another
            // manager owning a different count already answered the plain apply with a 409.)
            &if replicas == live_count {
                PatchParams::apply(HANDOVER_FIELD_MANAGER)
            } else {
                PatchParams::apply(HANDOVER_FIELD_MANAGER).force()
            },
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => Ok(Some(replicas)),
        Err(e) if crate::error::is_conflict(&e) => Ok(None),
        Err(source) => Err(ApplyError::Patch {
            kind: "Deployment",
            name: obj.name.clone(),
            source: Box::new(source),
        }),
    }
}

/// The children of one resource that exist, read once per reconcile by its owner label (metadata
/// only): the ownership check and the pruner both use it, so a steady-state reconcile reads one
/// list per kind and no object one by one.
#[derive(Debug, Default)]
pub struct Inventory {
    /// Kinds that were listed (prunable, CRD installed).
    listed: BTreeSet<ChildKind>,
    /// Each listed object with its controller owner references.
    objects: BTreeMap<(ChildKind, String), Vec<OwnerReference>>,
}

impl Inventory {
    /// How `name` of `kind` stands to the resource ([`standing`]; `None`: not listed).
    fn standing(
        &self,
        kind: ChildKind,
        name: &str,
        owner_uid: &str,
        instance: &str,
    ) -> Option<Standing> {
        self.objects
            .get(&(kind, name.to_owned()))
            .map(|refs| standing(refs, owner_uid, instance))
    }
}

/// How an existing object with a child's name stands to the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Controlled by this resource (or, for a retained claim or Cluster, labelled for it).
    Owned,
    /// Controlled by a FaceKeyDeployment of this name with another uid: one deleted before this
    /// one was created under its name, whose children the garbage collector is removing (a
    /// claim waits for its pods to go). Not taken over; the reconcile retries soon.
    Predecessor,
    /// Someone else's: never taken over.
    Foreign,
}

/// The [`Standing`] of an object whose controller owner references are `refs` (only those with
/// `controller: true` count) to the resource `instance` with uid `owner_uid`. Names are unique
/// in a namespace and owners must be in their dependents' namespace, so a FaceKeyDeployment
/// controller of this name with another uid no longer exists.
pub fn standing(refs: &[OwnerReference], owner_uid: &str, instance: &str) -> Standing {
    let controllers: Vec<&OwnerReference> =
        refs.iter().filter(|r| r.controller == Some(true)).collect();
    if controllers.iter().any(|r| r.uid == owner_uid) {
        Standing::Owned
    } else if !controllers.is_empty()
        && controllers.iter().all(|r| {
            r.kind == <FaceKeyDeployment as kube::Resource>::kind(&())
                && r.name == instance
                && r.api_version.starts_with("facekey.dev/")
        })
    {
        Standing::Predecessor
    } else {
        Standing::Foreign
    }
}

/// List the labelled children of `owner` of every prunable kind whose CRD is installed.
pub async fn inventory(
    client: &Client,
    namespace: &str,
    owner: &str,
    capabilities: &Capabilities,
) -> Result<Inventory, ReadError> {
    let selector = labels::owned_selector(owner);
    let mut inv = Inventory::default();
    for kind in ChildKind::ALL {
        if !kind.prunable()
            || kind
                .required_crd()
                .is_some_and(|crd| !capabilities.has(crd))
        {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        let list = api
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .map_err(ReadError::of(format!(
                "{} list in {namespace}",
                kind.as_str()
            )))?;
        inv.listed.insert(kind);
        for item in list.items {
            let Some(name) = item.metadata.name else {
                continue;
            };
            let controllers = item
                .metadata
                .owner_references
                .into_iter()
                .flatten()
                .filter(|r| r.controller == Some(true))
                .collect();
            inv.objects.insert((kind, name), controllers);
        }
    }
    Ok(inv)
}

/// The desired objects that already exist without `owner_uid` as their controller owner (made by
/// someone else, or left by a deleted resource of the same name): they must not be taken over.
/// `live` is the runtime Deployment the observe stage read and `inventory` the labelled children
/// (no second read); only a desired object missing from the inventory is read, since it may exist
/// without the operator's labels.
///
/// The template store's claim and CloudNativePG `Cluster` are usually retained (no owner
/// reference, `store.retainOnDelete`): they count as this resource's when they carry the
/// operator's labels for `instance` and no other controller, so a FaceKeyDeployment recreated
/// under the same name adopts its data; one without those labels is someone else's (see
/// [`store_object_owned`]).
pub async fn not_owned(
    client: &Client,
    namespace: &str,
    instance: &str,
    owner_uid: &str,
    desired: &Desired,
    live: Option<&Deployment>,
    inventory: &Inventory,
) -> Result<Vec<(ChildKind, String, Standing)>, ApplyError> {
    let mut foreign = Vec::new();
    for obj in &desired.objects {
        let standing_of = |refs: Option<&Vec<OwnerReference>>| {
            standing(refs.map_or(&[][..], Vec::as_slice), owner_uid, instance)
        };
        let owned = match obj.kind {
            ChildKind::PersistentVolumeClaim | ChildKind::PostgresCluster => {
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), namespace, &obj.kind.api_resource());
                match store_object_owned(&api, &obj.name, instance, owner_uid).await {
                    Ok(Some(owned)) => owned,
                    Ok(None) => continue,
                    Err(source) => {
                        return Err(ApplyError::Patch {
                            kind: obj.kind.as_str(),
                            name: obj.name.clone(),
                            source: Box::new(source),
                        });
                    }
                }
            }
            ChildKind::Deployment => match live {
                Some(d) => standing_of(d.metadata.owner_references.as_ref()),
                None => continue,
            },
            kind => match inventory.standing(kind, &obj.name, owner_uid, instance) {
                Some(owned) => owned,
                None => {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
                    match api.get_metadata_opt(&obj.name).await {
                        Ok(Some(meta)) => standing_of(meta.metadata.owner_references.as_ref()),
                        Ok(None) => continue,
                        Err(source) => {
                            return Err(ApplyError::Patch {
                                kind: kind.as_str(),
                                name: obj.name.clone(),
                                source: Box::new(source),
                            });
                        }
                    }
                }
            },
        };
        if owned != Standing::Owned {
            foreign.push((obj.kind, obj.name.clone(), owned));
        }
    }
    Ok(foreign)
}

/// Whether `refs` name `owner_uid` as the controller.
pub(crate) fn controlled_by(refs: Option<&Vec<OwnerReference>>, owner_uid: &str) -> bool {
    refs.into_iter()
        .flatten()
        .any(|r| r.uid == owner_uid && r.controller == Some(true))
}

/// How the store object `name` (claim or CloudNativePG `Cluster`) stands to this resource:
/// `None` when it does not exist; [`Standing::Owned`] when it carries the operator's labels for
/// `instance` ([`labels::labelled_for`]) and no controller owner other than `owner_uid`;
/// [`Standing::Predecessor`] when a deleted resource of this name still controls it.
///
/// The operator may only create and patch claims (no `get`, `list` or `watch` on them: it
/// never reads them beyond this), so the labels are checked by the API server: a JSON patch
/// (RFC 6902) made of `test` operations only. It changes nothing, so the server writes nothing;
/// a missing object answers 404, a failed test 422, and a passed one returns the object, whose
/// owner references are then checked. A `Cluster` is checked the same way, one path for both
/// kinds, although the operator may `get` Clusters (the observe stage reads their status).
async fn store_object_owned(
    api: &Api<DynamicObject>,
    name: &str,
    instance: &str,
    owner_uid: &str,
) -> Result<Option<Standing>, kube::Error> {
    let ops = labels::identity_labels(instance)
        .into_iter()
        .map(|(label, value)| {
            json_patch::PatchOperation::Test(json_patch::TestOperation {
                path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "labels", label]),
                value: serde_json::Value::String(value),
            })
        })
        .collect();
    let patch = Patch::<()>::Json(json_patch::Patch(ops));
    match api.patch(name, &PatchParams::default(), &patch).await {
        Ok(obj) => {
            let refs = obj.metadata.owner_references.unwrap_or_default();
            let labelled = labels::labelled_for(&obj.metadata.labels.unwrap_or_default(), instance);
            let other_controller = refs
                .iter()
                .any(|r| r.controller == Some(true) && r.uid != owner_uid);
            Ok(Some(match standing(&refs, owner_uid, instance) {
                Standing::Predecessor => Standing::Predecessor,
                _ if labelled && !other_controller => Standing::Owned,
                _ => Standing::Foreign,
            }))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(kube::Error::Api(s)) if s.code == 422 => Ok(Some(Standing::Foreign)),
        Err(e) => Err(e),
    }
}

/// Create each generated Secret that does not exist yet, with fresh random content; an existing
/// one (made by an earlier reconcile, or by a human) is never read, replaced or updated. Needs
/// only `create` on Secrets. Returns the ones created.
pub async fn create_generated_secrets<'d>(
    client: &Client,
    namespace: &str,
    desired: &'d Desired,
) -> Result<Vec<&'d GeneratedSecret>, ApplyError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut created = Vec::new();
    for generated in &desired.generated_secrets {
        let mut secret: Secret =
            serde_json::from_value(generated.body.clone()).map_err(|source| {
                ApplyError::Decode {
                    what: format!("Secret {}", generated.name),
                    source,
                }
            })?;
        let failed = |source| ApplyError::KeyGeneration {
            name: generated.name.clone(),
            source,
        };
        let data = match generated.content {
            GeneratedContent::TemplateKey => BTreeMap::from([(
                generated.key.clone(),
                new_template_key_line(GENERATED_KEY_ID).map_err(failed)?,
            )]),
            GeneratedContent::ApiKeys => {
                let key = new_api_key().map_err(failed)?;
                BTreeMap::from([
                    (
                        generated.key.clone(),
                        api_key_line(GENERATED_API_KEY_ID, "admin", &key),
                    ),
                    (ADMIN_KEY.to_owned(), key),
                ])
            }
        };
        secret.data = Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        );
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => created.push(generated),
            Err(e) if is_already_exists(&e) => {}
            Err(source) => {
                return Err(ApplyError::Create {
                    kind: "Secret",
                    name: generated.name.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(created)
}

/// Key id of a generated template key.
pub const GENERATED_KEY_ID: &str = "k1";

/// A template key file line `<id>:<64 hex digits>` (32 random bytes from the operating system),
/// the format `facekey-runtime --new-template-key` prints.
pub fn new_template_key_line(id: &str) -> Result<String, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{id}:{hex}\n"))
}

/// Prefix of API keys, as the runtime generates them (secret scanners recognise it).
pub const API_KEY_PREFIX: &str = "fk_";

/// A new API key in the runtime's format: `fk_` and 32 random bytes from the operating system
/// in unpadded base64url (43 characters).
pub fn new_api_key() -> Result<String, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(format!("{API_KEY_PREFIX}{}", base64url(&key)))
}

/// The keys-file line of `key`: `<id>:<scopes>:<hex SHA-256 of the key's UTF-8 bytes>`, newline
/// terminated. Only the hash reaches the file the runtime reads.
pub fn api_key_line(id: &str, scopes: &str, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{id}:{scopes}:{hex}\n")
}

/// Unpadded base64url (RFC 4648 section 5), small enough not to need a crate.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A create refused because the object exists. Other 409s (a ResourceQuota's update conflict)
/// are failures: the Secret was not created.
fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Delete the inventory's objects controlled by `owner_uid` that are not in `desired`. Kinds whose
/// CRD is missing were not listed. Returns what was deleted.
pub async fn prune(
    client: &Client,
    namespace: &str,
    owner_uid: &str,
    desired: &Desired,
    inventory: &Inventory,
) -> Result<Vec<(ChildKind, String)>, PruneError> {
    let keep: BTreeSet<(ChildKind, &str)> = desired
        .objects
        .iter()
        .map(|o| (o.kind, o.name.as_str()))
        .collect();
    let mut deleted = Vec::new();
    for ((kind, name), controllers) in &inventory.objects {
        let owned = controllers.iter().any(|r| r.uid == owner_uid);
        if !owned || keep.contains(&(*kind, name.as_str())) {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &kind.api_resource());
        match delete_if_present(&api, name).await {
            Ok(true) => deleted.push((*kind, name.clone())),
            Ok(false) => {}
            Err(source) => {
                return Err(PruneError::Delete {
                    kind: kind.as_str(),
                    name: name.clone(),
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(deleted)
}

/// Delete finished scan Jobs of `owner` (uid `owner_uid`) for images other than those in `keep`
/// (`spec.image`, and the running image whose rescan Job may hold a failed attempt's retry wait;
/// the status keeps their verdict). Returns the names deleted.
///
/// Jobs are found by the operator's labels but deleted only when this resource is their
/// controller owner, as [`prune`] does: labels are anyone's to set, so a Job someone else made
/// (or copied) with them is never deleted.
pub async fn prune_scan_jobs(
    client: &Client,
    namespace: &str,
    owner: &str,
    owner_uid: &str,
    keep: &[&str],
) -> Result<Vec<String>, PruneError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let list = jobs
        .list(&ListParams::default().labels(&format!(
            "{},app.kubernetes.io/component=scan",
            labels::owned_selector(owner)
        )))
        .await
        .map_err(ReadError::of(format!("scan Jobs in {namespace}")))?;
    let mut deleted = Vec::new();
    for job in list.items {
        if !controlled_by(job.metadata.owner_references.as_ref(), owner_uid) {
            continue;
        }
        let image = job.annotations().get(labels::SCAN_IMAGE_ANNOTATION);
        let finished = job.status.as_ref().is_some_and(|s| {
            s.succeeded.unwrap_or(0) > 0
                || s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Failed" && c.status == "True")
        });
        if finished && !image.is_some_and(|i| keep.contains(&i.as_str())) {
            let name = job.name_any();
            if delete_if_present(&jobs, &name)
                .await
                .map_err(|source| PruneError::ScanJob {
                    name: name.clone(),
                    source: Box::new(source),
                })?
            {
                deleted.push(name);
            }
        }
    }
    Ok(deleted)
}

/// Delete `name` in the background; `false` when it was already gone.
pub(crate) async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<bool, kube::Error>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn base64url_matches_rfc_4648_vectors() {
        // RFC 4648 section 10, without padding, and the two URL-safe characters.
        for (input, want) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(input.as_bytes()), want, "{input:?}");
        }
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn api_keys_have_the_runtime_format_and_hash_line() {
        let key = new_api_key().unwrap();
        let body = key.strip_prefix("fk_").unwrap();
        assert_eq!(body.len(), 43, "{key}");
        assert!(
            body.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(key, new_api_key().unwrap());
        // sha256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            api_key_line("admin", "admin", "abc"),
            "admin:admin:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
        );
    }

    fn owner(kind: &str, name: &str, uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: if kind == "FaceKeyDeployment" {
                "facekey.dev/v1alpha1".into()
            } else {
                "apps/v1".into()
            },
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(controller),
            ..OwnerReference::default()
        }
    }

    #[test]
    fn standing_tells_ours_a_predecessors_and_someone_elses() {
        let fkd = |name: &str, uid: &str| owner("FaceKeyDeployment", name, uid, true);
        assert_eq!(standing(&[fkd("fk", "u2")], "u2", "fk"), Standing::Owned);
        assert_eq!(
            standing(&[fkd("fk", "u1")], "u2", "fk"),
            Standing::Predecessor,
            "a deleted resource of this name"
        );
        assert_eq!(
            standing(&[fkd("other", "u3")], "u2", "fk"),
            Standing::Foreign
        );
        assert_eq!(
            standing(&[owner("StatefulSet", "fk", "u4", true)], "u2", "fk"),
            Standing::Foreign
        );
        assert_eq!(
            standing(&[], "u2", "fk"),
            Standing::Foreign,
            "no controller: not ours"
        );
        assert_eq!(
            standing(&[owner("FaceKeyDeployment", "fk", "u1", false)], "u2", "fk"),
            Standing::Foreign,
            "only controller references count"
        );
    }
}
