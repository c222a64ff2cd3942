//! Image uploads in the two forms the API accepts: a multipart form with a file field `image`,
//! or JSON `{"image": "<base64>"}` (a `data:` URL prefix is allowed). Other fields (such as
//! `subject`) come along as strings. The encoded image size is limited before decoding.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::error::ApiError;
use super::extract::{is_json_content_type, parse_json, read_body};
use crate::state::SharedState;

/// Name of the field that carries the image in both forms.
pub const IMAGE_FIELD: &str = "image";

/// Name of the field naming a liveness session, which may replace the image (`/v1/verify`).
pub const SESSION_FIELD: &str = "session";

/// Longest accepted text field in a multipart form, in bytes.
const MAX_TEXT_FIELD_BYTES: usize = 4096;

/// Base64 decoders: standard and URL-safe alphabets, padding optional.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

/// An uploaded image and the form's other fields.
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// The encoded image bytes (JPEG, PNG or WebP), not yet decoded.
    pub image: Bytes,
    /// The other fields, as strings (JSON numbers and booleans in their JSON text form).
    pub fields: BTreeMap<String, String>,
}

impl ImageInput {
    /// A required text field, or 422 naming it.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| ApiError::invalid_request(format!("missing field `{name}`")))
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "image_too_large",
        format!("image exceeds {limit} bytes (FACEKEY_MAX_IMAGE_BYTES)"),
    )
}

fn missing_image() -> ApiError {
    ApiError::invalid_request(format!(
        "missing image: send multipart field `{IMAGE_FIELD}` or JSON {{\"{IMAGE_FIELD}\": \"<base64>\"}}"
    ))
}

/// Decode a base64 image string, accepting a `data:<mime>;base64,` prefix, either alphabet,
/// optional padding and embedded whitespace.
pub fn decode_base64_image(text: &str, limit: usize) -> Result<Vec<u8>, ApiError> {
    let payload = match text.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text,
    };
    let cleaned: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if cleaned.is_empty() {
        return Err(missing_image());
    }
    // Reject before decoding: base64 carries 3 bytes per 4 characters.
    if cleaned.len() / 4 * 3 > limit + 3 {
        return Err(too_large(limit));
    }
    let bytes = STANDARD
        .decode(&cleaned)
        .or_else(|_| URL_SAFE.decode(&cleaned))
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_base64",
                format!("field `{IMAGE_FIELD}` is not valid base64: {e}"),
            )
        })?;
    if bytes.len() > limit {
        return Err(too_large(limit));
    }
    Ok(bytes)
}

fn json_scalar_to_string(value: serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A JSON object whose keys are unique: a repeated key is refused (422) rather than the last one
/// winning, so a gateway that checked the first `subject` and this server never disagree (the
/// derived bodies refuse duplicates the same way, as `duplicate field`).
struct UniqueObject(BTreeMap<String, serde_json::Value>);

impl<'de> serde::Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueObject, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if entries.contains_key(&key) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{key}`"
                        )));
                    }
                    let value: serde_json::Value = map.next_value()?;
                    entries.insert(key, value);
                }
                Ok(UniqueObject(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

async fn from_json(
    req: Request,
    state: &SharedState,
    limit: usize,
) -> Result<ImageInput, ApiError> {
    let body = read_body(req, state).await?;
    let UniqueObject(object) = parse_json(&body)?;
    let mut image = None;
    let mut fields = BTreeMap::new();
    for (key, value) in object {
        if key == IMAGE_FIELD {
            let text = value.as_str().ok_or_else(|| {
                ApiError::invalid_request(format!("field `{IMAGE_FIELD}` must be a base64 string"))
            })?;
            image = Some(decode_base64_image(text, limit)?);
        } else {
            let text = json_scalar_to_string(value).ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "field `{key}` must be a string, number or boolean"
                ))
            })?;
            fields.insert(key, text);
        }
    }
    // A liveness session may stand in for the image (verify): then the image is empty.
    let image = image
        .or_else(|| fields.contains_key(SESSION_FIELD).then(Vec::new))
        .ok_or_else(missing_image)?;
    Ok(ImageInput {
        image: Bytes::from(image),
        fields,
    })
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::body_too_large()
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            format!("malformed multipart body: {}", e.body_text()),
        )
    }
}

async fn from_multipart(
    req: Request,
    state: &SharedState,
    limit: usize,
) -> Result<ImageInput, ApiError> {
    let mut multipart = Multipart::from_request(req, state).await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_multipart",
            format!("malformed multipart request: {}", e.body_text()),
        )
    })?;
    let mut image = None;
    let mut fields = BTreeMap::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        if (name == IMAGE_FIELD && image.is_some()) || fields.contains_key(&name) {
            return Err(ApiError::invalid_request(format!(
                "duplicate part `{name}`: send each field once"
            )));
        }
        let data = field.bytes().await.map_err(multipart_error)?;
        if name == IMAGE_FIELD {
            if data.len() > limit {
                return Err(too_large(limit));
            }
            image = Some(data);
        } else if !name.is_empty() {
            if data.len() > MAX_TEXT_FIELD_BYTES {
                return Err(ApiError::invalid_request(format!(
                    "field `{name}` is longer than {MAX_TEXT_FIELD_BYTES} bytes"
                )));
            }
            let text = String::from_utf8(data.to_vec()).map_err(|_| {
                ApiError::invalid_request(format!("field `{name}` is not UTF-8 text"))
            })?;
            fields.insert(name, text);
        }
    }
    let image = image
        .filter(|b| !b.is_empty())
        .or_else(|| fields.contains_key(SESSION_FIELD).then(Bytes::new))
        .ok_or_else(missing_image)?;
    Ok(ImageInput { image, fields })
}

impl FromRequest<SharedState> for ImageInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        let limit = state.config.max_image_bytes;
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            from_multipart(req, state, limit).await
        } else if is_json_content_type(&req) {
            from_json(req, state, limit).await
        } else {
            Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send multipart/form-data with an `image` file, or application/json with base64 `image`",
            ))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms() {
        let raw = b"\x89PNG\r\n\x1a\n\xff\xfe";
        let std = base64::engine::general_purpose::STANDARD.encode(raw);
        assert_eq!(decode_base64_image(&std, 100).unwrap(), raw);
        let unpadded = std.trim_end_matches('=');
        assert_eq!(decode_base64_image(unpadded, 100).unwrap(), raw);
        let url = base64::engine::general_purpose::URL_SAFE.encode(raw);
        assert_eq!(decode_base64_image(&url, 100).unwrap(), raw);
        let data_url = format!("data:image/png;base64,{}", std);
        assert_eq!(decode_base64_image(&data_url, 100).unwrap(), raw);
        let wrapped = format!("{}\n{}", &std[..4], &std[4..]);
        assert_eq!(decode_base64_image(&wrapped, 100).unwrap(), raw);
    }

    #[test]
    fn base64_errors() {
        assert_eq!(
            decode_base64_image("", 10).unwrap_err().code,
            "invalid_request"
        );
        assert_eq!(
            decode_base64_image("!!!!", 10).unwrap_err().code,
            "invalid_base64"
        );
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 64]);
        assert_eq!(
            decode_base64_image(&big, 63).unwrap_err().code,
            "image_too_large"
        );
        assert!(decode_base64_image(&big, 64).is_ok());
    }
}
