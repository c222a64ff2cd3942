//! The webhook's serving certificates without outside help: a private CA and a serving
//! certificate for the webhook Service, issued, checked and rotated as pure functions of what the
//! Secret holds and the time (the I/O around it is in [`super::manage`]).
//!
//! Rotation keeps the API server's trust unbroken: the serving certificate is reissued by the
//! same CA when a third of its validity is left (the `caBundle` does not change). The CA is
//! replaced in two steps: when a third of its validity is left a new CA is *staged* (added to the
//! bundle, signing nothing yet); only once the staged bundle has been published for
//! [`CertSettings::ca_stage_grace`] does the new CA sign a serving certificate, so no replica ever
//! serves a certificate the API server cannot yet verify. The old CA then stays in the bundle
//! until it expires, so a replica still serving a certificate of it is trusted while it reloads.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

/// Common name of the operator's webhook CA.
pub const CA_COMMON_NAME: &str = "facekey-operator webhook CA";

/// Keys of the Secret holding the certificates (`tls.crt`/`tls.key` as a `kubernetes.io/tls`
/// Secret, `ca.crt` as cert-manager writes it).
pub mod keys {
    /// Serving certificate (PEM).
    pub const TLS_CRT: &str = "tls.crt";
    /// Serving key (PEM, PKCS#8).
    pub const TLS_KEY: &str = "tls.key";
    /// The current CA certificate.
    pub const CA_CRT: &str = "ca.crt";
    /// The current CA key (self-signed mode only).
    pub const CA_KEY: &str = "ca.key";
    /// The CAs the API server must trust: the current one and, during a CA rotation, the
    /// previous one until it expires. The `caBundle` of the webhook configuration.
    pub const CA_BUNDLE: &str = "ca-bundle.crt";
    /// The staged CA certificate: in the bundle, signing nothing until the rotation.
    pub const NEXT_CA_CRT: &str = "next-ca.crt";
    /// The staged CA key.
    pub const NEXT_CA_KEY: &str = "next-ca.key";
}

/// Annotations of the Secret recording validity, so rotation needs no X.509 parser.
pub mod annotations {
    /// When the CA expires (RFC 3339).
    pub const CA_NOT_AFTER: &str = "facekey.dev/ca-not-after";
    /// When the previous CA, still in the bundle, expires (RFC 3339).
    pub const PREVIOUS_CA_NOT_AFTER: &str = "facekey.dev/previous-ca-not-after";
    /// When the serving certificate expires (RFC 3339).
    pub const CERT_NOT_AFTER: &str = "facekey.dev/cert-not-after";
    /// DNS names of the serving certificate, comma-separated.
    pub const DNS_NAMES: &str = "facekey.dev/dns-names";
    /// When the staged CA expires (RFC 3339).
    pub const NEXT_CA_NOT_AFTER: &str = "facekey.dev/next-ca-not-after";
    /// When the staged CA entered the bundle (RFC 3339): the grace counts from here.
    pub const NEXT_CA_STAGED_AT: &str = "facekey.dev/next-ca-staged-at";
}

/// Errors issuing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or the key.
    #[error("{what}: {source}")]
    Rcgen {
        /// What was being issued.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A time outside what X.509 can express.
    #[error("time out of range: {0}")]
    Time(String),
}

/// Lifetimes and names of the certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSettings {
    /// Name of the webhook Service.
    pub service: String,
    /// Namespace of the Service (the operator's).
    pub namespace: String,
    /// Validity of a new CA (default 5 years).
    pub ca_validity: Duration,
    /// Validity of a new serving certificate (default 90 days).
    pub cert_validity: Duration,
    /// How long a staged CA is in the published bundle before it signs (default 10 minutes:
    /// far above the seconds every API server takes to see a new `caBundle`).
    pub ca_stage_grace: Duration,
}

