//! The webhook's serving certificates without outside help: a private CA and a serving
//! certificate for the webhook Service, issued, checked and rotated as pure functions of what the
//! Secret holds and the time (the I/O around it is in [`super::manage`]).
//!
//! Rotation keeps the API server's trust unbroken: the serving certificate is reissued by the
//! same CA when a third of its validity is left (the `caBundle` does not change); the CA itself
//! is replaced when a third of its validity is left, and the published bundle then holds the new
//! CA and the old one until the old one expires, so a replica still serving a certificate of the
//! old CA is trusted while it reloads.

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
}

impl CertSettings {
    /// Default lifetimes for `service` in `namespace`.
    pub fn new(service: &str, namespace: &str) -> Self {
        Self {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            ca_validity: Duration::from_secs(5 * 365 * 24 * 3600),
            cert_validity: Duration::from_secs(90 * 24 * 3600),
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
}

/// What [`plan`] found to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Nothing: the certificates are valid for long enough.
    Keep,
    /// No usable CA: issue a CA and a serving certificate.
    Create,
    /// The CA nears expiry: a new CA (the old one stays in the bundle) and a serving certificate.
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
    if third_left(b.ca_not_after, settings.ca_validity, now) {
        return Plan::RotateCa;
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

/// Carry out `plan` on `existing`: the new bundle, or None for [`Plan::Keep`].
pub fn rotate(
    existing: Option<&CertBundle>,
    settings: &CertSettings,
    now: Timestamp,
) -> Result<Option<CertBundle>, CertError> {
    let plan = plan(existing, settings, now);
    let fresh =
        |ca_cert: String, ca_key: String, ca_not_after, previous: Option<(&str, Timestamp)>| {
            let (cert, key, cert_not_after) = issue_serving(&ca_key, ca_not_after, settings, now)?;
            let (ca_bundle, previous_ca_not_after) = match previous {
                Some((old, until)) if until > now => (format!("{ca_cert}{old}"), Some(until)),
                _ => (ca_cert.clone(), None),
            };
            Ok::<_, CertError>(CertBundle {
                ca_cert,
                ca_key,
                cert,
                key,
                ca_bundle,
                ca_not_after,
                previous_ca_not_after,
                cert_not_after,
                dns_names: settings.dns_names(),
            })
        };
    match (plan, existing) {
        (Plan::Keep, _) => Ok(None),
        (Plan::Create, _) | (_, None) => {
            let (ca_cert, ca_key, ca_not_after) = new_ca(settings, now)?;
            fresh(ca_cert, ca_key, ca_not_after, None).map(Some)
        }
        (Plan::RotateCa, Some(old)) => {
            let (ca_cert, ca_key, ca_not_after) = new_ca(settings, now)?;
            fresh(
                ca_cert,
                ca_key,
                ca_not_after,
                Some((old.ca_cert.as_str(), old.ca_not_after)),
            )
            .map(Some)
        }
        (Plan::RenewServing, Some(old)) => {
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
        (Plan::DropPreviousCa, Some(old)) => Ok(Some(without_expired_previous(old.clone(), now))),
    }
}

/// The bundle without the previous CA once it has expired.
fn without_expired_previous(bundle: CertBundle, now: Timestamp) -> CertBundle {
    match bundle.previous_ca_not_after {
        Some(t) if t <= now => CertBundle {
            ca_bundle: bundle.ca_cert.clone(),
            previous_ca_not_after: None,
            ..bundle
        },
        _ => bundle,
    }
}
