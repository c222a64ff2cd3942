//! Access control of the API: API keys with scopes, read from a keys file (re-read when it
//! changes), a per-key request rate limit, and the route → scope table every request is checked
//! against. Without a keys file the runtime creates one in its data directory with a single
//! admin key, shown once as a login URL.

pub mod denied;
pub mod guard;
pub mod keys;
pub mod policy;
pub mod scope;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub use keys::{KeyEntry, KeyFileError, KeyRing};
pub use scope::{Caller, Scope};

use crate::metrics::Metrics;

/// File name of the keys file the runtime creates in its data directory.
pub const LOCAL_KEYS_FILE: &str = "api-keys";

/// How often the keys file is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Where the keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `FACEKEY_API_KEYS_FILE`.
    File(PathBuf),
    /// The file the runtime created in its data directory.
    Local(PathBuf),
}

impl KeySource {
    /// The file either way.
    pub fn path(&self) -> &Path {
        match self {
            KeySource::File(p) | KeySource::Local(p) => p,
        }
    }
}

/// A key created on first start: shown once, never stored.
#[derive(Debug, Clone)]
pub struct BootstrapKey {
    /// The key itself.
    pub key: String,
}

/// A request over its key's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// Whole seconds until a request would be allowed again (at least 1).
    pub retry_after: u64,
}

