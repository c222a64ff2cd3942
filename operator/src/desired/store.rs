//! The template store (`spec.store`): where the runtime keeps enrolments, and the objects and pod
//! wiring each choice needs.
//!
//! - no store: an `emptyDir` per pod (enrolments per pod, lost on restart), reported by the
//!   `PersistentStore` condition;
//! - `embedded`: a ReadWriteOnce PersistentVolumeClaim `<name>-data` at the data directory, one
//!   pod, `Recreate` rollouts;
//! - `postgres`: the database URL from a Secret key mounted as a file
//!   (`FACEKEY_DATABASE_URL_FILE`), either the user's `urlSecretRef` or the `uri` of the Secret
//!   CloudNativePG generates for the `Cluster` `<name>-db` the operator creates.
//!
//! The claim and the `Cluster` (and the CloudNativePG store's generated key) outlive the
//! resource by default (`store.retainOnDelete`): no owner reference, the operator's labels, so a
//! FaceKeyDeployment recreated under the same name adopts them (`apply::not_owned`).
//!
//! The template encryption key is a Secret key mounted as a file (`FACEKEY_TEMPLATE_KEY_FILE`):
//! `store.templateKeySecretRef`, or for PostgreSQL without one the Secret `<name>-template-key`
//! that the reconciler creates once with a random key ([`GeneratedSecret`]). Secrets are only
//! referenced here; their values never pass through the desired state.

use std::collections::BTreeMap;

use facekey_crds::{
    CloudNativePg, EmbeddedStore, FaceKeyDeploymentSpec, KeyRef, PostgresStore, VolumeClaim,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Secret, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::ApiResource;
use serde_json::{Value, json};

use super::Owner;
use crate::labels::{self, Component};

/// Directory the database URL Secret key is mounted in.
pub(super) const DATABASE_DIR: &str = "/etc/facekey/database";
/// File name of the database URL inside [`DATABASE_DIR`].
pub(super) const DATABASE_URL_FILE: &str = "url";
/// Directory the template key Secret key is mounted in.
pub(super) const TEMPLATE_KEY_DIR: &str = "/etc/facekey/template-key";
/// Key of the generated template-key Secret, and the file name inside [`TEMPLATE_KEY_DIR`].
pub const TEMPLATE_KEY_FILE: &str = "template.key";
/// Key of the CloudNativePG application Secret holding the connection URI.
const CNPG_URI_KEY: &str = "uri";
/// Directory the database CA Secret key is mounted in.
pub(super) const DATABASE_CA_DIR: &str = "/etc/facekey/database-ca";
/// File name of the database CA inside [`DATABASE_CA_DIR`], and the key CloudNativePG's CA
/// Secret holds it under.
pub(super) const DATABASE_CA_FILE: &str = "ca.crt";
/// Database and owner CloudNativePG bootstraps for the runtime.
const CNPG_DATABASE: &str = "facekey";

/// The CloudNativePG `Cluster` kind (postgresql.cnpg.io/v1).
pub(super) fn cnpg_cluster_resource() -> ApiResource {
    ApiResource {
        group: "postgresql.cnpg.io".to_owned(),
        version: "v1".to_owned(),
        api_version: "postgresql.cnpg.io/v1".to_owned(),
        kind: "Cluster".to_owned(),
        plural: "clusters".to_owned(),
    }
}

/// Where enrolments live for a spec, as the status reports it.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum StoreState {
    /// No `spec.store`: an `emptyDir` per pod.
    #[default]
    Ephemeral,
    /// The embedded store on PersistentVolumeClaim `claim`.
    Embedded {
        /// Claim name.
        claim: String,
        /// `spec.replicas` when it asked for more than the one pod an embedded store serves.
        limited_from: Option<i32>,
    },
    /// PostgreSQL at the URL in the user's Secret.
    Postgres {
        /// The Secret key holding the URL.
        url: KeyRef,
    },
    /// PostgreSQL in the CloudNativePG `Cluster` the operator applies.
    CloudNativePg {
        /// Cluster name.
        cluster: String,
    },
    /// `cloudNativePG` asked for, but the CloudNativePG CRD is not installed: no Cluster.
    CloudNativePgMissing {
        /// The Cluster that would be created.
        cluster: String,
    },
}

