//! What an API key may do: its scopes, and the caller a request was authenticated as.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A right an API key grants. `admin` includes every other scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Verify, identify, liveness and the score-fusion MLP.
    Verify,
    /// Create subjects and add faces to them.
    Enrol,
    /// List, read, rename and delete subjects and faces; scores and diagnostics in answers.
    Admin,
    /// Read `/metrics` when it is keyed.
    Metrics,
}

impl Scope {
    /// Every scope, in the order documentation lists them.
    pub const ALL: [Scope; 4] = [Scope::Verify, Scope::Enrol, Scope::Admin, Scope::Metrics];

    /// The scope's name in key files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Verify => "verify",
            Scope::Enrol => "enrol",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    /// Parse a scope name (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|scope| scope.as_str() == s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a request: the key's id (never the key) and its scopes. Inserted into the request's
/// extensions by the authentication middleware; handlers read it to shape answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's id from the keys file (shared with the key ring: copying a caller allocates
    /// nothing).
    pub key_id: Arc<str>,
    /// The scopes it was granted.
    pub scopes: Arc<BTreeSet<Scope>>,
}

impl Caller {
    /// Whether the caller holds `scope`, directly or through `admin`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    /// Whether the caller may see scores and diagnostics (the `admin` scope).
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_includes_every_scope() {
        let admin = Caller {
            key_id: "a".into(),
            scopes: Arc::new([Scope::Admin].into()),
        };
        assert!(Scope::ALL.iter().all(|s| admin.has(*s)));
        let verify = Caller {
            key_id: "v".into(),
            scopes: Arc::new([Scope::Verify].into()),
        };
        assert!(verify.has(Scope::Verify));
        assert!(!verify.has(Scope::Enrol) && !verify.has(Scope::Admin) && !verify.is_admin());
    }

    #[test]
    fn names_round_trip() {
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
        }
        assert_eq!(Scope::parse("Admin"), None);
        assert_eq!(Scope::parse(""), None);
    }
}
