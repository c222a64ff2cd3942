//! Request bodies of the image routes as the OpenAPI document describes them. The handlers read
//! both forms through one extractor ([`super::image_input::ImageInput`]: a multipart form or a
//! JSON object, the image under `image`), so these types exist for the document: without them a
//! client generated from it would have no way to send an image. The contract test
//! (`tests/api/contract.sh`, schemathesis against the real server) checks they match what is
//! accepted. Optional fields are left out rather than sent as `null` (the server refuses null),
//! so they are plain types marked `required = false`, not nullable `Option`s.

use utoipa::ToSchema;

/// JSON body of `POST /v1/verify`: the subject, and the image or a passed liveness session.
#[derive(ToSchema)]
pub struct VerifyJson {
    /// Id of the subject to verify against.
    #[schema(min_length = 1, max_length = 256)]
    pub subject: String,
    /// The probe image (JPEG, PNG or WebP) in base64, standard or URL-safe alphabet, padding
    /// optional, a `data:<mime>;base64,` prefix allowed. Required unless `session` is given.
    #[schema(required = false, content_encoding = "base64", min_length = 1)]
    pub image: String,
    /// Id of a passed challenge-liveness session (`/v1/liveness/sessions`): its best frame is
    /// the probe (or `image`, when it shows the same face) and its result is the liveness.
    #[schema(required = false, min_length = 1, max_length = 256)]
    pub session: String,
    /// Return the fusion MLP's layer values (admin keys).
    #[schema(required = false)]
    pub include_layers: bool,
}

/// Multipart body of `POST /v1/verify`: the same fields as the JSON form, the image as a file.
#[derive(ToSchema)]
pub struct VerifyForm {
    /// Id of the subject to verify against.
    #[schema(min_length = 1, max_length = 256)]
    pub subject: String,
    /// The probe image file (JPEG, PNG or WebP). Required unless `session` is given.
    #[schema(required = false, value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
    /// Id of a passed challenge-liveness session.
    #[schema(required = false, min_length = 1, max_length = 256)]
    pub session: String,
    /// `true` or `false`: return the fusion MLP's layer values (admin keys).
    #[schema(required = false)]
    pub include_layers: bool,
}

/// JSON body of `POST /v1/identify`: the image, a passed liveness session, or both.
#[derive(ToSchema)]
pub struct IdentifyJson {
    /// The probe image (JPEG, PNG or WebP) in base64 (as for `/v1/verify`). Required unless
    /// `session` is given.
    #[schema(required = false, content_encoding = "base64", min_length = 1)]
    pub image: String,
    /// Id of a passed challenge-liveness session opened without a subject: its best frame is the
    /// probe (or `image`, when it shows the same face) and its result is the liveness; it is
    /// consumed (one identification or verification).
    #[schema(required = false, min_length = 1, max_length = 256)]
    pub session: String,
    /// How many of the nearest subjects to judge (default 5).
    #[schema(required = false, minimum = 1, maximum = 100)]
    pub limit: u32,
}

/// Multipart body of `POST /v1/identify`: the same fields as the JSON form, the image as a file.
#[derive(ToSchema)]
pub struct IdentifyForm {
    /// The probe image file (JPEG, PNG or WebP). Required unless `session` is given.
    #[schema(required = false, value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
    /// Id of a passed challenge-liveness session opened without a subject.
    #[schema(required = false, min_length = 1, max_length = 256)]
    pub session: String,
    /// How many of the nearest subjects to judge (1-100, default 5).
    #[schema(required = false, minimum = 1, maximum = 100)]
    pub limit: u32,
}

/// JSON body of `POST /v1/liveness` and `POST /v1/subjects/{id}/faces`: one image.
#[derive(ToSchema)]
pub struct ImageJson {
    /// The image (JPEG, PNG or WebP) in base64 (as for `/v1/verify`).
    #[schema(content_encoding = "base64", min_length = 1)]
    pub image: String,
}

/// Multipart body of `POST /v1/liveness` and `POST /v1/subjects/{id}/faces`: one image file.
#[derive(ToSchema)]
pub struct ImageForm {
    /// The image file (JPEG, PNG or WebP).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    pub image: Vec<u8>,
}

/// Multipart body of `POST /v1/liveness/sessions/{id}/frames`: 1 to 8 `frame` file parts and
/// as many `timestamp_ms` text parts, paired by position (the i-th timestamp is the i-th
/// frame's), interleaved or one array after the other.
#[derive(ToSchema)]
pub struct FramesForm {
    /// Client capture time of each frame, milliseconds; must increase within the session.
    #[schema(min_items = 1, max_items = 8)]
    pub timestamp_ms: Vec<u64>,
    /// The frames (JPEG, PNG or WebP), in capture order.
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1, max_items = 8)]
    pub frame: Vec<Vec<u8>>,
}
