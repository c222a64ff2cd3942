//! Which scope each route needs: one table, read by the authentication middleware and by the
//! OpenAPI document, so a route cannot be added without deciding who may call it. A matched
//! route missing from the table needs `admin` (fail closed).

use axum::http::Method;

use super::scope::Scope;

/// What a request must present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: health probes, the OpenAPI document, the UI's files, unknown paths (404).
    Open,
    /// Any valid key (who am I).
    AnyKey,
    /// A key holding the scope (`admin` holds every scope).
    Scope(Scope),
    /// `/metrics`: open or the `metrics` scope, per `FACEKEY_METRICS_AUTH`.
    Metrics,
}

/// Every route with its required access: (method, route pattern as the router names it).
pub const ROUTES: &[(Method, &str, Access)] = &[
    (Method::GET, "/healthz", Access::Open),
    (Method::GET, "/readyz", Access::Open),
    (Method::GET, "/openapi.json", Access::Open),
    (Method::GET, "/metrics", Access::Metrics),
    (Method::GET, "/v1/auth/whoami", Access::AnyKey),
    (Method::POST, "/v1/score", Access::Scope(Scope::Verify)),
    (Method::POST, "/v1/verify", Access::Scope(Scope::Verify)),
    (Method::POST, "/v1/identify", Access::Scope(Scope::Verify)),
    (Method::POST, "/v1/liveness", Access::Scope(Scope::Verify)),
    (
        Method::POST,
        "/v1/liveness/sessions",
        Access::Scope(Scope::Verify),
    ),
    (
        Method::GET,
        "/v1/liveness/sessions/{id}",
        Access::Scope(Scope::Verify),
    ),
    (
        Method::DELETE,
        "/v1/liveness/sessions/{id}",
        Access::Scope(Scope::Verify),
    ),
    (
        Method::POST,
        "/v1/liveness/sessions/{id}/frames",
        Access::Scope(Scope::Verify),
    ),
    (Method::POST, "/v1/subjects", Access::Scope(Scope::Enrol)),
    (Method::GET, "/v1/subjects", Access::Scope(Scope::Admin)),
    (
        Method::GET,
        "/v1/subjects/{id}",
        Access::Scope(Scope::Admin),
    ),
    (
        Method::PATCH,
        "/v1/subjects/{id}",
        Access::Scope(Scope::Admin),
    ),
    // An `enrol` key may delete the subjects it created (the application that enrolled a
    // person must be able to honour their erasure request without an all-powerful key); others'
    // need `admin` (checked by the handler: 403 `not_subject_creator`).
    (
        Method::DELETE,
        "/v1/subjects/{id}",
        Access::Scope(Scope::Enrol),
    ),
    (
        Method::POST,
        "/v1/subjects/{id}/faces",
        Access::Scope(Scope::Enrol),
    ),
    (
        Method::DELETE,
        "/v1/subjects/{id}/faces/{face_id}",
        Access::Scope(Scope::Admin),
    ),
    (
        Method::DELETE,
        "/v1/subjects/{id}/lockout",
        Access::Scope(Scope::Admin),
    ),
];

/// The access a request needs. `route` is the matched route pattern, `None` when no route
/// matched (UI files and 404s, which reveal nothing). A matched route missing from [`ROUTES`]
/// needs `admin`.
pub fn required(method: &Method, route: Option<&str>) -> Access {
    let Some(route) = route else {
        return Access::Open;
    };
    let method = as_listed(method);
    ROUTES
        .iter()
        .find(|(m, r, _)| m == method && *r == route)
        .map_or(Access::Scope(Scope::Admin), |(_, _, a)| *a)
}

/// The method a request is listed under: HEAD is answered by the GET handler and needs what GET
/// needs.
fn as_listed(method: &Method) -> &Method {
    if method == Method::HEAD {
        &Method::GET
    } else {
        method
    }
}

/// True when `route` is listed for another method but not for `method` (HEAD as GET): the
/// router answers such a request 405, so the key guard need not ask for `admin` to say so.
pub fn other_method_only(method: &Method, route: &str) -> bool {
    let method = as_listed(method);
    let mut listed = ROUTES.iter().filter(|(_, r, _)| *r == route).peekable();
    listed.peek().is_some() && listed.all(|(m, _, _)| m != method)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_routes_need_admin_and_unmatched_paths_are_open() {
        assert_eq!(
            required(&Method::PUT, Some("/v1/verify")),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            required(&Method::POST, Some("/v1/new-thing")),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(required(&Method::GET, None), Access::Open);
        assert_eq!(
            required(&Method::HEAD, Some("/v1/subjects")),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(required(&Method::GET, Some("/healthz")), Access::Open);
    }

    #[test]
    fn a_listed_route_with_another_method_is_told_apart() {
        assert!(other_method_only(&Method::GET, "/v1/verify"));
        assert!(!other_method_only(&Method::POST, "/v1/verify"));
        assert!(!other_method_only(&Method::HEAD, "/v1/subjects"));
        assert!(
            !other_method_only(&Method::PUT, "/v1/new-thing"),
            "unlisted route"
        );
    }

    #[test]
    fn each_route_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for (m, r, _) in ROUTES {
            assert!(seen.insert((m.as_str(), *r)), "{m} {r} listed twice");
        }
    }
}