/// A Secret the reconciler creates once, with generated content, and never updates: the
/// template key of a PostgreSQL store without `templateKeySecretRef`, and the API keys without
/// `auth.keysSecretRef`.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedSecret {
    /// Secret name.
    pub name: String,
    /// What is generated into it.
    pub content: GeneratedContent,
    /// The data key the pods read (the one mounted as a file).
    pub key: String,
    /// The Secret without data (metadata, labels, owner reference, type).
    pub body: Value,
}

/// The generated content of a [`GeneratedSecret`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedContent {
    /// A template encryption key line `k1:<64 hex>` under the data key.
    TemplateKey,
    /// An `admin` API key: its keys-file line `admin:admin:<sha256 hex>` under the data key
    /// (`api-keys`) and the key itself under `admin-key`.
    ApiKeys,
}

fn embedded(spec: &FaceKeyDeploymentSpec) -> Option<&EmbeddedStore> {
    spec.store.as_ref()?.embedded.as_ref()
}

fn postgres(spec: &FaceKeyDeploymentSpec) -> Option<&PostgresStore> {
    spec.store.as_ref()?.postgres.as_ref()
}

fn cloud_native_pg(spec: &FaceKeyDeploymentSpec) -> Option<&CloudNativePg> {
    postgres(spec)?.cloud_native_pg.as_ref()
}

/// Whether the runtime uses the embedded store on a PersistentVolumeClaim.
pub(super) fn is_embedded(spec: &FaceKeyDeploymentSpec) -> bool {
    embedded(spec).is_some()
}

/// Whether the runtime uses PostgreSQL (and so reads `FACEKEY_DATABASE_URL_FILE`).
pub(super) fn is_postgres(spec: &FaceKeyDeploymentSpec) -> bool {
    postgres(spec).is_some()
}

/// The Secret key holding the database URL, for a PostgreSQL store.
pub(super) fn database_url_ref(instance: &str, spec: &FaceKeyDeploymentSpec) -> Option<KeyRef> {
    let pg = postgres(spec)?;
    match (&pg.url_secret_ref, &pg.cloud_native_pg) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(_)) => Some(KeyRef {
            name: labels::database_app_secret_name(instance),
            key: CNPG_URI_KEY.to_owned(),
        }),
        (None, None) => None,
    }
}

/// The Secret key holding the CA of the database server's certificate: the user's, else for a
/// CloudNativePG cluster its own CA Secret. `None` leaves TLS to the URL.
pub(super) fn database_ca_ref(instance: &str, spec: &FaceKeyDeploymentSpec) -> Option<KeyRef> {
    let pg = postgres(spec).filter(|_| has_database_ca(spec))?;
    Some(pg.ca_secret_ref.clone().unwrap_or_else(|| KeyRef {
        name: labels::database_ca_secret_name(instance),
        key: DATABASE_CA_FILE.to_owned(),
    }))
}

/// Whether the runtime gets a database CA file ([`database_ca_ref`] is `Some`).
pub(super) fn has_database_ca(spec: &FaceKeyDeploymentSpec) -> bool {
    postgres(spec).is_some_and(|pg| pg.ca_secret_ref.is_some() || pg.cloud_native_pg.is_some())
}

/// The Secret key holding the template keys: the user's, or the generated one for PostgreSQL.
/// `None` with an embedded store (or none) and no reference: the runtime keeps its own key.
pub(super) fn template_key_ref(instance: &str, spec: &FaceKeyDeploymentSpec) -> Option<KeyRef> {
    let store = spec
        .store
        .as_ref()
        .filter(|_| has_template_key_file(spec))?;
    match (&store.template_key_secret_ref, &store.postgres) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(_)) => Some(KeyRef {
            name: labels::template_key_secret_name(instance),
            key: TEMPLATE_KEY_FILE.to_owned(),
        }),
        (None, None) => None,
    }
}

