//! The webhook's certificates against the API server: the Secret holding them, the
//! MutatingWebhookConfiguration's `caBundle`, and the loop that keeps both current and the
//! server's certificate in step.
//!
//! Self-signed mode: [`ensure`] reads the Secret, lets [`super::certs::rotate`] decide, writes the
//! Secret (create, or replace at the read `resourceVersion`, so two replicas never both rotate:
//! the loser re-reads), then sets `caBundle` on every webhook of the configuration that differs.
//! cert-manager mode: cert-manager writes the Secret and its CA injector the `caBundle`; the
//! operator only serves what the Secret holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tracing::{info, warn};

use super::certs::{self, CertBundle, CertError, CertSettings, StagedCa, annotations, keys};
use super::server::{ReloadingCert, TlsError};
use crate::events::WebhookCertificatesChecked;
use crate::metrics::Metrics;

/// Errors keeping the certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertManageError {
    /// Reading or writing the Secret or the webhook configuration failed.
    #[error("{what}: {source}")]
    Api {
        /// The object.
        what: String,
        /// The cause.
        #[source]
        source: Box<kube::Error>,
    },
    /// Issuing failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The Secret's certificate does not load.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// cert-manager mode: the Secret is missing or incomplete.
    #[error("Secret {0} has no tls.crt and tls.key yet (is the cert-manager Certificate ready?)")]
    NotIssued(String),
}

/// Who issues the serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertMode {
    /// The operator's own CA ([`super::certs`]).
    SelfSigned,
    /// A cert-manager Certificate writing the Secret (and its CA injector the `caBundle`).
    CertManager,
}

/// Where the certificates live.
#[derive(Clone, Debug)]
pub struct CertTargets {
    /// Namespace of the Secret (the operator's).
    pub namespace: String,
    /// Name of the Secret.
    pub secret: String,
    /// Name of the MutatingWebhookConfiguration whose `caBundle` is kept.
    pub webhook_config: String,
    /// Names and lifetimes.
    pub settings: CertSettings,
    /// Who issues.
    pub mode: CertMode,
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> CertManageError {
    move |source| CertManageError::Api {
        what,
        source: Box::new(source),
    }
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.is_empty())
}

fn time_of(a: &BTreeMap<String, String>, key: &str) -> Option<Timestamp> {
    a.get(key).and_then(|v| v.parse().ok())
}

/// The bundle a Secret holds, if it is complete.
pub fn bundle_of(secret: &Secret) -> Option<CertBundle> {
    let data = secret.data.as_ref()?;
    let a = secret.metadata.annotations.clone().unwrap_or_default();
    Some(CertBundle {
        ca_cert: text(data, keys::CA_CRT)?,
        ca_key: text(data, keys::CA_KEY)?,
        cert: text(data, keys::TLS_CRT)?,
        key: text(data, keys::TLS_KEY)?,
        ca_bundle: text(data, keys::CA_BUNDLE)?,
        ca_not_after: time_of(&a, annotations::CA_NOT_AFTER)?,
        previous_ca_not_after: time_of(&a, annotations::PREVIOUS_CA_NOT_AFTER),
        cert_not_after: time_of(&a, annotations::CERT_NOT_AFTER)?,
        dns_names: a
            .get(annotations::DNS_NAMES)?
            .split(',')
            .map(str::to_owned)
            .collect(),
        next_ca: (|| {
            Some(StagedCa {
                cert: text(data, keys::NEXT_CA_CRT)?,
                key: text(data, keys::NEXT_CA_KEY)?,
                not_after: time_of(&a, annotations::NEXT_CA_NOT_AFTER)?,
                staged_at: time_of(&a, annotations::NEXT_CA_STAGED_AT)?,
            })
        })(),
    })
}

