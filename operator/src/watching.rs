//! Watch streams as the operator runs them: each retries with its own backoff, and its errors
//! are counted (`facekey_operator_watch_errors_total`), logged under its kind and then kept out
//! of the consumer. kube's `Controller` backs every trigger off together on any trigger's error,
//! so one kind the operator may not watch (trimmed RBAC answering 403, an API not served) would
//! otherwise delay every reconcile, up to 30 s apart; here it delays only its own stream, and
//! the metric names it.

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use prometheus::IntCounterVec;
use tracing::warn;

/// Which part of the operator a watch feeds: the reconciler (leader only) or the webhook's
/// FaceKeyDeployment cache (every replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The controller's resource and owned-object watches.
    Controller,
    /// The sidecar injection webhook's FaceKeyDeployment cache.
    Webhook,
}

impl Component {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Webhook => "webhook",
        }
    }
}

/// Why a watch failed, as the metric's `reason` label: `forbidden` (403: the operator's RBAC),
/// `not_found` (404: the kind or namespace is not served), `expired` (410: the watch's
/// resourceVersion is too old, routine; the watcher lists again), `failed` (anything else: the
/// API server unreachable, a timeout, an undecodable answer).
pub fn reason(error: &watcher::Error) -> &'static str {
    let code = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        },
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::NoResourceVersion => None,
    };
    match code {
        Some(403) => "forbidden",
        Some(404) => "not_found",
        Some(410) => "expired",
        _ => "failed",
    }
}

