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

/// Whether `digest` is a well-formed `sha256:` manifest digest (64 lower-case hex digits).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `reference` without its tag and digest, as written (`ghcr.io/f/r:0.1@sha256:…` → `ghcr.io/f/r`).
pub fn repository_of(reference: &str) -> &str {
    let reference = reference.trim();
    let without_digest = reference.split_once('@').map_or(reference, |(r, _)| r);
    match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => without_digest,
    }
}

/// `reference` pinned to `digest`: `<repository as written>@sha256:…`, what the Deployment runs.
pub fn pinned(reference: &str, digest: &str) -> String {
    format!("{}@{digest}", repository_of(reference))
}

/// The `sha256:…` digest of `reference` when it is pinned by one.
pub fn digest_of(reference: &str) -> Option<&str> {
    reference
        .split_once('@')
        .map(|(_, d)| d)
        .filter(|d| is_sha256_digest(d))
}

/// The digest among `repo_digests` (`repo@sha256:…`, as Trivy reports them) that belongs to the
/// repository of `image`; the first well-formed one when none names it.
pub fn digest_for(image: &str, repo_digests: &[String]) -> Option<String> {
    let wanted = parse(image);
    let candidates: Vec<(Option<ImageRef>, &str)> = repo_digests
        .iter()
        .filter_map(|rd| {
            let (repo, digest) = rd.split_once('@')?;
            is_sha256_digest(digest).then(|| (parse(repo), digest))
        })
        .collect();
    let same_repo = candidates.iter().find(|(r, _)| {
        matches!((r, &wanted), (Some(r), Some(w)) if r.registry == w.registry && r.repository == w.repository)
    });
    same_repo
        .or_else(|| candidates.first())
        .map(|(_, d)| (*d).to_owned())
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

    const D1: &str = "sha256:1f3c5a7e9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f0a1c3e5b7d9f2a4c6e8b0d1f3a";

    #[test]
    fn pinning_keeps_the_repository_as_written() {
        assert_eq!(pinned("ghcr.io/f/r:0.1", D1), format!("ghcr.io/f/r@{D1}"));
        assert_eq!(pinned("nginx", D1), format!("nginx@{D1}"));
        assert_eq!(
            pinned("localhost:5000/r:1@sha256:00", D1),
            format!("localhost:5000/r@{D1}")
        );
        assert_eq!(digest_of(&format!("ghcr.io/f/r:0.1@{D1}")), Some(D1));
        assert_eq!(digest_of("ghcr.io/f/r:0.1"), None);
        assert_eq!(digest_of("ghcr.io/f/r@sha256:short"), None);
    }

    #[test]
    fn the_digest_of_the_scanned_repository_is_chosen() {
        let d2 = D1.replace('1', "2");
        let digests = vec![
            format!("quay.io/mirror/r@{d2}"),
            format!("ghcr.io/f/r@{D1}"),
        ];
        assert_eq!(digest_for("ghcr.io/f/r:0.1", &digests).as_deref(), Some(D1));
        assert_eq!(
            digest_for("docker.io/other:1", &digests).as_deref(),
            Some(d2.as_str())
        );
        assert_eq!(
            digest_for("ghcr.io/f/r:0.1", &["ghcr.io/f/r@md5:x".into()]),
            None
        );
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
