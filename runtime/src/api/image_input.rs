//! Image uploads in the two forms the API accepts: a multipart form with a file field `image`,
//! or JSON `{"image": "<base64>"}` (a `data:` URL prefix is allowed). Other fields (such as
//! `subject`) come along as strings. The encoded image size is limited before decoding.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::error::ApiError;
use super::extract::{is_json_content_type, is_multipart_content_type, parse_json, read_body};
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

/// An [`ImageInput`] whose image a liveness session may stand in for: the body names a
/// `session` and sends no image (then `image` is empty). Only verify and identify take one; on
/// every other route a body without an image is 422 `invalid_request` before any work.
#[derive(Debug, Clone)]
pub struct ImageOrSession(pub ImageInput);

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

/// Most fields a JSON image body may carry besides `image` (the routes read at most three:
/// `subject`, `session`, `limit`). Each field costs two small strings once parsed, so without a
/// bound a body of many tiny fields would cost far more memory than its bytes.
pub const MAX_JSON_FIELDS: usize = 16;

/// A JSON image body as parsed: the base64 image text, not yet decoded, and the other fields as
/// strings. The visitor takes only this shape, so a body costs about its own size while parsed:
/// a field that is an array or object is refused at its first `[` or `{` (422) without reading
/// it, where a generic `serde_json::Value` map would first build it (an 8 MiB array of zeros
/// is 4 million values, some 150 MiB). A repeated key is refused (422) rather than the last one
/// winning, so a gateway that checked the first `subject` and this server never disagree (the
/// derived bodies refuse duplicates the same way, as `duplicate field`).
#[derive(Debug)]
struct JsonImageBody {
    image: Option<String>,
    fields: BTreeMap<String, String>,
}

impl<'de> serde::Deserialize<'de> for JsonImageBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = JsonImageBody;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonImageBody, A::Error> {
                let mut image = None;
                let mut fields = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if (key == IMAGE_FIELD && image.is_some()) || fields.contains_key(&key) {
                        return Err(serde::de::Error::custom(format_args!(
                            "duplicate field `{key}`"
                        )));
                    }
                    if key == IMAGE_FIELD {
                        image = Some(map.next_value_seed(ImageText)?);
                        continue;
                    }
                    if fields.len() >= MAX_JSON_FIELDS {
                        return Err(serde::de::Error::custom(format_args!(
                            "too many fields: send at most {MAX_JSON_FIELDS} besides `{IMAGE_FIELD}`"
                        )));
                    }
                    let value = map.next_value_seed(ScalarField(&key))?;
                    fields.insert(key, value);
                }
                Ok(JsonImageBody { image, fields })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The `image` field's value: a string; anything else is refused at once (an array or object
/// before any of its contents is read).
struct ImageText;

