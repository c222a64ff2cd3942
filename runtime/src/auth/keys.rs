//! API keys: the keys file format, key generation, and authentication of a presented key.
//!
//! A keys file holds one line per key, `<key-id>:<scope,scope…>:<hex SHA-256 of the key>` with
//! an optional fourth field `:<requests per second>`. Blank lines and `#` comments are ignored.
//! Only hashes are stored; a presented key is hashed and compared with every entry in constant
//! time, so neither the file nor the timing reveals a key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::scope::{Caller, Scope};

/// Prefix of generated keys, so leaked keys are recognisable by secret scanners.
pub const KEY_PREFIX: &str = "fk_";

/// Why a keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read.
    #[error("API keys file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("API keys file {path} line {line}: {problem}")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the line itself, which holds a hash).
        problem: String,
    },
    /// The file holds no key: nobody could call the API.
    #[error("API keys file {path} holds no key")]
    Empty {
        /// The file.
        path: String,
    },
    /// Arguments of `new-api-key` are invalid.
    #[error("{0}")]
    Invalid(String),
}

/// One key of the keys file.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    /// The caller it authenticates (the key's id and scopes), built once: each request takes a
    /// reference-counted copy.
    caller: Caller,
    /// SHA-256 of the key.
    hash: [u8; 32],
    /// Request rate limit, requests per second; `None` is unlimited.
    pub rps: Option<f64>,
}

impl KeyEntry {
    /// The caller this key authenticates.
    pub fn caller(&self) -> Caller {
        self.caller.clone()
    }

    /// The key's id (logs, metrics and audit events name keys by it).
    pub fn id(&self) -> &str {
        &self.caller.key_id
    }

    /// Its scopes.
    pub fn scopes(&self) -> &BTreeSet<Scope> {
        &self.caller.scopes
    }
}

impl KeyEntry {
    /// This key with only the rights `other` (another line of the same key) also grants: the
    /// scopes both hold (`admin` only if both have it) and the lower rate; `None` when they
    /// share no scope.
    fn narrowed_to(&self, other: &KeyEntry) -> Option<KeyEntry> {
        let both = |s: &Scope| self.caller.has(*s) && other.caller.has(*s);
        let scopes: BTreeSet<Scope> = if both(&Scope::Admin) {
            [Scope::Admin].into()
        } else {
            Scope::ALL.iter().copied().filter(|s| both(s)).collect()
        };
        if scopes.is_empty() {
            return None;
        }
        let rps = match (self.rps, other.rps) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(KeyEntry {
            caller: Caller {
                key_id: self.caller.key_id.clone(),
                scopes: Arc::new(scopes),
            },
            hash: self.hash,
            rps,
        })
    }
}

/// One line of a keys file: `None` for a blank or comment line, the entry, or why the line is
/// wrong (naming `path` and `line`).
fn parse_line(raw: &str, line: usize, path: &str) -> Result<Option<KeyEntry>, KeyFileError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let err = |problem: String| KeyFileError::Line {
        path: path.to_owned(),
        line,
        problem,
    };
    let fields: Vec<&str> = trimmed.split(':').collect();
    if !(3..=4).contains(&fields.len()) {
        return Err(err(format!(
            "expected <key-id>:<scopes>:<sha256 hex>[:<requests per second>], got {} field(s)",
            fields.len()
        )));
    }
    let id = fields[0].trim();
    if !valid_id(id) {
        return Err(err(
            "the key id must be 1-64 letters, digits, '-', '_' or '.'".into(),
        ));
    }
    let scopes = parse_scopes(fields[1]).map_err(err)?;
    let mut hash = [0u8; 32];
    hex::decode_to_slice(fields[2].trim(), &mut hash)
        .map_err(|_| err("the hash must be 64 hex digits (SHA-256 of the key)".to_owned()))?;
    let rps = fields
        .get(3)
        .map(|s| parse_rps(s))
        .transpose()
        .map_err(err)?;
    Ok(Some(KeyEntry {
        caller: Caller {
            key_id: id.into(),
            scopes: Arc::new(scopes),
        },
        hash,
        rps,
    }))
}

/// The parsed keys file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyRing {
    entries: Vec<KeyEntry>,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Parse a comma-separated scope list; every name must be known and the list non-empty.
pub fn parse_scopes(list: &str) -> Result<BTreeSet<Scope>, String> {
    let mut scopes = BTreeSet::new();
    for name in list.split(',').map(str::trim) {
        let scope = Scope::parse(name).ok_or_else(|| {
            format!("unknown scope {name:?} (known: verify, enrol, admin, metrics)")
        })?;
        scopes.insert(scope);
    }
    if scopes.is_empty() {
        return Err("a key needs at least one scope".into());
    }
    Ok(scopes)
}

