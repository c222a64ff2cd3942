//! Templates at rest: AES-256-GCM under keys from a key file, with rotation. Every sealed
//! template records the id of the key that sealed it; new writes use the current key (the first
//! in the file) and older keys stay readable, so keys rotate by putting a new one first. The
//! template's id, subject and embedding model are the associated data, so a ciphertext moved to
//! another row no longer opens.
//!
//! Key file: one key per line, `<key-id>:<64 hex digits>` (32 random bytes), `#` comments and
//! blank lines allowed. Create one with `facekey-runtime gen-template-key`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

/// Bytes of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// File name of the key the embedded store creates in its data directory when no key file is
/// configured.
pub const LOCAL_KEY_FILE: &str = "template.key";

/// Why keys could not be loaded or a template not sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read or written.
    #[error("template key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the key file is malformed (the key material is never echoed).
    #[error("template key file {path}, line {line}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The key file holds no key.
    #[error("template key file {0} holds no key (expected lines `<key-id>:<64 hex digits>`)")]
    Empty(PathBuf),
    /// A template was sealed with a key the key file does not hold.
    #[error(
        "template {template} was encrypted with key {key_id:?}, which the template key file does \
         not hold (keys: {known:?}); add that key back to read it"
    )]
    UnknownKey {
        /// The template id.
        template: String,
        /// The key id it names.
        key_id: String,
        /// The key ids loaded.
        known: Vec<String>,
    },
    /// Authentication failed: a different key under the same id, or a damaged or moved record.
    #[error(
        "template {template} does not decrypt with key {key_id:?}: the key file holds a different \
         key under that id, or the record was altered"
    )]
    Decrypt {
        /// The template id.
        template: String,
        /// The key id used.
        key_id: String,
    },
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// A sealed template has the wrong shape (truncated ciphertext, bad nonce).
    #[error("template {template}: {message}")]
    Shape {
        /// The template id.
        template: String,
        /// What is wrong.
        message: String,
    },
}

/// What a sealed template is bound to (the associated data of its encryption).
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// The template's id.
    pub template_id: &'a str,
    /// Its subject's id.
    pub subject_id: &'a str,
    /// Its embedding model.
    pub model: &'a str,
}

impl Binding<'_> {
    fn aad(&self) -> Vec<u8> {
        format!(
            "facekey.template.v1\0{}\0{}\0{}",
            self.template_id, self.subject_id, self.model
        )
        .into_bytes()
    }
}

/// An encrypted embedding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the key that sealed it.
    pub key_id: String,
    /// The random nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext with the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The loaded template keys: the current one seals, every one opens.
#[derive(Clone)]
pub struct TemplateKeys {
    current: String,
    keys: BTreeMap<String, Aes256Gcm>,
    source: String,
}