/// The Secret holding `bundle` (type `kubernetes.io/tls`).
pub fn secret_of(targets: &CertTargets, bundle: &CertBundle) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    let mut a = BTreeMap::from([
        (
            annotations::CA_NOT_AFTER.to_owned(),
            bundle.ca_not_after.to_string(),
        ),
        (
            annotations::CERT_NOT_AFTER.to_owned(),
            bundle.cert_not_after.to_string(),
        ),
        (
            annotations::DNS_NAMES.to_owned(),
            bundle.dns_names.join(","),
        ),
    ]);
    if let Some(t) = bundle.previous_ca_not_after {
        a.insert(annotations::PREVIOUS_CA_NOT_AFTER.to_owned(), t.to_string());
    }
    let mut data = BTreeMap::from([
        (keys::CA_CRT.to_owned(), bytes(&bundle.ca_cert)),
        (keys::CA_KEY.to_owned(), bytes(&bundle.ca_key)),
        (keys::TLS_CRT.to_owned(), bytes(&bundle.cert)),
        (keys::TLS_KEY.to_owned(), bytes(&bundle.key)),
        (keys::CA_BUNDLE.to_owned(), bytes(&bundle.ca_bundle)),
    ]);
    if let Some(next) = &bundle.next_ca {
        a.insert(
            annotations::NEXT_CA_NOT_AFTER.to_owned(),
            next.not_after.to_string(),
        );
        a.insert(
            annotations::NEXT_CA_STAGED_AT.to_owned(),
            next.staged_at.to_string(),
        );
        data.insert(keys::NEXT_CA_CRT.to_owned(), bytes(&next.cert));
        data.insert(keys::NEXT_CA_KEY.to_owned(), bytes(&next.key));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(targets.secret.clone()),
            namespace: Some(targets.namespace.clone()),
            annotations: Some(a),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_owned(),
                    "facekey-operator".to_owned(),
                ),
                (
                    "app.kubernetes.io/component".to_owned(),
                    "webhook".to_owned(),
                ),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// What [`ensure`] left in place: the serving certificate and key and the CA bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    /// Serving certificate (PEM).
    pub cert: String,
    /// Serving key (PEM).
    pub key: String,
    /// The CAs clients must trust (PEM).
    pub ca_bundle: String,
    /// Whether this call issued new certificates.
    pub rotated: bool,
    /// What this call found to do ([`certs::Plan::Keep`] when it issued nothing, and always in
    /// cert-manager mode).
    pub plan: certs::Plan,
}

/// Record what `serving` holds in the webhook metrics: the serving certificate's and the newest
/// CA's expiry (read from the certificates), and the rotation when this replica issued one.
pub fn observe(metrics: &Metrics, serving: &Serving) {
    WebhookCertificatesChecked {
        serving_not_after: certs::not_after(&serving.cert),
        // The bundle lists the current CA first (then, during a CA rotation, the previous one).
        ca_not_after: certs::not_after(&serving.ca_bundle),
        issued: if serving.rotated {
            serving.plan.rotation_reason()
        } else {
            None
        },
    }
    .emit(metrics);
}

/// Self-signed mode: make the Secret hold valid certificates at `now` and the webhook
/// configuration trust them. cert-manager mode: read what cert-manager wrote.
pub async fn ensure(
    client: &Client,
    targets: &CertTargets,
    now: Timestamp,
) -> Result<Serving, CertManageError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &targets.namespace);
    let what = format!("Secret {}/{}", targets.namespace, targets.secret);
    let existing = secrets
        .get_opt(&targets.secret)
        .await
        .map_err(api_err(what.clone()))?;
    if targets.mode == CertMode::CertManager {
        let data = existing
            .as_ref()
            .and_then(|s| s.data.clone())
            .unwrap_or_default();
        let (Some(cert), Some(key)) = (text(&data, keys::TLS_CRT), text(&data, keys::TLS_KEY))
        else {
            return Err(CertManageError::NotIssued(what));
        };
        return Ok(Serving {
            cert,
            key,
            ca_bundle: text(&data, keys::CA_CRT).unwrap_or_default(),
            rotated: false,
            plan: certs::Plan::Keep,
        });
    }
    let current = existing.as_ref().and_then(bundle_of);
    let mut plan = certs::plan(current.as_ref(), &targets.settings, now);
    if plan != certs::Plan::Create
        && let Some(next) = current.as_ref().and_then(|b| b.next_ca.as_ref())
        && !trusts(client, &targets.webhook_config, &next.cert).await?
    {
        // The API server does not trust the staged CA now (its publication failed, or the
        // configuration was replaced since): stage it again, published below, so that its
        // grace counts from a publication, never from a bundle the API server lost.
        warn!(config = %targets.webhook_config, "the staged webhook CA is not in the published caBundle; staging it again");
        plan = certs::Plan::StageCa;
    }
    let (bundle, rotated) = match certs::rotate_by(plan, current.as_ref(), &targets.settings, now)?
    {
        None => match current {
            Some(b) => (b, false),
            None => return Err(CertManageError::NotIssued(what)),
        },
        Some(new) => {
            let mut secret = secret_of(targets, &new);
            match &existing {
                None => {
                    secrets
                        .create(&PostParams::default(), &secret)
                        .await
                        .map_err(api_err(what.clone()))?;
                }
                Some(old) => {
                    // Replace at the version read: a replica that rotated first wins, this one
                    // fails with a conflict and uses the winner's certificates next time.
                    secret.metadata.resource_version = old.metadata.resource_version.clone();
                    secrets
                        .replace(&targets.secret, &PostParams::default(), &secret)
                        .await
                        .map_err(api_err(what.clone()))?;
                }
            }
            info!(secret = %what, plan = ?plan, not_after = %new.cert_not_after, "webhook certificates issued");
            (new, true)
        }
    };
    publish_ca_bundle(client, &targets.webhook_config, &bundle.ca_bundle).await?;
    Ok(Serving {
        cert: bundle.cert,
        key: bundle.key,
        ca_bundle: bundle.ca_bundle,
        rotated,
        plan: if rotated { plan } else { certs::Plan::Keep },
    })
}