/// Whether the pods get a template key file (`FACEKEY_TEMPLATE_KEY_FILE`).
pub(super) fn has_template_key_file(spec: &FaceKeyDeploymentSpec) -> bool {
    spec.store
        .as_ref()
        .is_some_and(|s| s.template_key_secret_ref.is_some() || s.postgres.is_some())
}

/// Pod count for the Deployment when no autoscaler owns it: `spec.replicas` (default 1), at most
/// 1 with an embedded store (a ReadWriteOnce volume is attached to one node, and two processes
/// must never open one redb file).
pub(super) fn replicas(spec: &FaceKeyDeploymentSpec) -> i32 {
    let asked = spec.replicas.unwrap_or(1);
    if is_embedded(spec) {
        asked.min(1)
    } else {
        asked
    }
}

/// What the status reports about the store, given whether the CloudNativePG CRD is installed.
pub fn store_state(
    instance: &str,
    spec: &FaceKeyDeploymentSpec,
    cnpg_installed: bool,
) -> StoreState {
    if is_embedded(spec) {
        return StoreState::Embedded {
            claim: labels::data_claim_name(instance),
            limited_from: spec.replicas.filter(|r| *r > 1),
        };
    }
    if cloud_native_pg(spec).is_some() {
        let cluster = labels::database_cluster_name(instance);
        return if cnpg_installed {
            StoreState::CloudNativePg { cluster }
        } else {
            StoreState::CloudNativePgMissing { cluster }
        };
    }
    match postgres(spec).and_then(|p| p.url_secret_ref.clone()) {
        Some(url) => StoreState::Postgres { url },
        None => StoreState::Ephemeral,
    }
}

fn storage_request(v: &VolumeClaim) -> VolumeResourceRequirements {
    VolumeResourceRequirements {
        requests: Some(BTreeMap::from([("storage".to_owned(), v.size.clone())])),
        ..VolumeResourceRequirements::default()
    }
}

/// Whether the store's data outlives the resource (`store.retainOnDelete`, default true).
fn retain_on_delete(spec: &FaceKeyDeploymentSpec) -> bool {
    spec.store.as_ref().is_none_or(|s| s.retain_on_delete)
}

/// Whether the enrolments outlive the resource: an external database, or a store kept when the
/// resource is deleted (`store.retainOnDelete`). What belongs with them (the API keys whose ids
/// the subjects record, that their applications hold) is then kept too.
pub(super) fn data_outlives(spec: &FaceKeyDeploymentSpec) -> bool {
    spec.store.as_ref().is_some_and(|s| {
        s.retain_on_delete
            || s.postgres
                .as_ref()
                .is_some_and(|p| p.url_secret_ref.is_some())
    })
}

/// Metadata of a store object: with `store.retainOnDelete` (the default) no owner reference, so
/// the garbage collector keeps it (and the enrolments) when the FaceKeyDeployment is deleted, by
/// mistake or to recreate it from Git; the operator's labels let a FaceKeyDeployment of the same
/// name adopt it. Without it, the resource's controller owner reference, as every other child.
fn store_meta(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
    name: String,
    component: Component,
    what: &str,
) -> ObjectMeta {
    let mut metadata = owner.meta(name, component);
    if retain_on_delete(spec) {
        retain(&mut metadata, what);
    }
    metadata
}