/// The keys in force and the rate limiters of the keys that have one.
pub struct ApiKeys {
    source: KeySource,
    ring: RwLock<Arc<KeyRing>>,
    /// The file's bytes the ring was parsed from at start-up, if known: the watcher compares
    /// later reads with them, so a change made between loading and watching is not missed.
    loaded: Option<Vec<u8>>,
    /// One limiter per key id with a rate; rebuilt when a key's rate changes.
    limiters: Mutex<HashMap<String, (u64, Arc<DefaultDirectRateLimiter>)>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// The limiter's quota for `rps` requests a second; `None` for a rate so high its period is
/// under a nanosecond (no limit). Rates below [`keys::MIN_RPS`] count as that rate.
fn quota(rps: f64) -> Option<Quota> {
    let period = Duration::try_from_secs_f64(1.0 / rps.max(keys::MIN_RPS)).ok()?;
    // A burst of one second's worth of requests (at least one).
    let burst = NonZeroU32::new(rps.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)?;
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

impl ApiKeys {
    /// Keys from `ring`, read from `source`.
    pub fn new(source: KeySource, ring: KeyRing) -> Self {
        Self {
            source,
            ring: RwLock::new(Arc::new(ring)),
            loaded: None,
            limiters: Mutex::new(HashMap::new()),
        }
    }

    /// Keys parsed from the file at `source` as it is read now, its bytes kept for the watcher.
    fn read(source: KeySource) -> Result<Self, KeyFileError> {
        let (ring, bytes) = KeyRing::from_file(source.path())?;
        Ok(Self {
            loaded: Some(bytes),
            ..Self::new(source, ring)
        })
    }

    /// Load the configured keys file, or without one the data directory's own keys file,
    /// creating it with one admin key on first start (returned once, to be shown to the user).
    pub fn open(
        keys_file: Option<&Path>,
        data_dir: &Path,
    ) -> Result<(Self, Option<BootstrapKey>), KeyFileError> {
        if let Some(path) = keys_file {
            return Ok((Self::read(KeySource::File(path.to_owned()))?, None));
        }
        let path = data_dir.join(LOCAL_KEYS_FILE);
        if path.exists() {
            return Ok((Self::read(KeySource::Local(path))?, None));
        }
        let key = keys::new_key()?;
        let line = keys::key_line("admin", &[Scope::Admin].into(), &key, None)?;
        let io = |source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        };
        crate::private_file::create_dir(data_dir).map_err(io)?;
        crate::private_file::create(
            &path,
            &format!(
                "# FaceKey API keys: <key-id>:<scopes>:<sha256 of the key>[:<requests per second>]\n\
                 # Created on first start; add keys with `facekey-runtime new-api-key`.\n{line}\n"
            ),
        )
        .map_err(io)?;
        Ok((
            Self::read(KeySource::Local(path))?,
            Some(BootstrapKey { key }),
        ))
    }

    /// Where the keys come from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The keys in force now.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Replace the keys in force.
    pub fn replace(&self, ring: KeyRing) {
        match self.ring.write() {
            Ok(mut r) => *r = Arc::new(ring),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(ring),
        }
    }

    /// Take one request from `entry`'s rate budget; `Err` with the wait when it is spent.
    pub fn admit(&self, entry: &KeyEntry) -> Result<(), RateLimited> {
        let Some(rps) = entry.rps else {
            return Ok(());
        };
        let Some(quota) = quota(rps) else {
            return Ok(());
        };
        let limiter = {
            let mut map = self
                .limiters
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            // Looked up by &str first: the key id is only copied when a limiter is made.
            match map.get(entry.id()) {
                Some((bits, limiter)) if *bits == rps.to_bits() => limiter.clone(),
                _ => {
                    let limiter = Arc::new(RateLimiter::direct(quota));
                    map.insert(entry.id().to_owned(), (rps.to_bits(), limiter.clone()));
                    limiter
                }
            }
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RateLimited {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Re-read the keys file whenever its contents change, until the task is dropped. A changed
    /// file that does not parse is logged and counted (`rejected`): it grants nothing new, but
    /// the keys it no longer lists on a valid line are revoked at once ([`KeyRing::surviving`];
    /// emptied of keys, every key is). A file that cannot be read (a Secret's files are swapped
    /// through a symlink) leaves the keys in force.
    pub async fn watch(self: Arc<Self>, metrics: Metrics) {
        let path = self.source.path().to_owned();
        let mut last = match &self.loaded {
            Some(bytes) => Some(bytes.clone()),
            None => tokio::fs::read(&path).await.ok(),
        };
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            let now = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    if last.is_some() {
                        tracing::error!(file = %path.display(), error = %e, "API keys file unreadable; the loaded keys stay in force");
                        metrics
                            .api_key_reloads
                            .with_label_values(&["rejected"])
                            .inc();
                        last = None;
                    }
                    continue;
                }
            };
            if last.as_deref() == Some(now.as_slice()) {
                continue;
            }
            last = Some(now.clone());
            let parsed = String::from_utf8(now)
                .map_err(|_| "not UTF-8".to_owned())
                .and_then(|text| KeyRing::parse(&text, &path).map_err(|e| e.to_string()));
            match parsed {
                Ok(ring) => {
                    let count = ring.entries().len();
                    self.replace(ring);
                    metrics.api_keys.set(count as i64);
                    metrics.api_key_reloads.with_label_values(&["loaded"]).inc();
                    tracing::info!(file = %path.display(), keys = count, "API keys file changed; keys reloaded");
                }
                Err(e) => {
                    let text = String::from_utf8_lossy(last.as_deref().unwrap_or_default());
                    let before = self.ring();
                    let kept = before.surviving(&text);
                    let revoked: Vec<&str> = before
                        .entries()
                        .iter()
                        .map(KeyEntry::id)
                        .filter(|id| !kept.entries().iter().any(|k| k.id() == *id))
                        .collect();
                    let narrowed: Vec<&str> = kept
                        .entries()
                        .iter()
                        .filter(|k| !before.entries().contains(k))
                        .map(KeyEntry::id)
                        .collect();
                    tracing::error!(
                        error = %e,
                        revoked = ?revoked,
                        narrowed = ?narrowed,
                        "API keys file changed but is invalid; nothing new is granted, keys it no \
                         longer lists are revoked, keys it now grants less are narrowed, the \
                         others stay in force"
                    );
                    // A key narrowed (fewer scopes, a lower rate) is put in force as surely as
                    // one revoked: a typo elsewhere must not hold back taking a leaked admin
                    // key down to verify.
                    if kept != *before {
                        metrics.api_keys.set(kept.entries().len() as i64);
                        self.replace(kept);
                    }
                    // Counted once the revocations are in force.
                    metrics
                        .api_key_reloads
                        .with_label_values(&["rejected"])
                        .inc();
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn first_start_creates_one_admin_key_and_later_starts_reuse_it() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, boot) = ApiKeys::open(None, dir.path()).unwrap();
        let boot = boot.unwrap();
        let ring = keys.ring();
        let admin = ring.authenticate(&boot.key).unwrap();
        assert_eq!(*admin.caller().scopes, [Scope::Admin].into());
        let stored = std::fs::read_to_string(dir.path().join(LOCAL_KEYS_FILE)).unwrap();
        assert!(!stored.contains(&boot.key), "only the hash is stored");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(LOCAL_KEYS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (again, none) = ApiKeys::open(None, dir.path()).unwrap();
        assert!(none.is_none(), "the key is shown on first start only");
        assert!(again.ring().authenticate(&boot.key).is_some());
    }

    #[test]
    fn a_configured_file_is_used_and_must_hold_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        std::fs::write(&f, "# none\n").unwrap();
        assert!(matches!(
            ApiKeys::open(Some(&f), dir.path()),
            Err(KeyFileError::Empty { .. })
        ));
        let missing = dir.path().join("missing");
        assert!(ApiKeys::open(Some(&missing), dir.path()).is_err());
        assert!(!dir.path().join(LOCAL_KEYS_FILE).exists());
    }

    /// A keys file changed between start-up's read and the watcher's first look (a Secret
    /// updated during a rollout) is applied: the watcher starts from the bytes loaded, not from
    /// the file as it finds it.
    #[tokio::test]
    async fn a_change_between_loading_and_watching_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        let (old, new) = (keys::new_key().unwrap(), keys::new_key().unwrap());
        let line = |id: &str, key: &str| keys::key_line(id, &[Scope::Verify].into(), key, None);
        std::fs::write(&f, line("old", &old).unwrap()).unwrap();
        let (loaded, _) = ApiKeys::open(Some(&f), dir.path()).unwrap();
        let loaded = Arc::new(loaded);
        std::fs::write(&f, line("new", &new).unwrap()).unwrap();
        let watcher = tokio::spawn(loaded.clone().watch(Metrics::new().unwrap()));
        tokio::time::sleep(RELOAD_EVERY * 2 + Duration::from_millis(500)).await;
        watcher.abort();
        let ring = loaded.ring();
        assert!(
            ring.authenticate(&old).is_none(),
            "the revoked key is still accepted"
        );
        assert!(ring.authenticate(&new).is_some());
    }

    /// A keys file that does not parse still narrows the keys whose lines now grant less, even
    /// when it revokes none (it used to put the narrowed ring in force only with a revocation).
    #[tokio::test]
    async fn an_invalid_file_narrows_keys_without_revoking_any() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("keys");
        let key = keys::new_key().unwrap();
        let line = |scope: Scope, rps| keys::key_line("ops", &[scope].into(), &key, rps).unwrap();
        std::fs::write(&f, line(Scope::Admin, None)).unwrap();
        let (loaded, _) = ApiKeys::open(Some(&f), dir.path()).unwrap();
        let loaded = Arc::new(loaded);
        let watcher = tokio::spawn(loaded.clone().watch(Metrics::new().unwrap()));
        std::fs::write(&f, format!("{}\nbroken\n", line(Scope::Verify, Some(1.0)))).unwrap();
        tokio::time::sleep(RELOAD_EVERY * 2 + Duration::from_millis(500)).await;
        watcher.abort();
        let ring = loaded.ring();
        let entry = ring.authenticate(&key).expect("the key is still listed");
        assert_eq!(entry.scopes(), &BTreeSet::from([Scope::Verify]));
        assert_eq!(entry.rps, Some(1.0));
    }

    /// A rate so low its period overflowed the rate limiter (1e-20: a panic on every request of
    /// the key) is held to the lowest rate: one request, then a wait.
    #[test]
    fn a_tiny_rate_limits_without_a_panic() {
        let key = keys::new_key().unwrap();
        let line = keys::key_line("slow", &[Scope::Verify].into(), &key, Some(1e-20)).unwrap();
        let ring = KeyRing::parse(&line, Path::new("k")).unwrap();
        let keys = ApiKeys::new(KeySource::File("k".into()), ring);
        let entry = keys.ring().authenticate(&key).unwrap().clone();
        assert_eq!(entry.rps, Some(1e-20));
        assert!(keys.admit(&entry).is_ok());
        assert!(keys.admit(&entry).unwrap_err().retry_after > 3600);
    }

    #[test]
    fn rate_limit_spends_a_burst_then_asks_to_wait() {
        let key = keys::new_key().unwrap();
        let line = keys::key_line("slow", &[Scope::Verify].into(), &key, Some(2.0)).unwrap();
        let ring = KeyRing::parse(&line, Path::new("k")).unwrap();
        let keys = ApiKeys::new(KeySource::File("k".into()), ring);
        let entry = keys.ring().authenticate(&key).unwrap().clone();
        assert!(keys.admit(&entry).is_ok());
        assert!(keys.admit(&entry).is_ok());
        let refused = keys.admit(&entry).unwrap_err();
        assert_eq!(refused.retry_after, 1);
        let unlimited = keys::key_line("free", &[Scope::Verify].into(), &key, None).unwrap();
        let ring = KeyRing::parse(&unlimited, Path::new("k")).unwrap();
        let entry = ring.authenticate(&key).unwrap().clone();
        for _ in 0..1000 {
            assert!(keys.admit(&entry).is_ok());
        }
    }
}
