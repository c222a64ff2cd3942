//! Registry logins for Trivy: the pull secrets of a resource merged into one Docker `config.json`.
//!
//! The kubelet pulls an image with every `imagePullSecrets` entry that matches its registry, in
//! the order they are listed, until one works. Trivy reads one Docker config (`DOCKER_CONFIG`),
//! which holds one login per registry. The scan Job therefore mounts every pull secret and an
//! init container (`facekey-operator merge-docker-config`) merges them with [`merge`]: for a
//! registry present in several Secrets the first one listed wins (the kubelet's first attempt).
//!
//! Both Secret formats are read: `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`,
//! `{"auths": {registry: entry}}`) and the legacy `kubernetes.io/dockercfg` (key `.dockercfg`,
//! `{registry: entry}` without the outer `auths`). Registries are compared by host (scheme and
//! path dropped, as Docker's own config lookup does), Docker Hub's aliases as one, and written
//! under the key Trivy looks up: the host, or `https://index.docker.io/v1/` for Docker Hub.

use serde_json::{Map, Value};

/// File a Secret's `.dockerconfigjson` key is mounted as in a scan Job's pull-secret volume.
pub const DOCKERCONFIGJSON_FILE: &str = "dockerconfigjson";
/// File a Secret's legacy `.dockercfg` key is mounted as in a scan Job's pull-secret volume.
pub const DOCKERCFG_FILE: &str = "dockercfg";
/// The `auths` key Docker clients (and Trivy, through go-containerregistry) use for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// Host names that all mean Docker Hub.
const DOCKER_HUB_HOSTS: [&str; 3] = ["index.docker.io", "docker.io", "registry-1.docker.io"];

/// The format of one pull-secret file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.dockerconfigjson`: `{"auths": {registry: entry}}`.
    DockerConfigJson,
    /// `.dockercfg` (legacy): `{registry: entry}`.
    Dockercfg,
}

impl Format {
    /// Both formats, in the order they are read within one Secret.
    pub const ALL: [Format; 2] = [Format::DockerConfigJson, Format::Dockercfg];

    /// The Secret key holding this format.
    pub fn secret_key(self) -> &'static str {
        match self {
            Format::DockerConfigJson => ".dockerconfigjson",
            Format::Dockercfg => ".dockercfg",
        }
    }

    /// The file the key is mounted as (see [`DOCKERCONFIGJSON_FILE`], [`DOCKERCFG_FILE`]).
    pub fn file_name(self) -> &'static str {
        match self {
            Format::DockerConfigJson => DOCKERCONFIGJSON_FILE,
            Format::Dockercfg => DOCKERCFG_FILE,
        }
    }
}

/// One pull-secret file to merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// Where it came from, for messages (a path and the Secret key).
    pub origin: String,
    /// How to read it.
    pub format: Format,
    /// Its content.
    pub text: String,
}

/// A pull-secret file that cannot be used. The scan fails rather than scan without a login the
/// kubelet would have (it refuses such a Secret too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerConfigError {
    /// Not JSON at all.
    #[error("{origin}: not valid JSON: {reason}")]
    NotJson {
        /// The file.
        origin: String,
        /// The parser's message (no content of the file).
        reason: String,
    },
    /// JSON, but not a Docker config of its format.
    #[error("{origin}: not a Docker config ({format}): {what}")]
    NotDockerConfig {
        /// The file.
        origin: String,
        /// The Secret key it was read as.
        format: &'static str,
        /// What is wrong.
        what: String,
    },
}

/// A registry login that lost to an earlier Secret's login for the same registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    /// The registry (as written in the merged config).
    pub registry: String,
    /// The file whose login was dropped.
    pub origin: String,
    /// The file whose login is used.
    pub winner: String,
}

/// The merged Docker config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// The `auths` of the merged `config.json`: registry → login entry as written in its Secret.
    pub auths: Map<String, Value>,
    /// Registry → the file its login comes from, in merge order.
    pub sources: Vec<(String, String)>,
    /// Logins dropped because an earlier file had one for the same registry.
    pub shadowed: Vec<Shadowed>,
}

impl Merged {
    /// The merged `config.json` (`{"auths": {...}}`).
    pub fn to_json(&self) -> String {
        let mut root = Map::new();
        root.insert("auths".to_owned(), Value::Object(self.auths.clone()));
        Value::Object(root).to_string()
    }
}

