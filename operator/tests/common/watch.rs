//! Watches for the fake API server. kube-fake-client answers a watch request with a plain list,
//! which every watcher reads as an error; kube's controller then backs off all its triggers
//! together, so a child's failed watch could hold the resource watch's first sync back for a
//! minute (the cause of a flaky controller test). [`serving`] answers a watch as the API server
//! does: a stream of `ADDED`/`MODIFIED`/`DELETED` events, found by listing through the fake every
//! [`POLL`]. The stream opens with every current object (the fake's lists carry no usable
//! resourceVersion, so nothing changed between a watcher's list and its watch is lost) and ends
//! at the request's `timeoutSeconds`, as a real watch does. A write that changed nothing but
//! the fake's own bookkeeping (a no-op apply) sends no event, as on a real server.
//!
//! It also keeps rules of the real server the fake does not: HorizontalPodAutoscalers carry no
//! `metadata.generation` before Kubernetes 1.37 (the fake sets and bumps one), so a change
//! filter that relies on it misses hand edits on real clusters; and a list with `limit` is paged
//! (in name order, with a `continue` token while more remain), where the fake cuts the list at
//! `limit` and says nothing of the rest.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Bytes;
use hyper::body::Frame;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How often a served watch lists through the fake to find changes.
pub const POLL: Duration = Duration::from_millis(50);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Answer = http::Response<UnsyncBoxBody<Bytes, BoxError>>;

/// `inner` with its watch requests served as event streams; every other request goes through.
pub fn serving(inner: Client) -> Client {
    let svc = tower::service_fn(move |req: http::Request<Body>| {
        let inner = inner.clone();
        async move {
            match watch_params(req.uri()) {
                Some((list_uri, timeout)) => watch(inner, req, list_uri, timeout).await,
                None if req.method() == http::Method::GET && page_params(req.uri()).is_some() => {
                    Ok(boxed(page(&inner, req).await?))
                }
                None if without_generation(req.uri().path()) => {
                    Ok(boxed(strip_generation(inner.send(req).await?).await))
                }
                None => Ok(boxed(inner.send(req).await?)),
            }
        }
    });
    Client::new(svc, super::NS)
}

/// For a list request with `limit`: the list URI without `limit` and `continue`, the limit and
/// the continue token (the `namespace/name` of the last object already sent).
fn page_params(uri: &http::Uri) -> Option<(http::Uri, usize, Option<String>)> {
    let (list, taken) = split_query(uri, &["limit", "continue"])?;
    let limit = taken
        .get("limit")
        .and_then(|v| v.parse().ok())
        .filter(|l| *l > 0)?;
    let token = taken
        .get("continue")
        .map(|v| v.replace("%2F", "/").replace("%2f", "/"));
    Some((list, limit, token))
}

/// `uri` without the query parameters named in `keys`, and those parameters' values.
fn split_query<'a>(
    uri: &'a http::Uri,
    keys: &[&str],
) -> Option<(http::Uri, BTreeMap<&'a str, &'a str>)> {
    let mut taken = BTreeMap::new();
    let mut kept = Vec::new();
    for kv in uri.query()?.split('&').filter(|kv| !kv.is_empty()) {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if keys.contains(&key) {
            taken.insert(key, value);
        } else {
            kept.push(kv);
        }
    }
    let rest = if kept.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), kept.join("&"))
    };
    Some((rest.parse().ok()?, taken))
}

/// One page of a list, as a real server pages it.
async fn page(
    inner: &Client,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, kube::Error> {
    let Some((list_uri, limit, token)) = page_params(req.uri()) else {
        return inner.send(req).await;
    };
    let mut full = http::Request::get(list_uri)
        .body(Body::from(Vec::new()))
        .expect("a list request");
    *full.headers_mut() = req.headers().clone();
    let response = inner.send(full).await?;
    if !response.status().is_success() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let Ok(mut list) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(http::Response::from_parts(
            parts,
            Body::from(bytes.to_vec()),
        ));
    };
    let key = |o: &Value| {
        format!(
            "{}/{}",
            o["metadata"]["namespace"].as_str().unwrap_or_default(),
            o["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let mut items: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|o| key(o));
    if let Some(token) = &token {
        items.retain(|o| key(o).as_str() > token.as_str());
    }
    let remaining = items.len().saturating_sub(limit);
    items.truncate(limit);
    if remaining > 0
        && let Some(last) = items.last()
    {
        list["metadata"]["continue"] = Value::String(key(last));
        list["metadata"]["remainingItemCount"] = json!(remaining);
    }
    list["items"] = Value::Array(items);
    if without_generation(req.uri().path()) {
        drop_generation(&mut list);
    }
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Ok(http::Response::from_parts(
        parts,
        Body::from(list.to_string().into_bytes()),
    ))
}

/// Whether the kind at `path` has no `metadata.generation` on a real server (HPAs before 1.37).
fn without_generation(path: &str) -> bool {
    path.split('/').any(|seg| seg == "horizontalpodautoscalers")
}

/// `object` (or every item of a list) without `metadata.generation`.
fn drop_generation(object: &mut Value) {
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(drop_generation);
    } else if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("generation");
    }
}

/// `response` with [`drop_generation`] applied to its JSON body.
async fn strip_generation(response: http::Response<Body>) -> http::Response<Body> {
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            drop_generation(&mut value);
            value.to_string().into_bytes()
        }
        Err(_) => bytes.to_vec(),
    };
    let mut parts = parts;
    parts.headers.remove(http::header::CONTENT_LENGTH);
    http::Response::from_parts(parts, Body::from(bytes))
}