impl ImageText {
    fn refuse<E: serde::de::Error>() -> E {
        E::custom(format_args!(
            "field `{IMAGE_FIELD}` must be a base64 string"
        ))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for ImageText {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ImageText {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a base64 string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<String, E> {
        Err(Self::refuse())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<String, E> {
        Err(Self::refuse())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<String, E> {
        Err(Self::refuse())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<String, E> {
        Err(Self::refuse())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
        Err(Self::refuse())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(Self::refuse())
    }
}

/// Another field's value (named by the key) as a string: JSON numbers and booleans in their
/// JSON text form. `null`, arrays and objects are refused with one message; an array or object
/// before any of its contents is read.
struct ScalarField<'a>(&'a str);

impl ScalarField<'_> {
    fn refuse<E: serde::de::Error>(&self) -> E {
        E::custom(format_args!(
            "field `{}` must be a string, number or boolean",
            self.0
        ))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for ScalarField<'_> {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ScalarField<'_> {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    // Numbers as `serde_json::Number` prints them, as before this visitor (`5.0` stays `5.0`).
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Ok(serde_json::Number::from(v).to_string())
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Ok(serde_json::Number::from(v).to_string())
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        serde_json::Number::from_f64(v)
            .map(|n| n.to_string())
            .ok_or_else(|| self.refuse())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
        Err(self.refuse())
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<String, E> {
        Err(self.refuse())
    }
    // Returning without reading an element: the parser stops at the `[` or `{`.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.refuse())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.refuse())
    }
}

async fn from_json(
    req: Request,
    state: &SharedState,
    limit: usize,
    session_allowed: bool,
) -> Result<ImageInput, ApiError> {
    let body = read_body(req, state).await?;
    let JsonImageBody { image, fields } = parse_json(&body)?;
    drop(body);
    let image = image
        .map(|text| decode_base64_image(&text, limit))
        .transpose()?
        // A liveness session may stand in for the image (verify): then the image is empty.
        .or_else(|| (session_allowed && fields.contains_key(SESSION_FIELD)).then(Vec::new))
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
    session_allowed: bool,
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
            // As many as a JSON body may carry: each costs a map entry beside its bytes.
            if fields.len() >= MAX_JSON_FIELDS {
                return Err(ApiError::invalid_request(format!(
                    "too many fields: send at most {MAX_JSON_FIELDS} besides `{IMAGE_FIELD}`"
                )));
            }
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
        .or_else(|| (session_allowed && fields.contains_key(SESSION_FIELD)).then(Bytes::new))
        .ok_or_else(missing_image)?;
    Ok(ImageInput { image, fields })
}

impl FromRequest<SharedState> for ImageInput {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        extract(req, state, false).await
    }
}

impl FromRequest<SharedState> for ImageOrSession {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, Self::Rejection> {
        extract(req, state, true).await.map(Self)
    }
}

/// The image and fields of a multipart or JSON body; with `session_allowed`, a `session` field
/// may stand in for the image.
async fn extract(
    req: Request,
    state: &SharedState,
    session_allowed: bool,
) -> Result<ImageInput, ApiError> {
    let limit = state.config.max_image_bytes;
    if is_multipart_content_type(&req) {
        from_multipart(req, state, limit, session_allowed).await
    } else if is_json_content_type(&req) {
        from_json(req, state, limit, session_allowed).await
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send multipart/form-data with an `image` file, or application/json with base64 `image`",
        ))
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

    fn parse(body: &[u8]) -> Result<JsonImageBody, ApiError> {
        parse_json(body)
    }

    #[test]
    fn json_bodies_keep_scalar_fields_as_text() {
        let b =
            parse(br#"{"image":"aGk=","subject":"s","limit":5,"x":5.0,"y":-2,"z":true}"#).unwrap();
        assert_eq!(b.image.as_deref(), Some("aGk="));
        let text = |k: &str| b.fields[k].as_str();
        assert_eq!(
            (
                text("subject"),
                text("limit"),
                text("x"),
                text("y"),
                text("z")
            ),
            ("s", "5", "5.0", "-2", "true")
        );
        // At most MAX_JSON_FIELDS besides the image; keys once each.
        let fields = |n: usize| {
            (0..n)
                .map(|i| format!(r#""f{i}":{i}"#))
                .collect::<Vec<_>>()
                .join(",")
        };
        let b = parse(format!(r#"{{"image":"aGk=",{}}}"#, fields(MAX_JSON_FIELDS)).as_bytes());
        assert_eq!(b.unwrap().fields.len(), MAX_JSON_FIELDS);
        let e = parse(format!(r#"{{{},"image":"aGk="}}"#, fields(MAX_JSON_FIELDS + 1)).as_bytes())
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "invalid_request"));
        assert!(e.message.contains("too many fields"), "{}", e.message);
        for body in [
            r#"{"subject":"a","subject":"b"}"#,
            r#"{"image":"aGk=","image":"aGk="}"#,
        ] {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(e.code, "invalid_request", "{body}");
            assert!(e.message.contains("duplicate field"), "{}", e.message);
        }
    }

    #[test]
    fn nested_fields_are_refused_at_their_first_bracket() {
        for (body, field) in [
            (r#"{"image":"aGk=","x":[1]}"#, "x"),
            (r#"{"image":"aGk=","x":{}}"#, "x"),
            (r#"{"image":"aGk=","x":null}"#, "x"),
            (r#"{"x":[],"image":"aGk="}"#, "x"),
            (r#"{"image":[1]}"#, "image"),
            (r#"{"image":12}"#, "image"),
        ] {
            let e = parse(body.as_bytes()).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (422, "invalid_request"),
                "{body}"
            );
            assert!(
                e.message.contains(&format!("field `{field}` must be")),
                "{e:?}"
            );
        }
        // A huge nested value that never ends: refused for its shape at the `[` or `{`, 21
        // characters in, without reading on (reading it would find the body cut off: 400
        // `invalid_json`).
        for (open, item) in [("[", "0,"), ("{", "\"a\":0,"), ("", "[[[[")] {
            let mut body = format!(r#"{{"image":"aGk=","x":{open}"#).into_bytes();
            body.extend(item.repeat(1_000_000).as_bytes());
            let e = parse(&body).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code),
                (422, "invalid_request"),
                "{open}: {e:?}"
            );
            assert!(e.message.contains("column 21"), "{}", e.message);
        }
        let mut image = br#"{"image":["#.to_vec();
        image.extend(b"0,".repeat(1_000_000));
        assert_eq!(parse(&image).unwrap_err().code, "invalid_request");
    }
}