/// The `auths` key a registry name of a Docker config is written under: the host (with port)
/// without scheme or path, `https://index.docker.io/v1/` for any of Docker Hub's names. `None`
/// for a name without a host.
pub fn registry_key(server: &str) -> Option<String> {
    let trimmed = server.trim();
    let schemeless = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let host = schemeless.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return None;
    }
    if DOCKER_HUB_HOSTS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host))
    {
        return Some(DOCKER_HUB_KEY.to_owned());
    }
    Some(host.to_owned())
}

/// The registry → login map of one file.
fn entries(input: &Input) -> Result<Map<String, Value>, DockerConfigError> {
    let shape = |what: String| DockerConfigError::NotDockerConfig {
        origin: input.origin.clone(),
        format: input.format.secret_key(),
        what,
    };
    let value: Value =
        serde_json::from_str(&input.text).map_err(|e| DockerConfigError::NotJson {
            origin: input.origin.clone(),
            reason: e.to_string(),
        })?;
    let Value::Object(mut root) = value else {
        return Err(shape("the top level is not a JSON object".to_owned()));
    };
    let auths = match input.format {
        Format::Dockercfg => root,
        // Other keys (credHelpers, credsStore, …) name programs the Job does not have; the
        // kubelet ignores them too.
        Format::DockerConfigJson => match root.remove("auths") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(auths)) => auths,
            Some(_) => return Err(shape("\"auths\" is not a JSON object".to_owned())),
        },
    };
    if let Some((registry, _)) = auths.iter().find(|(_, entry)| !entry.is_object()) {
        return Err(shape(format!(
            "the login for registry {registry:?} is not a JSON object"
        )));
    }
    Ok(auths)
}