fn boxed(response: http::Response<Body>) -> Answer {
    response.map(|b| b.map_err(BoxError::from).boxed_unsync())
}

/// For a watch request: the list URI it watches (its watch parameters removed) and its timeout.
fn watch_params(uri: &http::Uri) -> Option<(http::Uri, Duration)> {
    let (list, taken) = split_query(
        uri,
        &[
            "watch",
            "timeoutSeconds",
            "allowWatchBookmarks",
            "resourceVersion",
            "resourceVersionMatch",
            "sendInitialEvents",
        ],
    )?;
    if !matches!(taken.get("watch"), Some(&"true" | &"1")) {
        return None;
    }
    let timeout = taken
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(290), Duration::from_secs);
    Some((list, timeout))
}

/// The objects a list through `inner` returns, by namespace/name; `Err` carries a failed answer
/// (`None`: no answer at all, which ends a watch rather than reading as every object deleted).
async fn list(
    inner: &Client,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Result<BTreeMap<String, Value>, Option<http::Response<Body>>> {
    let mut req = http::Request::get(uri.clone())
        .body(Body::from(Vec::new()))
        .expect("a list request");
    *req.headers_mut() = headers.clone();
    let Ok(response) = inner.send(req).await else {
        return Err(None);
    };
    if !response.status().is_success() {
        return Err(Some(response));
    }
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut list: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if without_generation(uri.path()) {
        drop_generation(&mut list);
    }
    Ok(list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let meta = &o["metadata"];
            let key = format!(
                "{}/{}",
                meta["namespace"].as_str().unwrap_or_default(),
                meta["name"].as_str().unwrap_or_default()
            );
            (key, o.clone())
        })
        .collect())
}

/// `o` as a real server's no-op detection compares it: without `resourceVersion`, `generation`
/// and `managedFields`. The fake stamps a new managedFields time (and so a new resourceVersion,
/// and a generation) on every server-side apply, even one that changes nothing; a real server
/// writes nothing then and sends no event (or the operator would reconcile itself in a loop).
fn content(o: &Value) -> Value {
    let mut o = o.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        meta.remove("generation");
        meta.remove("managedFields");
    }
    o
}

async fn watch(
    inner: Client,
    req: http::Request<Body>,
    list_uri: http::Uri,
    timeout: Duration,
) -> Result<Answer, BoxError> {
    let headers = req.headers().clone();
    // The first list answers for the watch itself: a refused or unknown kind fails as it would.
    let first = match list(&inner, &list_uri, &headers).await {
        Ok(objects) => objects,
        Err(Some(refused)) => return Ok(boxed(refused)),
        Err(None) => return Err("the fake API server did not answer".into()),
    };
    let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut known: BTreeMap<String, Value> = BTreeMap::new();
        let mut current = first;
        loop {
            let mut events = Vec::new();
            for (key, object) in &current {
                match known.get(key) {
                    None => events.push(("ADDED", object.clone())),
                    Some(old) if content(old) != content(object) => {
                        events.push(("MODIFIED", object.clone()));
                    }
                    Some(_) => {}
                }
            }
            for (key, object) in &known {
                if !current.contains_key(key) {
                    events.push(("DELETED", object.clone()));
                }
            }
            for (kind, object) in events {
                let mut line = json!({"type": kind, "object": object}).to_string();
                line.push('\n');
                if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                    return;
                }
            }
            known = current;
            tokio::time::sleep(POLL).await;
            if tokio::time::Instant::now() >= deadline || tx.is_closed() {
                return;
            }
            current = match list(&inner, &list_uri, &headers).await {
                Ok(objects) => objects,
                // The kind went away (or became forbidden): the watch ends, as the server's would.
                Err(_) => return,
            };
        }
    });
    let body = StreamBody::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
    Ok(http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body.map_err(|e: Infallible| match e {}).boxed_unsync())
        .expect("a watch response"))
}

/// `inner` answering 403 Forbidden, as an API server enforcing RBAC does, to every watch of the
/// resource (plural, e.g. `poddisruptionbudgets`) `resource`: a role that grants `list` but not
/// `watch`. Other requests, including lists of it, go through.
pub fn refusing_watches_of(inner: Client, resource: &'static str) -> Client {
    let svc = tower::service_fn(move |req: http::Request<Body>| {
        let inner = inner.clone();
        async move {
            let refused = watch_params(req.uri()).is_some()
                && req.uri().path().rsplit('/').next() == Some(resource);
            if !refused {
                return inner.send(req).await;
            }
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                "code": 403,
                "message": format!("{resource} is forbidden: User \"system:serviceaccount:facekey-system:facekey-operator\" cannot watch resource \"{resource}\""),
            });
            Ok::<_, kube::Error>(
                http::Response::builder()
                    .status(http::StatusCode::FORBIDDEN)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(status.to_string().into_bytes()))
                    .expect("a refusal"),
            )
        }
    });
    Client::new(svc, super::NS)
}