impl std::fmt::Debug for TemplateKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemplateKeys")
            .field("current", &self.current)
            .field("ids", &self.ids())
            .field("source", &self.source)
            .finish()
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Fill `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), KeyError> {
    getrandom::fill(buf).map_err(|e| KeyError::Random(e.to_string()))
}

/// A new key file line `<id>:<64 hex digits>` with fresh random key material.
pub fn new_key_line(id: &str) -> Result<String, KeyError> {
    if !valid_key_id(id) {
        return Err(KeyError::Malformed {
            path: PathBuf::from("<new key>"),
            line: 1,
            message: format!(
                "key id {id:?} must be 1-64 characters of letters, digits, `.`, `_` or `-`"
            ),
        });
    }
    let mut key = [0u8; KEY_LEN];
    random_bytes(&mut key)?;
    Ok(format!("{id}:{}", hex::encode(key)))
}

impl TemplateKeys {
    /// Parse key file text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let mut keys = BTreeMap::new();
        let mut current = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| KeyError::Malformed {
                path: path.to_path_buf(),
                line: i + 1,
                message: message.to_owned(),
            };
            let (id, hex_key) = line
                .split_once(':')
                .ok_or_else(|| bad("expected `<key-id>:<64 hex digits>`"))?;
            let id = id.trim();
            if !valid_key_id(id) {
                return Err(bad(
                    "the key id must be 1-64 characters of letters, digits, `.`, `_` or `-`",
                ));
            }
            let bytes =
                hex::decode(hex_key.trim()).map_err(|_| bad("the key is not hexadecimal"))?;
            if bytes.len() != KEY_LEN {
                return Err(bad(&format!(
                    "the key has {} bytes; AES-256 needs {KEY_LEN} (64 hex digits)",
                    bytes.len()
                )));
            }
            let cipher =
                Aes256Gcm::new_from_slice(&bytes).map_err(|_| bad("unusable key material"))?;
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(bad(&format!("key id {id:?} appears twice")));
            }
            current.get_or_insert_with(|| id.to_owned());
        }
        let current = current.ok_or_else(|| KeyError::Empty(path.to_path_buf()))?;
        Ok(Self {
            current,
            keys,
            source: path.display().to_string(),
        })
    }

    /// Load a key file (e.g. a mounted Secret).
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The embedded store's default: `<data_dir>/template.key`, created with one fresh key
    /// (owner-only permissions) on first start.
    pub fn load_or_create_local(data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join(LOCAL_KEY_FILE);
        if !path.exists() {
            let io = |source| KeyError::Io {
                path: path.clone(),
                source,
            };
            crate::private_file::create_dir(data_dir).map_err(io)?;
            let text = format!(
                "# FaceKey template encryption key, created on first start. Keep it with the \
                 data; without it the templates cannot be read.\n{}\n",
                new_key_line("local-1")?
            );
            crate::private_file::create(&path, &text).map_err(io)?;
        }
        Self::from_file(&path)
    }

    /// The id new writes use.
    pub fn current_id(&self) -> &str {
        &self.current
    }

    /// Every loaded key id.
    pub fn ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Where the keys came from (a path), for logs.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Encrypt an embedding with the current key.
    pub fn seal(&self, binding: Binding<'_>, embedding: &[f32]) -> Result<Sealed, KeyError> {
        let cipher = self
            .keys
            .get(&self.current)
            .ok_or_else(|| KeyError::UnknownKey {
                template: binding.template_id.to_owned(),
                key_id: self.current.clone(),
                known: self.ids(),
            })?;
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let plaintext: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
        let aad = binding.aad();
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Shape {
                template: binding.template_id.to_owned(),
                message: "encryption failed".into(),
            })?;
        Ok(Sealed {
            key_id: self.current.clone(),
            nonce,
            ciphertext,
        })
    }

    /// Decrypt a sealed embedding; fails (never returns garbage) with an unknown or wrong key.
    pub fn open(&self, binding: Binding<'_>, sealed: &Sealed) -> Result<Vec<f32>, KeyError> {
        let cipher = self
            .keys
            .get(&sealed.key_id)
            .ok_or_else(|| KeyError::UnknownKey {
                template: binding.template_id.to_owned(),
                key_id: sealed.key_id.clone(),
                known: self.ids(),
            })?;
        let aad = binding.aad();
        let plaintext = cipher
            .decrypt(
                &Nonce::from(sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| KeyError::Decrypt {
                template: binding.template_id.to_owned(),
                key_id: sealed.key_id.clone(),
            })?;
        if plaintext.len() % 4 != 0 {
            return Err(KeyError::Shape {
                template: binding.template_id.to_owned(),
                message: format!("{} plaintext bytes is not a vector of f32", plaintext.len()),
            });
        }
        Ok(plaintext
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const B: Binding<'static> = Binding {
        template_id: "t1",
        subject_id: "s1",
        model: "m",
    };

    fn keys(text: &str) -> TemplateKeys {
        TemplateKeys::parse(text, Path::new("keys")).unwrap()
    }

    #[test]
    fn seal_open_round_trip_and_rotation() {
        let old = new_key_line("old").unwrap();
        let new = new_key_line("new").unwrap();
        let v1 = keys(&format!("{old}\n"));
        let sealed = v1.seal(B, &[1.0, -2.5, 3.25]).unwrap();
        assert_eq!(sealed.key_id, "old");
        assert_eq!(v1.open(B, &sealed).unwrap(), vec![1.0, -2.5, 3.25]);
        // Rotation: the new key first; old templates still open, new ones use the new key.
        let v2 = keys(&format!("# rotated\n{new}\n\n{old}\n"));
        assert_eq!(v2.current_id(), "new");
        assert_eq!(v2.open(B, &sealed).unwrap(), vec![1.0, -2.5, 3.25]);
        assert_eq!(v2.seal(B, &[0.5]).unwrap().key_id, "new");
        // Without the old key: a clear error naming the missing key, never garbage.
        let v3 = keys(&new);
        let err = v3.open(B, &sealed).unwrap_err();
        assert!(matches!(err, KeyError::UnknownKey { .. }), "{err}");
        assert!(err.to_string().contains("\"old\""), "{err}");
    }

    #[test]
    fn wrong_key_or_moved_record_fails_authentication() {
        let a = keys(&new_key_line("k").unwrap());
        let b = keys(&new_key_line("k").unwrap());
        let sealed = a.seal(B, &[1.0; 128]).unwrap();
        assert!(matches!(
            b.open(B, &sealed).unwrap_err(),
            KeyError::Decrypt { .. }
        ));
        let other_row = Binding {
            template_id: "t2",
            ..B
        };
        assert!(matches!(
            a.open(other_row, &sealed).unwrap_err(),
            KeyError::Decrypt { .. }
        ));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(a.open(B, &tampered).is_err());
        // Two seals of the same vector differ (fresh nonces).
        assert_ne!(a.seal(B, &[1.0; 128]).unwrap(), sealed);
    }

    #[test]
    fn malformed_files_name_the_line_without_the_key() {
        let secret = "ab".repeat(31); // 31 bytes: too short
        let err = TemplateKeys::parse(&format!("# c\nk:{secret}\n"), Path::new("/s/keys"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/s/keys, line 2") && err.contains("31 bytes"),
            "{err}"
        );
        assert!(
            !err.contains(&secret),
            "the key material must not be echoed: {err}"
        );
        for bad in ["nocolon", "bad id:00", &format!("k:{}", "zz".repeat(32))] {
            assert!(TemplateKeys::parse(bad, Path::new("f")).is_err(), "{bad}");
        }
        let line = new_key_line("k").unwrap();
        assert!(TemplateKeys::parse(&format!("{line}\n{line}"), Path::new("f")).is_err());
        assert!(matches!(
            TemplateKeys::parse("# only a comment\n", Path::new("f")),
            Err(KeyError::Empty(_))
        ));
    }

    #[test]
    fn local_key_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let a = TemplateKeys::load_or_create_local(dir.path()).unwrap();
        let sealed = a.seal(B, &[7.0]).unwrap();
        let b = TemplateKeys::load_or_create_local(dir.path()).unwrap();
        assert_eq!(b.open(B, &sealed).unwrap(), vec![7.0]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(LOCAL_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let text = std::fs::read_to_string(dir.path().join(LOCAL_KEY_FILE)).unwrap();
        let material = text.lines().last().unwrap().split_once(':').unwrap().1;
        assert!(
            !format!("{a:?}").contains(material),
            "Debug must not show keys"
        );
    }
}