/// The lowest rate a key is limited to (one request in about 32 years): a lower rate in a keys
/// file counts as this one. Lower rates mean a period the rate limiter cannot hold (1e-20
/// overflowed it, a panic on every request of the key).
pub const MIN_RPS: f64 = 1e-9;

fn parse_rps(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "the rate limit must be a positive number of requests per second, got {s:?}"
        )),
    }
}

impl KeyRing {
    /// Parse a keys file's text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyFileError> {
        let shown = path.display().to_string();
        let mut entries: Vec<KeyEntry> = Vec::new();
        let mut ids = BTreeMap::new();
        let mut hashes = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let Some(entry) = parse_line(raw, n + 1, &shown)? else {
                continue;
            };
            let err = |problem: String| KeyFileError::Line {
                path: shown.clone(),
                line: n + 1,
                problem,
            };
            if ids.insert(entry.id().to_owned(), n + 1).is_some() {
                return Err(err(format!("key id {:?} appears twice", entry.id())));
            }
            if let Some(first) = hashes.insert(entry.hash, entry.id().to_owned()) {
                return Err(err(format!(
                    "the key of {:?} is also the key of {first:?}: one key, one id (its scopes \
                     and audit trail)",
                    entry.id()
                )));
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            return Err(KeyFileError::Empty { path: shown });
        }
        Ok(Self { entries })
    }

    /// The keys of this ring a changed file that does not parse as a whole still lists: each
    /// kept only while a valid line of `text` carries its id and hash, with only the rights both
    /// lines grant (the scopes both hold, the lower rate). A broken edit grants nothing new (an
    /// added key, a wider scope or a higher rate waits for a file that parses), but a key whose
    /// line was removed, or an emptied file, is revoked at once, and a narrowed line narrows the
    /// key at once: one bad line cannot hold a revocation back.
    pub fn surviving(&self, text: &str) -> Self {
        let listed: BTreeMap<(String, [u8; 32]), KeyEntry> = text
            .lines()
            .enumerate()
            .filter_map(|(n, raw)| parse_line(raw, n + 1, "").ok().flatten())
            .map(|e| ((e.id().to_owned(), e.hash), e))
            .collect();
        Self {
            entries: self
                .entries
                .iter()
                .filter_map(|old| {
                    let new = listed.get(&(old.id().to_owned(), old.hash))?;
                    old.narrowed_to(new)
                })
                .collect(),
        }
    }

    /// Read and parse a keys file: the ring and the bytes it was parsed from (the key watcher
    /// compares later reads with them).
    pub fn from_file(path: &Path) -> Result<(Self, Vec<u8>), KeyFileError> {
        let read = |source| KeyFileError::Read {
            path: path.display().to_string(),
            source,
        };
        let bytes = std::fs::read(path).map_err(read)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| read(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        Ok((Self::parse(text, path)?, bytes))
    }

    /// The entry whose hash equals the presented key's. Every entry is compared, in constant
    /// time, whatever matches, so the time taken does not tell which or whether one did.
    pub fn authenticate(&self, presented: &str) -> Option<&KeyEntry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }

    /// The keys, for logs (ids and scopes only).
    pub fn entries(&self) -> &[KeyEntry] {
        &self.entries
    }
}