impl CertSettings {
    /// Default lifetimes for `service` in `namespace`.
    pub fn new(service: &str, namespace: &str) -> Self {
        Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            ca_validity: Duration::from_secs(5 * 365 * 24 * 3600),
            cert_validity: Duration::from_secs(90 * 24 * 3600),
            ca_stage_grace: Duration::from_secs(10 * 60),
        }
    }

    /// The names the API server may use for the Service (`<svc>.<ns>.svc` is what it uses).
    pub fn dns_names(&self) -> Vec<String> {
        let (s, n) = (&self.service, &self.namespace);
        vec![
            s.clone(),
            format!("{s}.{n}"),
            format!("{s}.{n}.svc"),
            format!("{s}.{n}.svc.cluster.local"),
        ]
    }
}

/// Everything the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertBundle {
    /// Current CA certificate (PEM).
    pub ca_cert: String,
    /// Current CA key (PEM).
    pub ca_key: String,
    /// Serving certificate (PEM).
    pub cert: String,
    /// Serving key (PEM).
    pub key: String,
    /// The CAs to trust (PEM, concatenated).
    pub ca_bundle: String,
    /// Expiry of the current CA.
    pub ca_not_after: Timestamp,
    /// Expiry of the previous CA while it is still in the bundle.
    pub previous_ca_not_after: Option<Timestamp>,
    /// Expiry of the serving certificate.
    pub cert_not_after: Timestamp,
    /// DNS names of the serving certificate.
    pub dns_names: Vec<String>,
    /// The CA staged to replace the current one: in `ca_bundle`, signing nothing yet.
    pub next_ca: Option<StagedCa>,
}

/// A CA in the bundle before it signs anything ([`Plan::StageCa`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedCa {
    /// Certificate (PEM).
    pub cert: String,
    /// Key (PEM).
    pub key: String,
    /// Expiry.
    pub not_after: Timestamp,
    /// When it entered the bundle.
    pub staged_at: Timestamp,
}

/// What [`plan`] found to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the certificates are valid for long enough.
    Keep,
    /// No usable CA: issue a CA and a serving certificate.
    Create,
    /// The CA nears expiry: a new CA joins the bundle, signing nothing yet; the serving
    /// certificate stays. (Also what a staged CA missing from the published bundle gets:
    /// staged again, its grace counted anew.)
    StageCa,
    /// The staged CA has been in the bundle for the grace: it becomes the CA (the old one stays
    /// in the bundle until it expires) and signs a new serving certificate.
    RotateCa,
    /// The serving certificate nears expiry or names other hosts: reissue it with the same CA.
    RenewServing,
    /// Only the bundle changes: the previous CA expired and leaves it.
    DropPreviousCa,
}

impl Plan {
    /// What an issue by this plan changed: the `reason` label of
    /// `facekey_operator_webhook_certificate_rotations_total` (`None` for [`Plan::Keep`]).
    pub fn rotation_reason(self) -> Option<&'static str> {
        match self {
            Plan::Keep => None,
            Plan::Create => Some("created"),
            Plan::StageCa => Some("ca_staged"),
            Plan::RotateCa => Some("ca_rotated"),
            Plan::RenewServing => Some("serving_renewed"),
            Plan::DropPreviousCa => Some("previous_ca_dropped"),
        }
    }
}

/// notAfter (Unix seconds) of the first certificate in `pem`, read from the certificate itself
/// (so it holds for what cert-manager issued too); `None` when there is none or it does not
/// parse. Used for the expiry metric only: rotation decisions use the Secret's annotations.
pub fn not_after(pem: &str) -> Option<i64> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The staged CA, when its key loads and it is valid: one that is not is staged again.
fn staged(b: &CertBundle, now: Timestamp) -> Option<&StagedCa> {
    b.next_ca
        .as_ref()
        .filter(|n| n.not_after > now && KeyPair::from_pem(&n.key).is_ok())
}

fn grace_over(next: &StagedCa, settings: &CertSettings, now: Timestamp) -> bool {
    now.as_second() - next.staged_at.as_second() >= settings.ca_stage_grace.as_secs() as i64
}

fn third_left(not_after: Timestamp, validity: Duration, now: Timestamp) -> bool {
    let left = not_after.as_second() - now.as_second();
    left <= (validity.as_secs() / 3) as i64
}

