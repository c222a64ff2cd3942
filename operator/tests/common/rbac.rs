//! The operator's RBAC as the API server enforces it: every request the reconciler under test
//! sends is checked against `manifests/rbac.yaml` (its ClusterRole in every namespace, its Roles
//! in theirs, `resourceNames` honoured), and one that no rule allows fails the test at once,
//! naming the verb, resource and group. A fake API that allows everything would hide a missing
//! verb until a real cluster refused the operator's ServiceAccount (with a 403 the operator
//! might even swallow, as best-effort reads do).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use kube::Client;
use serde::Deserialize;
use serde_yaml::Value;

/// One policy rule.
#[derive(Debug)]
struct Rule {
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
    names: Vec<String>,
}

impl Rule {
    fn allows(&self, r: &Request) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == "*" || x == v);
        has(&self.groups, &r.group)
            && has(&self.resources, &r.resource)
            && has(&self.verbs, &r.verb)
            && (self.names.is_empty() || r.name.as_deref().is_some_and(|n| has(&self.names, n)))
    }
}

/// The rules of `manifests/rbac.yaml`: the ClusterRole's, and each Role's with its namespace.
#[derive(Debug)]
pub struct Rules {
    cluster: Vec<Rule>,
    namespaced: Vec<(String, Rule)>,
}

/// A resource request as RBAC sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub verb: String,
    pub group: String,
    /// `deployments`, or `facekeydeployments/status` for a subresource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

impl Rules {
    /// Parse the committed manifest.
    pub fn load() -> Self {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rules = Rules {
            cluster: Vec::new(),
            namespaced: Vec::new(),
        };
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap();
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "ClusterRole" && kind != "Role" {
                continue;
            }
            for r in doc["rules"].as_sequence().into_iter().flatten() {
                let rule = Rule {
                    groups: strings(&r["apiGroups"]),
                    resources: strings(&r["resources"]),
                    verbs: strings(&r["verbs"]),
                    names: strings(&r["resourceNames"]),
                };
                match kind {
                    "ClusterRole" => rules.cluster.push(rule),
                    _ => rules.namespaced.push((
                        doc["metadata"]["namespace"].as_str().unwrap().to_owned(),
                        rule,
                    )),
                }
            }
        }
        assert!(
            !rules.cluster.is_empty(),
            "no ClusterRole rules in {path:?}"
        );
        rules
    }

    /// The rules, parsed once per test binary.
    pub fn shared() -> &'static Rules {
        static RULES: OnceLock<Rules> = OnceLock::new();
        RULES.get_or_init(Rules::load)
    }

    pub fn allows(&self, r: &Request) -> bool {
        self.cluster.iter().any(|rule| rule.allows(r))
            || self
                .namespaced
                .iter()
                .any(|(ns, rule)| r.namespace.as_deref() == Some(ns) && rule.allows(r))
    }
}

/// The RBAC view of `method` on `uri`; `None` for non-resource URLs (discovery, which every
/// authenticated client may read).
pub fn request_of(method: &http::Method, uri: &http::Uri) -> Option<Request> {
    let segs: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some((*ns).to_owned()), tail),
        other => (None, other),
    };
    let (resource, name, sub) = match rest {
        [r] => ((*r).to_owned(), None, None),
        [r, name] => ((*r).to_owned(), Some((*name).to_owned()), None),
        [r, name, sub, ..] => ((*r).to_owned(), Some((*name).to_owned()), Some(*sub)),
        [] => return None,
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", _) if watch => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (other, _) => panic!("unexpected method {other}"),
    };
    Some(Request {
        verb: verb.to_owned(),
        group,
        resource: match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource,
        },
        namespace,
        name,
    })
}

/// A client that sends through `inner` only what `manifests/rbac.yaml` lets the operator's
/// ServiceAccount do, and panics (failing the test) on anything else.
pub fn enforcing(inner: Client) -> Client {
    let rules: &'static Rules = Rules::shared();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let inner = inner.clone();
        if let Some(r) = request_of(req.method(), req.uri())
            && !rules.allows(&r)
        {
            panic!(
                "RBAC: manifests/rbac.yaml does not let the operator {} {}{} in API group {:?}{} \
                 ({} {}); a real API server would answer 403 Forbidden",
                r.verb,
                r.resource,
                r.name
                    .as_deref()
                    .map(|n| format!(" {n}"))
                    .unwrap_or_default(),
                r.group,
                r.namespace
                    .as_deref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default(),
                req.method(),
                req.uri()
            );
        }
        async move { inner.send(req).await }
    });
    Client::new(svc, super::NS)
}
