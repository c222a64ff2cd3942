//! Sealing what the challenge stores keep outside memory, under the template key
//! ([`TemplateKeys`], AES-256-GCM bound to where the value belongs): bytes as the cipher's
//! words, and an accepted session's fingerprints for the replay record, the same in PostgreSQL
//! ([`super::pg`]) and in the embedded mode's journal ([`super::replay_file`]).

use super::fingerprint::{FINGERPRINT_SIDE, Fingerprint};
use crate::store::cipher::{Binding, KeyError, Sealed, TemplateKeys};

/// The binding's "embedding model" of a replay-record entry: an accepted session's fingerprints.
pub(crate) const PRINTS_KIND: &str = "facekey.session-prints.v1";

/// Bytes as the little-endian 32-bit words the cipher seals (length-prefixed, zero-padded).
/// The cipher takes embeddings as `f32`; `from_le_bytes`/`to_le_bytes` move the bits unchanged,
/// so any bytes round-trip exactly (no arithmetic touches them).
pub(crate) fn bytes_to_words(bytes: &[u8]) -> Vec<f32> {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(bytes.len() / 4 + 2);
    out.push(f32::from_le_bytes(len.to_le_bytes()));
    for c in bytes.chunks(4) {
        let mut w = [0u8; 4];
        w[..c.len()].copy_from_slice(c);
        out.push(f32::from_le_bytes(w));
    }
    out
}

/// The inverse of [`bytes_to_words`]; `None` when the length prefix does not fit.
pub(crate) fn words_to_bytes(words: &[f32]) -> Option<Vec<u8>> {
    let (len, rest) = words.split_first()?;
    let len = usize::try_from(u32::from_le_bytes(len.to_le_bytes())).ok()?;
    let mut out: Vec<u8> = rest.iter().flat_map(|w| w.to_le_bytes()).collect();
    if len > out.len() {
        return None;
    }
    out.truncate(len);
    Some(out)
}

/// Seals `bytes` with `keys`, bound to `binding`: the cipher seals 32-bit words, so the bytes go
/// as words ([`bytes_to_words`]).
pub(crate) fn seal_bytes(
    keys: &TemplateKeys,
    binding: Binding<'_>,
    bytes: &[u8],
) -> Result<Sealed, KeyError> {
    keys.seal(binding, &bytes_to_words(bytes))
}

/// The bytes [`seal_bytes`] sealed, opened with `binding`.
pub(crate) fn open_bytes(
    keys: &TemplateKeys,
    binding: Binding<'_>,
    sealed: &Sealed,
) -> Result<Vec<u8>, String> {
    let words = keys.open(binding, sealed).map_err(|e| e.to_string())?;
    words_to_bytes(&words).ok_or_else(|| "sealed data truncated".to_owned())
}

/// Where an accepted session's fingerprints belong: the session of the subject.
fn prints_binding<'a>(subject: &'a str, session: &'a str) -> Binding<'a> {
    Binding {
        template_id: session,
        subject_id: subject,
        model: PRINTS_KIND,
    }
}

/// Seals the fingerprints of `session`, accepted for `subject`: their bytes in order.
pub(crate) fn seal_prints(
    keys: &TemplateKeys,
    subject: &str,
    session: &str,
    prints: &[Fingerprint],
) -> Result<Sealed, KeyError> {
    let bytes: Vec<u8> = prints.iter().flat_map(|p| p.as_bytes()).copied().collect();
    seal_bytes(keys, prints_binding(subject, session), &bytes)
}

/// The fingerprints [`seal_prints`] sealed for `session` of `subject`.
pub(crate) fn open_prints(
    keys: &TemplateKeys,
    subject: &str,
    session: &str,
    sealed: &Sealed,
) -> Result<Vec<Fingerprint>, String> {
    let bytes = open_bytes(keys, prints_binding(subject, session), sealed)?;
    let side = FINGERPRINT_SIDE * FINGERPRINT_SIDE;
    if bytes.len() % side != 0 {
        return Err(format!("{} bytes are not whole fingerprints", bytes.len()));
    }
    bytes
        .chunks(side)
        .map(|c| Fingerprint::try_from(c.to_vec()).map_err(|e| e.to_string()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_through_words() {
        for len in [0usize, 1, 3, 4, 5, 1000] {
            // Every byte value, NaN bit patterns included.
            let bytes: Vec<u8> = (0..len).map(|i| (i * 97 % 256) as u8).collect();
            let nan = [0xff, 0xff, 0xbf, 0x7f, 0x01, 0x00, 0xc0, 0xff];
            for b in [bytes.clone(), [bytes.as_slice(), &nan].concat()] {
                assert_eq!(words_to_bytes(&bytes_to_words(&b)).unwrap(), b);
            }
        }
        // A length beyond the words is refused.
        let mut w = bytes_to_words(b"abcd");
        w[0] = f32::from_le_bytes(100u32.to_le_bytes());
        assert_eq!(words_to_bytes(&w), None);
    }
}