/// What to do with `existing` (None: no Secret, or one that does not parse) at `now`.
pub fn plan(existing: Option<&CertBundle>, settings: &CertSettings, now: Timestamp) -> Plan {
    let Some(b) = existing else {
        return Plan::Create;
    };
    if KeyPair::from_pem(&b.ca_key).is_err() || b.ca_not_after <= now {
        return Plan::Create;
    }
    match staged(b, now) {
        Some(next) if grace_over(next, settings, now) => return Plan::RotateCa,
        Some(_) => {}
        // A staged CA that no longer loads or expired is staged afresh.
        None if b.next_ca.is_some() || third_left(b.ca_not_after, settings.ca_validity, now) => {
            return Plan::StageCa;
        }
        None => {}
    }
    if third_left(b.cert_not_after, settings.cert_validity, now)
        || b.dns_names != settings.dns_names()
        || KeyPair::from_pem(&b.key).is_err()
    {
        return Plan::RenewServing;
    }
    if b.previous_ca_not_after.is_some_and(|t| t <= now) {
        return Plan::DropPreviousCa;
    }
    Plan::Keep
}

fn offset(t: Timestamp) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| CertError::Time(e.to_string()))
}

fn after(now: Timestamp, d: Duration) -> Result<Timestamp, CertError> {
    Timestamp::from_second(now.as_second().saturating_add(d.as_secs() as i64))
        .map_err(|e| CertError::Time(e.to_string()))
}

/// The CA's parameters: derived from its key alone, so a stored CA key can sign again without
/// parsing the stored certificate. The common name carries a fingerprint of the key, so the old
/// and the new CA of a rotation have different names (a verifier looking up the issuer by name
/// finds the right one).
fn ca_params(
    key: &KeyPair,
    not_before: Timestamp,
    not_after: Timestamp,
) -> Result<CertificateParams, CertError> {
    use sha2::{Digest, Sha256};
    let fingerprint = Sha256::digest(key.public_key_raw());
    let short: String = fingerprint[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("{CA_COMMON_NAME} {short}"));
    dn.push(DnType::OrganizationName, "FaceKey");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = offset(not_before)?;
    p.not_after = offset(not_after)?;
    Ok(p)
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Rcgen { what, source }
}