/// Merge pull-secret files, given in `imagePullSecrets` order, into one Docker config: for a
/// registry present in several files the first one's login is kept. A file that is not JSON, or
/// not a Docker config of its format, is an error; no files give an empty config.
pub fn merge(inputs: &[Input]) -> Result<Merged, DockerConfigError> {
    let mut merged = Merged::default();
    for input in inputs {
        for (server, entry) in entries(input)? {
            // A name without a host matches no image (the kubelet's keyring skips it too).
            let Some(key) = registry_key(&server) else {
                continue;
            };
            if let Some((_, winner)) = merged.sources.iter().find(|(r, _)| *r == key) {
                merged.shadowed.push(Shadowed {
                    registry: key,
                    origin: input.origin.clone(),
                    winner: winner.clone(),
                });
                continue;
            }
            merged.auths.insert(key.clone(), entry);
            merged.sources.push((key, input.origin.clone()));
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn input(origin: &str, format: Format, value: &Value) -> Input {
        Input {
            origin: origin.to_owned(),
            format,
            text: value.to_string(),
        }
    }

    fn parsed(m: &Merged) -> Value {
        serde_json::from_str(&m.to_json()).unwrap()
    }

    #[test]
    fn both_formats_are_read() {
        let m = merge(&[
            input(
                "a",
                Format::DockerConfigJson,
                &json!({"auths": {"corp.example": {"auth": "Y29ycDpwdw=="}}}),
            ),
            input(
                "b",
                Format::Dockercfg,
                &json!({"https://legacy.example:5000": {"auth": "bGVnOnB3",
                    "username": "leg", "password": "pw", "email": "a@example.com"}}),
            ),
        ])
        .unwrap();
        assert_eq!(
            parsed(&m),
            json!({"auths": {
                "corp.example": {"auth": "Y29ycDpwdw=="},
                "legacy.example:5000": {"auth": "bGVnOnB3", "username": "leg",
                    "password": "pw", "email": "a@example.com"}}})
        );
        assert_eq!(
            m.sources,
            vec![
                ("corp.example".to_owned(), "a".to_owned()),
                ("legacy.example:5000".to_owned(), "b".to_owned())
            ]
        );
        assert!(m.shadowed.is_empty());
    }

    #[test]
    fn the_first_secret_listed_wins_a_registry() {
        let m = merge(&[
            input(
                "dockerhub",
                Format::DockerConfigJson,
                &json!({"auths": {"https://index.docker.io/v1/": {"auth": "aHViOjE="}}}),
            ),
            input(
                "corp",
                Format::DockerConfigJson,
                &json!({"auths": {
                    "docker.io": {"auth": "Y29ycDpodWI="},
                    "https://corp.example/v2/": {"auth": "Y29ycDox"}}}),
            ),
            input(
                "corp-legacy",
                Format::Dockercfg,
                &json!({"corp.example": {"auth": "b2xkOjE="}}),
            ),
        ])
        .unwrap();
        assert_eq!(
            parsed(&m),
            json!({"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOjE="},
                "corp.example": {"auth": "Y29ycDox"}}})
        );
        assert_eq!(
            m.shadowed,
            vec![
                Shadowed {
                    registry: DOCKER_HUB_KEY.to_owned(),
                    origin: "corp".to_owned(),
                    winner: "dockerhub".to_owned()
                },
                Shadowed {
                    registry: "corp.example".to_owned(),
                    origin: "corp-legacy".to_owned(),
                    winner: "corp".to_owned()
                },
            ]
        );
    }

    #[test]
    fn registry_names_are_compared_by_host() {
        for (name, key) in [
            ("corp.example", "corp.example"),
            ("https://corp.example", "corp.example"),
            ("http://corp.example:5000/v1/", "corp.example:5000"),
            ("corp.example/team/app", "corp.example"),
            ("docker.io", DOCKER_HUB_KEY),
            ("index.docker.io", DOCKER_HUB_KEY),
            ("https://index.docker.io/v1/", DOCKER_HUB_KEY),
            ("registry-1.docker.io", DOCKER_HUB_KEY),
        ] {
            assert_eq!(registry_key(name).as_deref(), Some(key), "{name}");
        }
        assert_eq!(registry_key(""), None);
        assert_eq!(registry_key("https://"), None);
        // A name without a host is dropped, not an error.
        let m = merge(&[input(
            "a",
            Format::Dockercfg,
            &json!({"": {"auth": "eDp5"}, "ok.example": {"auth": "eDp5"}}),
        )])
        .unwrap();
        assert_eq!(m.auths.keys().collect::<Vec<_>>(), ["ok.example"]);
    }

    #[test]
    fn malformed_files_are_refused_with_their_origin() {
        let not_json = Input {
            origin: "/pull-secrets/1-corp/dockercfg".to_owned(),
            format: Format::Dockercfg,
            text: "{\"corp.example\": ".to_owned(),
        };
        let err = merge(&[not_json]).unwrap_err();
        assert!(matches!(err, DockerConfigError::NotJson { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("/pull-secrets/1-corp/dockercfg: not valid JSON"),
            "{err}"
        );
        for (format, value, what) in [
            (Format::DockerConfigJson, json!([1]), "top level"),
            (Format::Dockercfg, json!("text"), "top level"),
            (Format::DockerConfigJson, json!({"auths": []}), "\"auths\""),
            (
                Format::DockerConfigJson,
                json!({"auths": {"r.example": "secret"}}),
                "\"r.example\"",
            ),
            (Format::Dockercfg, json!({"r.example": 1}), "\"r.example\""),
        ] {
            let err = merge(&[input("f", format, &value)]).unwrap_err();
            assert!(
                matches!(err, DockerConfigError::NotDockerConfig { .. }),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(message.contains(what), "{message}");
            assert!(message.contains(format.secret_key()), "{message}");
            // The message never carries a login.
            assert!(!message.contains("secret"), "{message}");
        }
        // A good file before a bad one does not make the merge succeed.
        let good = input("g", Format::Dockercfg, &json!({"r.example": {}}));
        let bad = Input {
            origin: "b".to_owned(),
            format: Format::DockerConfigJson,
            text: String::new(),
        };
        assert!(merge(&[good, bad]).is_err());
    }

    #[test]
    fn no_logins_give_an_empty_config() {
        let m = merge(&[]).unwrap();
        assert_eq!(parsed(&m), json!({"auths": {}}));
        // A .dockerconfigjson without auths (only credential helpers) adds nothing.
        let m = merge(&[input(
            "a",
            Format::DockerConfigJson,
            &json!({"credsStore": "desktop", "credHelpers": {"gcr.io": "gcloud"}}),
        )])
        .unwrap();
        assert_eq!(parsed(&m), json!({"auths": {}}));
        assert!(m.sources.is_empty());
    }
}