/// A new random key: [`KEY_PREFIX`] and 32 random bytes in URL-safe base64 (43 characters).
pub fn new_key() -> Result<String, KeyFileError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| KeyFileError::Invalid(format!("no randomness for a new key: {e}")))?;
    Ok(format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The keys-file line for `key`: `<id>:<scopes>:<sha256 hex>[:<rps>]`.
pub fn key_line(
    id: &str,
    scopes: &BTreeSet<Scope>,
    key: &str,
    rps: Option<f64>,
) -> Result<String, KeyFileError> {
    if !valid_id(id) {
        return Err(KeyFileError::Invalid(format!(
            "key id {id:?}: use 1-64 letters, digits, '-', '_' or '.'"
        )));
    }
    if scopes.is_empty() {
        return Err(KeyFileError::Invalid(
            "a key needs at least one scope".into(),
        ));
    }
    let scopes: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    let mut line = format!("{id}:{}:{hash}", scopes.join(","));
    if let Some(rps) = rps {
        parse_rps(&rps.to_string()).map_err(KeyFileError::Invalid)?;
        line.push_str(&format!(":{rps}"));
    }
    Ok(line)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring(text: &str) -> Result<KeyRing, KeyFileError> {
        KeyRing::parse(text, Path::new("keys"))
    }

    #[test]
    fn generated_keys_authenticate_through_their_line() {
        let key = new_key().unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43);
        assert_ne!(key, new_key().unwrap());
        let line = key_line("app", &[Scope::Verify].into(), &key, Some(2.5)).unwrap();
        assert!(
            !line.contains(&key[KEY_PREFIX.len()..]),
            "the line holds only the hash"
        );
        let other = new_key().unwrap();
        let text = format!(
            "# comment\n\n{line}\n{}\n",
            key_line("ops", &[Scope::Admin, Scope::Metrics].into(), &other, None).unwrap()
        );
        let r = ring(&text).unwrap();
        let e = r.authenticate(&key).unwrap();
        assert_eq!((e.id(), e.rps), ("app", Some(2.5)));
        assert_eq!(*e.scopes(), [Scope::Verify].into());
        assert_eq!(r.authenticate(&other).unwrap().id(), "ops");
        assert!(r.authenticate("fk_wrong").is_none());
        assert!(r.authenticate("").is_none());
        // A hash presented as the key does not authenticate.
        let hash = line.split(':').nth(2).unwrap();
        assert!(r.authenticate(hash).is_none());
    }

    #[test]
    fn a_broken_edit_revokes_removed_keys_and_grants_nothing() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let before = ring(&format!("app:verify:{a}\nops:admin:{b}\n")).unwrap();
        let ids = |r: &KeyRing| {
            r.entries()
                .iter()
                .map(|e| e.id().to_owned())
                .collect::<Vec<_>>()
        };
        // ops removed, a new key added, one broken line: ops revoked, the new one not granted.
        let kept = before.surviving(&format!("app:verify:{a}\nnew:admin:{c}\nbroken\n"));
        assert_eq!(ids(&kept), ["app"]);
        // A line whose hash changed is no longer the key in force.
        assert!(
            before
                .surviving(&format!("app:verify:{c}\nbroken"))
                .entries()
                .is_empty()
        );
        // A wider scope waits for a file that parses: the entry stays as it was.
        let kept = before.surviving(&format!("app:admin:{a}\nops:admin:{b}\nbroken"));
        assert_eq!(ids(&kept), ["app", "ops"]);
        assert!(!kept.entries()[0].scopes().contains(&Scope::Admin));
        // A narrower one applies at once: admin taken away, a rate set, though a line is broken.
        let kept = before.surviving(&format!("app:verify:{a}:5\nops:verify,enrol:{b}\nbroken"));
        assert_eq!(ids(&kept), ["app", "ops"]);
        assert_eq!(kept.entries()[0].rps, Some(5.0));
        assert_eq!(
            *kept.entries()[1].scopes(),
            [Scope::Enrol, Scope::Verify].into()
        );
        // No scope in common: revoked.
        let narrow = ring(&format!("app:verify:{a}\n")).unwrap();
        assert!(
            narrow
                .surviving(&format!("app:enrol:{a}\nbroken"))
                .entries()
                .is_empty()
        );
        // Emptied: nothing survives.
        assert!(before.surviving("# none\n").entries().is_empty());
    }

    #[test]
    fn malformed_lines_are_refused_with_their_number() {
        let h = "a".repeat(64);
        for (text, needle) in [
            (format!("x:verify:{h}:1:2"), "field"),
            ("x:verify".to_owned(), "field"),
            (format!("bad id:verify:{h}"), "key id"),
            (format!("x:root:{h}"), "unknown scope"),
            (format!("x::{h}"), "unknown scope"),
            ("x:verify:abc".to_owned(), "64 hex"),
            (format!("x:verify:{h}:0"), "rate limit"),
            (format!("x:verify:{h}:-1"), "rate limit"),
            (format!("x:verify:{h}\nx:admin:{}", "b".repeat(64)), "twice"),
            (format!("x:verify:{h}\ny:admin:{h}"), "also the key of"),
        ] {
            let e = ring(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
            assert!(e.contains("line"), "{e}");
            assert!(!e.contains(&h), "errors never echo hashes: {e}");
        }
        assert!(matches!(
            ring("# only a comment\n"),
            Err(KeyFileError::Empty { .. })
        ));
    }

    #[test]
    fn key_line_refuses_bad_arguments() {
        assert!(key_line("a b", &[Scope::Verify].into(), "k", None).is_err());
        assert!(key_line("a", &BTreeSet::new(), "k", None).is_err());
        assert!(key_line("a", &[Scope::Verify].into(), "k", Some(0.0)).is_err());
        assert!(key_line("a", &[Scope::Verify].into(), "k", Some(0.0005)).is_ok());
        assert!(parse_scopes("verify, enrol").is_ok());
        assert!(parse_scopes("verify,,enrol").is_err());
    }
}