/// A new CA valid from `now` (minus a minute of clock skew): (certificate PEM, key PEM, expiry).
pub fn new_ca(
    settings: &CertSettings,
    now: Timestamp,
) -> Result<(String, String, Timestamp), CertError> {
    let key = KeyPair::generate().map_err(rc("CA key"))?;
    let not_after = after(now, settings.ca_validity)?;
    let params = ca_params(&key, skewed(now)?, not_after)?;
    let cert = params.self_signed(&key).map_err(rc("CA certificate"))?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

fn skewed(now: Timestamp) -> Result<Timestamp, CertError> {
    Timestamp::from_second(now.as_second() - 60).map_err(|e| CertError::Time(e.to_string()))
}

/// A serving certificate for the Service's DNS names signed by the CA key `ca_key`:
/// (certificate PEM, key PEM, expiry).
pub fn issue_serving(
    ca_key: &str,
    ca_not_after: Timestamp,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<(String, String, Timestamp), CertError> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(rc("CA key"))?;
    // The issuer's name and key identifier come from the parameters and the key alone.
    let issuer = Issuer::new(ca_params(&ca_key, now, ca_not_after)?, ca_key);
    let key = KeyPair::generate().map_err(rc("serving key"))?;
    // Never outlive the CA.
    let not_after = after(now, settings.cert_validity)?.min(ca_not_after);
    let mut params =
        CertificateParams::new(settings.dns_names()).map_err(rc("serving certificate names"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("{}.{}.svc", settings.service, settings.namespace),
    );
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(skewed(now)?)?;
    params.not_after = offset(not_after)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rc("serving certificate"))?;
    Ok((cert.pem(), key.serialize_pem(), not_after))
}

/// Carry out [`plan`] on `existing`: the new bundle, or None for [`Plan::Keep`].
pub fn rotate(
    existing: Option<&CertBundle>,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<Option<CertBundle>, CertError> {
    rotate_by(plan(existing, settings, now), existing, settings, now)
}

/// Carry out `plan` on `existing` (a plan the caller may have overruled: [`Plan::StageCa`] again
/// instead of [`Plan::RotateCa`] when the staged CA has not reached the API server).
pub fn rotate_by(
    plan: Plan,
    existing: Option<&CertBundle>,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<Option<CertBundle>, CertError> {
    let Some(old) = existing else {
        return match plan {
            Plan::Keep => Ok(None),
            _ => created(settings, now).map(Some),
        };
    };
    match plan {
        Plan::Keep => Ok(None),
        Plan::Create => created(settings, now).map(Some),
        Plan::StageCa => {
            // A staged CA that still loads is staged again (its grace counts from now: the
            // caller found it missing from the published bundle); otherwise a new one.
            let (cert, key, not_after) = match staged(old, now) {
                Some(next) => (next.cert.clone(), next.key.clone(), next.not_after),
                None => new_ca(settings, now)?,
            };
            // Current CA first (the expiry metric reads it), then the previous one, then this.
            let current = without_staged(without_expired_previous(old.clone(), now));
            Ok(Some(CertBundle {
                ca_bundle: format!("{}{cert}", current.ca_bundle),
                next_ca: Some(StagedCa {
                    cert,
                    key,
                    not_after,
                    staged_at: now,
                }),
                ..current
            }))
        }
        Plan::RotateCa => {
            let Some(next) = staged(old, now) else {
                return rotate_by(Plan::StageCa, existing, settings, now);
            };
            let (cert, key, cert_not_after) =
                issue_serving(&next.key, next.not_after, settings, now)?;
            // The old CA stays trusted until it expires: replicas still serving its certificate.
            Ok(Some(CertBundle {
                ca_cert: next.cert.clone(),
                ca_key: next.key.clone(),
                cert,
                key,
                ca_bundle: format!("{}{}", next.cert, old.ca_cert),
                ca_not_after: next.not_after,
                previous_ca_not_after: Some(old.ca_not_after),
                cert_not_after,
                dns_names: settings.dns_names(),
                next_ca: None,
            }))
        }
        Plan::RenewServing => {
            let (cert, key, cert_not_after) =
                issue_serving(&old.ca_key, old.ca_not_after, settings, now)?;
            Ok(Some(without_expired_previous(
                CertBundle {
                    cert,
                    key,
                    cert_not_after,
                    dns_names: settings.dns_names(),
                    ..old.clone()
                },
                now,
            )))
        }
        Plan::DropPreviousCa => Ok(Some(without_expired_previous(old.clone(), now))),
    }
}

/// A new CA and a serving certificate from it, trusting nothing else.
fn created(settings: &CertSettings, now: Timestamp) -> Result<CertBundle, CertError> {
    let (ca_cert, ca_key, ca_not_after) = new_ca(settings, now)?;
    let (cert, key, cert_not_after) = issue_serving(&ca_key, ca_not_after, settings, now)?;
    Ok(CertBundle {
        ca_bundle: ca_cert.clone(),
        ca_cert,
        ca_key,
        cert,
        key,
        ca_not_after,
        previous_ca_not_after: None,
        cert_not_after,
        dns_names: settings.dns_names(),
        next_ca: None,
    })
}

/// The bundle without its staged CA (which is always last in `ca_bundle`).
fn without_staged(bundle: CertBundle) -> CertBundle {
    match &bundle.next_ca {
        Some(next) => CertBundle {
            ca_bundle: bundle
                .ca_bundle
                .strip_suffix(next.cert.as_str())
                .unwrap_or(&bundle.ca_bundle)
                .to_owned(),
            next_ca: None,
            ..bundle
        },
        None => bundle,
    }
}

/// The bundle without the previous CA once it has expired.
fn without_expired_previous(bundle: CertBundle, now: Timestamp) -> CertBundle {
    match bundle.previous_ca_not_after {
        Some(t) if t <= now => CertBundle {
            ca_bundle: match &bundle.next_ca {
                Some(next) => format!("{}{}", bundle.ca_cert, next.cert),
                None => bundle.ca_cert.clone(),
            },
            previous_ca_not_after: None,
            ..bundle
        },
        _ => bundle,
    }
}