/// Drop the owner reference and say why in the [`labels::RETAINED_ANNOTATION`]. Without an
/// owner a GitOps tool could take the object for its own: Argo CD's label tracking (its default
/// before 3.0) counts every object without owner references that carries
/// `app.kubernetes.io/instance=<application>` as part of that application, so an Application
/// named like the FaceKeyDeployment would show the store's data as extraneous and, with
/// automated pruning, delete it. A retained object therefore carries no
/// `app.kubernetes.io/instance` (the adoption check reads `facekey.dev/owner`), and tells Argo CD
/// never to prune it or count it as drift should another tracking label select it.
pub(super) fn retain(metadata: &mut ObjectMeta, why: &str) {
    metadata.owner_references = None;
    if let Some(labels) = metadata.labels.as_mut() {
        labels.remove(labels::INSTANCE_LABEL);
    }
    metadata.annotations = Some(
        [
            (labels::RETAINED_ANNOTATION, why),
            ("argocd.argoproj.io/sync-options", "Prune=false"),
            ("argocd.argoproj.io/compare-options", "IgnoreExtraneous"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
}

/// The embedded store's PersistentVolumeClaim `<name>-data` (ReadWriteOnce).
pub(super) fn data_claim(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
) -> Option<PersistentVolumeClaim> {
    let pvc = &embedded(spec)?.pvc;
    Some(PersistentVolumeClaim {
        metadata: store_meta(
            owner,
            spec,
            labels::data_claim_name(owner.name),
            Component::Runtime,
            "the embedded template store: kept when the FaceKeyDeployment is deleted \
             (spec.store.retainOnDelete); a FaceKeyDeployment of the same name adopts it",
        ),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: pvc.storage_class_name.clone(),
            resources: Some(storage_request(pvc)),
            volume_mode: Some("Filesystem".to_owned()),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// The CloudNativePG `Cluster` `<name>-db`: `instances` PostgreSQL servers (synchronous
/// replication to `synchronousReplicas` of them when set), a `facekey` database owned by a
/// `facekey` user, whose URL CloudNativePG writes to the Secret `<name>-db-app`.
pub(super) fn database_cluster(owner: &Owner<'_>, spec: &FaceKeyDeploymentSpec) -> Option<Value> {
    let cnpg = cloud_native_pg(spec)?;
    let meta = store_meta(
        owner,
        spec,
        labels::database_cluster_name(owner.name),
        Component::Database,
        "the template store's database: kept when the FaceKeyDeployment is deleted \
         (spec.store.retainOnDelete); a FaceKeyDeployment of the same name adopts it",
    );
    let mut storage = json!({ "size": cnpg.storage.size });
    if let Some(class) = &cnpg.storage.storage_class_name {
        storage["storageClass"] = json!(class);
    }
    let mut cluster_spec = json!({
        "instances": cnpg.instances,
        "storage": storage,
        "bootstrap": {"initdb": {"database": CNPG_DATABASE, "owner": CNPG_DATABASE}},
    });
    if let Some(image) = &cnpg.image_name {
        cluster_spec["imageName"] = json!(image);
    }
    // Quorum-based synchronous replication: a commit waits for `number` of the standbys, any
    // of them; CloudNativePG's default data durability (`required`) never downgrades to async.
    if let Some(number) = cnpg.synchronous_replicas.filter(|n| *n > 0) {
        cluster_spec["postgresql"] = json!({"synchronous": {"method": "any", "number": number}});
    }
    let resource = cnpg_cluster_resource();
    Some(json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": meta,
        "spec": cluster_spec,
    }))
}

/// The template-key Secret to generate, when the spec relies on one: PostgreSQL without
/// `templateKeySecretRef`. With an external database (`urlSecretRef`) the templates outlive the
/// FaceKeyDeployment, so the key must too: that Secret carries no owner reference, and deleting
/// the resource (by mistake, or to recreate it from Git) never makes the data unreadable. With
/// CloudNativePG the key follows the `Cluster`: kept with it (`store.retainOnDelete`, the
/// default), else deleted with the resource, as the database is.
pub(super) fn generated_template_key(
    owner: &Owner<'_>,
    spec: &FaceKeyDeploymentSpec,
) -> Option<Secret> {
    let store = spec.store.as_ref()?;
    if store.template_key_secret_ref.is_some() {
        return None;
    }
    let postgres = store.postgres.as_ref()?;
    let mut metadata = owner.meta(
        labels::template_key_secret_name(owner.name),
        Component::Runtime,
    );
    if data_outlives(spec) {
        retain(
            &mut metadata,
            if postgres.url_secret_ref.is_some() {
                "the template key of an external database: kept when the FaceKeyDeployment is \
                 deleted"
            } else {
                "the template key of the retained CloudNativePG Cluster: kept when the \
                 FaceKeyDeployment is deleted (spec.store.retainOnDelete)"
            },
        );
    }
    Some(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    })
}
