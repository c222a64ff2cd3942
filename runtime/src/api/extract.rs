//! Request body extractors that turn every malformed body into an [`ApiError`] with the right
//! status instead of axum's plain-text rejections.

use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::{DeserializeOwned, DeserializeSeed};
use serde_json::error::Category;

use super::error::ApiError;

/// A JSON body: requires `Content-Type: application/json` (or `+json`), a non-empty body within
/// the configured limit, and JSON that deserialises into `T`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

/// Path parameters (`{id}`, `{face_id}`): an id that is not valid UTF-8 after percent-decoding
/// is 404 `not_found` JSON like any unknown id, instead of axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::not_found(format!(
                "no such resource: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Whether the request's body is `multipart/form-data` (any parameters, any case).
pub fn is_multipart_content_type(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// True when the request declares a JSON media type.
pub fn is_json_content_type(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            // Compared without a lowercase copy: this runs on every JSON request.
            let mime = mime.trim().as_bytes();
            let (ty, suffix) = ("application/".as_bytes(), "+json".as_bytes());
            mime.eq_ignore_ascii_case(b"application/json")
                || (mime.len() > ty.len() + suffix.len()
                    && mime[..ty.len()].eq_ignore_ascii_case(ty)
                    && mime[mime.len() - suffix.len()..].eq_ignore_ascii_case(suffix))
        })
        .unwrap_or(false)
}

/// Read the whole body, mapping the body-limit rejection to 413.
pub async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("cannot read request body: {rejection}"),
            )
        }
    })
}

/// Parse JSON bytes into `T`: syntax errors are 400 `invalid_json`, shape errors 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json_seed(bytes, PhantomData::<T>)
}

/// [`parse_json`] through a [`DeserializeSeed`]: for a body whose parser needs a setting, such
/// as a bound it enforces while parsing rather than after (`/v1/score`'s batch size).
pub fn parse_json_seed<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "request body is empty; send a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    seed.deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|e| match e.classify() {
            Category::Data => ApiError::invalid_request(e.to_string()),
            // `1e999` is valid JSON but has no finite f64: treat it like NaN/inf input.
            Category::Syntax if e.to_string().starts_with("number out of range") => {
                ApiError::invalid_request(format!("numbers must be finite: {e}"))
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::invalid_json(format!("body is not valid JSON: {e}"))
            }
        })
}

/// 415 unless the request declares a JSON media type.
pub fn require_json_content_type(req: &Request) -> Result<(), ApiError> {
    if is_json_content_type(req) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ))
    }
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(&req)?;
        let bytes = read_body(req, state).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct T {
        #[allow(dead_code)]
        a: f64,
    }

    #[test]
    fn multipart_content_types() {
        let with = |ct: &str| {
            let req = Request::builder()
                .header(header::CONTENT_TYPE, ct)
                .body(axum::body::Body::empty())
                .unwrap();
            is_multipart_content_type(&req)
        };
        assert!(with("multipart/form-data; boundary=x"));
        assert!(with("Multipart/Form-Data;boundary=x"));
        assert!(!with("multipart/form-datax; boundary=x"));
        assert!(!with("multipart/mixed; boundary=x"));
        assert!(!with("application/json"));
    }

    #[test]
    fn json_content_types() {
        let with = |ct: &str| {
            let req = Request::builder()
                .header(header::CONTENT_TYPE, ct)
                .body(axum::body::Body::empty())
                .unwrap();
            is_json_content_type(&req)
        };
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            " application/json ",
            "application/problem+json",
            "APPLICATION/VND.API+JSON;x=1",
        ] {
            assert!(with(ct), "{ct}");
        }
        for ct in [
            "text/json",
            "application/jsonx",
            "application/+json",
            "multipart/form-data; boundary=x",
            "text/plain+json",
            "",
        ] {
            assert!(!with(ct), "{ct}");
        }
        let bare = Request::builder().body(axum::body::Body::empty()).unwrap();
        assert!(!is_json_content_type(&bare));
    }

    #[test]
    fn classification() {
        assert_eq!(parse_json::<T>(b"").unwrap_err().code, "empty_body");
        assert_eq!(parse_json::<T>(b"  \n").unwrap_err().code, "empty_body");
        assert_eq!(parse_json::<T>(b"{").unwrap_err().code, "invalid_json");
        assert_eq!(parse_json::<T>(b"nope").unwrap_err().code, "invalid_json");
        assert_eq!(parse_json::<T>(b"{\"a\":\"x\"}").unwrap_err().status, 422);
        assert_eq!(parse_json::<T>(b"{\"a\":1e999}").unwrap_err().status, 422);
        assert!(parse_json::<T>(b"{\"a\":1.5}").is_ok());
    }
}