/// Whether every webhook of the configuration `name` trusts the CA `ca_cert` (PEM); true when
/// the configuration does not exist, as there is then no trust to break.
pub async fn trusts(client: &Client, name: &str, ca_cert: &str) -> Result<bool, CertManageError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!("MutatingWebhookConfiguration {name}");
    let Some(config) = api.get_opt(name).await.map_err(api_err(what))? else {
        return Ok(true);
    };
    Ok(config.webhooks.iter().flatten().all(|hook| {
        hook.client_config
            .ca_bundle
            .as_ref()
            .and_then(|b| std::str::from_utf8(&b.0).ok())
            .is_some_and(|b| b.contains(ca_cert.trim()))
    }))
}

/// Set `caBundle` on every webhook of the configuration `name` where it differs (a missing
/// configuration is left alone: the manifests create it). Returns whether anything changed.
pub async fn publish_ca_bundle(
    client: &Client,
    name: &str,
    ca_bundle: &str,
) -> Result<bool, CertManageError> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let what = format!("MutatingWebhookConfiguration {name}");
    let Some(mut config) = api.get_opt(name).await.map_err(api_err(what.clone()))? else {
        warn!(
            config = name,
            "the webhook configuration does not exist; caBundle not published"
        );
        return Ok(false);
    };
    let want = ByteString(ca_bundle.as_bytes().to_vec());
    let mut changed = false;
    for hook in config.webhooks.iter_mut().flatten() {
        if hook.client_config.ca_bundle.as_ref() != Some(&want) {
            hook.client_config.ca_bundle = Some(want.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config)
            .await
            .map_err(api_err(what))?;
        info!(config = name, "published the webhook caBundle");
    }
    Ok(changed)
}

/// Keep the certificates current every `every` until `shutdown`, loading each new serving
/// certificate into `cert` (the first one before returning, or the error) and recording each
/// check in `metrics` ([`observe`]).
pub async fn keep_certificates(
    client: Client,
    targets: CertTargets,
    cert: Arc<ReloadingCert>,
    every: Duration,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, CertManageError> {
    let mut loaded = ensure(&client, &targets, Timestamp::now()).await?;
    cert.set_pem(&loaded.cert, &loaded.key)?;
    observe(&metrics, &loaded);
    Ok(tokio::spawn(async move {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(every) => {}
            }
            match ensure(&client, &targets, Timestamp::now()).await {
                Ok(s) if s.cert != loaded.cert || s.key != loaded.key => {
                    match cert.set_pem(&s.cert, &s.key) {
                        Ok(()) => {
                            info!("webhook serving certificate reloaded");
                            observe(&metrics, &s);
                            loaded = s;
                        }
                        Err(e) => warn!(error = %e, "the new webhook certificate does not load"),
                    }
                }
                // Only the bundle changed (a CA left it), or nothing: the serving expiry stands.
                Ok(s) => observe(&metrics, &s),
                Err(e) => warn!(error = %e, "keeping the webhook certificates failed; retrying"),
            }
        }
    }))
}
