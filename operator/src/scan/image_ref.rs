//! Container image references, normalised so `nginx` and `index.docker.io/library/nginx:latest`
//! compare equal (needed to find the trivy-operator report of an image).

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host, `index.docker.io` for Docker Hub.
    pub registry: String,
    /// Repository path, with `library/` for official Docker Hub images.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest is given.
    pub tag: Option<String>,
    /// `sha256:…` digest when pinned.
    pub digest: Option<String>,
}

const DOCKER_HUB: &str = "index.docker.io";

/// Normalise a registry host name (Docker Hub has several spellings).
pub fn normalize_registry(host: &str) -> String {
    match host {
        "docker.io" | "registry-1.docker.io" | "index.docker.io" => DOCKER_HUB.to_owned(),
        other => other.to_owned(),
    }
}

/// Parse `[registry/]repository[:tag][@digest]`; `None` for an empty reference.
pub fn parse(reference: &str) -> Option<ImageRef> {
    let reference = reference.trim();
    if reference.is_empty() {
        return None;
    }
    let (rest, digest) = match reference.split_once('@') {
        Some((r, d)) => (r, Some(d.to_owned())),
        None => (reference, None),
    };
    let (first, remainder) = match rest.split_once('/') {
        Some((first, remainder))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), remainder)
        }
        _ => (None, rest),
    };
    // A tag is a ':' after the last '/' of the path.
    let (path, tag) = match remainder.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t.to_owned())),
        _ => (remainder, None),
    };
    let registry = normalize_registry(first.unwrap_or(DOCKER_HUB));
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_owned()),
        _ => tag,
    };
    Some(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

impl ImageRef {
    /// Whether `other` names the same image: same repository and, if this one is pinned by
    /// digest, the same digest; otherwise the same tag.
    pub fn matches(&self, other: &ImageRef) -> bool {
        if self.registry != other.registry || self.repository != other.repository {
            return false;
        }
        match &self.digest {
            Some(d) => other.digest.as_ref() == Some(d),
            None => self.tag.is_some() && self.tag == other.tag,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_hub_short_names_normalise() {
        assert_eq!(
            parse("nginx").unwrap(),
            parse("docker.io/library/nginx:latest").unwrap()
        );
        let r = parse("bitnami/redis:7").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            (DOCKER_HUB, "bitnami/redis")
        );
    }

    #[test]
    fn registry_with_port_and_digest() {
        let r = parse("localhost:5000/facekey/runtime:0.1@sha256:abc").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "facekey/runtime");
        assert_eq!(r.tag.as_deref(), Some("0.1"));
        assert_eq!(r.digest.as_deref(), Some("sha256:abc"));
    }

    #[test]
    fn matching_prefers_digest() {
        let pinned = parse("ghcr.io/f/r@sha256:1").unwrap();
        assert!(pinned.matches(&parse("ghcr.io/f/r:0.1@sha256:1").unwrap()));
        assert!(!pinned.matches(&parse("ghcr.io/f/r:0.1@sha256:2").unwrap()));
        let tagged = parse("ghcr.io/f/r:0.1").unwrap();
        assert!(tagged.matches(&parse("ghcr.io/f/r:0.1@sha256:9").unwrap()));
        assert!(!tagged.matches(&parse("ghcr.io/f/r:0.2").unwrap()));
        assert!(!tagged.matches(&parse("quay.io/f/r:0.1").unwrap()));
    }
}