/// `stream` (a watch already on its own backoff) with its errors counted in `errors` under
/// `component`, `kind` and [`reason`], logged, and left out: the consumer sees only events.
pub fn counted<S, T>(
    stream: S,
    (component, kind, errors): (Component, &'static str, IntCounterVec),
) -> impl Stream<Item = Result<T, watcher::Error>> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send,
    T: Send,
{
    stream.filter_map(move |item| {
        let item = match item {
            Ok(event) => Some(Ok(event)),
            Err(error) => {
                let reason = reason(&error);
                errors
                    .with_label_values(&[component.as_str(), kind, reason])
                    .inc();
                warn!(
                    component = component.as_str(),
                    kind,
                    reason,
                    error = %error,
                    "watch failed; retrying with backoff"
                );
                None
            }
        };
        futures::future::ready(item)
    })
}

/// An owned kind's watch events as reconcile triggers: every deletion, and an applied object
/// only when `key` of it differs from the last seen (status churn filtered out). kube's
/// `predicate_filter` cannot serve here: a deleted object's key equals its last one, so a
/// deleted PDB or HPA triggered nothing and stayed gone until the next periodic reconcile. After
/// a relist (a watch that expired), an object the list no longer holds was deleted meanwhile: it
/// triggers too, and is forgotten, so the memory holds only objects that exist.
pub fn changed_or_deleted<K, S>(
    stream: S,
    key: fn(&K) -> u64,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: kube::Resource + Clone + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    type Id = (Option<String>, String);
    let id = |obj: &K| {
        (
            obj.meta().namespace.clone(),
            obj.meta().name.clone().unwrap_or_default(),
        )
    };
    // The last key and object seen of each, and the ones a relist under way has listed.
    let mut last: std::collections::HashMap<Id, (u64, K)> = std::collections::HashMap::new();
    let mut relisted: Option<std::collections::HashSet<Id>> = None;
    stream
        .map(move |item| {
            let triggers: Vec<Result<K, watcher::Error>> = match item {
                Err(e) => vec![Err(e)],
                Ok(watcher::Event::Init) => {
                    relisted = Some(std::collections::HashSet::new());
                    Vec::new()
                }
                Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                    let (id, k) = (id(&obj), key(&obj));
                    if let Some(listed) = relisted.as_mut() {
                        listed.insert(id.clone());
                    }
                    match last.insert(id, (k, obj.clone())) {
                        Some((before, _)) if before == k => Vec::new(),
                        _ => vec![Ok(obj)],
                    }
                }
                Ok(watcher::Event::Delete(obj)) => {
                    last.remove(&id(&obj));
                    vec![Ok(obj)]
                }
                Ok(watcher::Event::InitDone) => match relisted.take() {
                    Some(listed) => last
                        .extract_if(|id, _| !listed.contains(id))
                        .map(|(_, (_, obj))| Ok(obj))
                        .collect(),
                    None => Vec::new(),
                },
            };
            futures::stream::iter(triggers)
        })
        .flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            Status::failure("refused", "Refused").with_code(code),
        ))
    }

    #[test]
    fn reasons_follow_the_status_code() {
        assert_eq!(
            reason(&watcher::Error::InitialListFailed(api(403))),
            "forbidden"
        );
        assert_eq!(
            reason(&watcher::Error::WatchStartFailed(api(404))),
            "not_found"
        );
        assert_eq!(
            reason(&watcher::Error::WatchError(Box::new(
                Status::failure("too old", "Expired").with_code(410)
            ))),
            "expired"
        );
        assert_eq!(reason(&watcher::Error::WatchFailed(api(500))), "failed");
        assert_eq!(reason(&watcher::Error::NoResourceVersion), "failed");
    }

    #[tokio::test]
    async fn deletions_and_changes_trigger_status_churn_does_not() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let cm = |name: &str, data: &str| {
            let mut c = ConfigMap::default();
            c.metadata.name = Some(name.into());
            c.metadata.namespace = Some("team".into());
            c.data = Some([("k".to_owned(), data.to_owned())].into());
            c
        };
        let key = |c: &ConfigMap| u64::from(c.data.as_ref().map_or(0, |d| d["k"].len() as u8));
        let events: Vec<Result<watcher::Event<ConfigMap>, watcher::Error>> = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cm("a", "1"))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(cm("a", "2"))),
            Ok(watcher::Event::Apply(cm("a", "22"))),
            Ok(watcher::Event::Delete(cm("a", "22"))),
            Ok(watcher::Event::Apply(cm("a", "22"))),
            Ok(watcher::Event::Apply(cm("b", "1"))),
            // A relist after the watch expired: b was deleted during the gap, a is unchanged.
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(cm("a", "22"))),
            Ok(watcher::Event::InitDone),
        ];
        let out: Vec<String> = changed_or_deleted(futures::stream::iter(events), key)
            .map(|c| {
                let c = c.unwrap();
                format!("{}={}", c.metadata.name.unwrap(), c.data.unwrap()["k"])
            })
            .collect()
            .await;
        assert_eq!(
            out,
            vec!["a=1", "a=22", "a=22", "a=22", "b=1", "b=1"],
            "first sight, the change, the deletion and the re-creation, not the same key again; \
             a deletion a relist reveals"
        );
    }

    #[tokio::test]
    async fn errors_are_counted_and_kept_out() {
        let errors = IntCounterVec::new(
            prometheus::Opts::new("watch_errors_total", "test"),
            &["component", "kind", "reason"],
        )
        .unwrap();
        let items: Vec<Result<u32, watcher::Error>> = vec![
            Ok(1),
            Err(watcher::Error::InitialListFailed(api(403))),
            Ok(2),
            Err(watcher::Error::WatchFailed(api(403))),
            Err(watcher::Error::NoResourceVersion),
        ];
        let out: Vec<u32> = counted(
            futures::stream::iter(items),
            (Component::Controller, "PodDisruptionBudget", errors.clone()),
        )
        .map(|item| item.unwrap())
        .collect()
        .await;
        assert_eq!(out, vec![1, 2], "the consumer sees the events only");
        let count = |reason: &str| {
            errors
                .with_label_values(&["controller", "PodDisruptionBudget", reason])
                .get()
        };
        assert_eq!(count("forbidden"), 2);
        assert_eq!(count("failed"), 1);
    }
}
