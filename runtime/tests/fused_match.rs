//! The fused match (dlib + faceres-deep) and fused passive liveness (fr_liveness +
//! human_liveness) in the server, end to end over HTTP with the real models (issue 13 item 7):
//! enrolment stores both embeddings in one sealed template, a genuine probe is accepted on the
//! fused score, the look-alike pair of `t1.jpg` (`t1-1`/`t1-2`, the lab's only dlib false
//! match) is rejected, and a subject enrolled before faceres-deep (a dlib-only template written
//! through the store) is matched on dlib alone, visibly, until a face is added again. Runs on
//! the embedded redb store and on a real PostgreSQL (../shared/TESTING.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::OnceLock;

use common::postgres::{PgServer, key_file};
use common::{Running, face};
use facekey_runtime::config::Config;
use facekey_runtime::store::postgres::PgStore;
use facekey_runtime::store::{NewTemplate, RedbStore, TemplateKeys, TemplateStore};
use facekey_runtime::vision::embed::FUSED_TEMPLATE_MODEL;
use facekey_runtime::vision::second_opinion::MatchModels;
use facekey_runtime::vision::{EMBEDDING_MODEL, Vision, VisionConfig};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

fn vision() -> &'static Vision {
    static V: OnceLock<Vision> = OnceLock::new();
    V.get_or_init(|| Vision::load(VisionConfig::default()).expect("vision pipeline"))
}

fn png(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The `k`-th face of `t1.jpg` in detection order (the lab's `t1-{k+1}`), cropped 2.6x its
/// box as the lab crops it, as a PNG.
fn t1_face(k: usize) -> Vec<u8> {
    let v = vision();
    let img = v.decode(&face("t1.jpg")).unwrap();
    let (faces, _) = v.detect(&img).unwrap();
    let b = faces[k].bbox;
    let side = 2.6 * f64::from(b.width.max(b.height));
    let (cx, cy) = (
        f64::from(b.x) + f64::from(b.width) / 2.0,
        f64::from(b.y) + f64::from(b.height) / 2.0,
    );
    let x0 = (cx - side / 2.0).max(0.0).floor() as u32;
    let y0 = (cy - side / 2.0).max(0.0).floor() as u32;
    let x1 = ((cx + side / 2.0).ceil() as u32).min(img.width());
    let y1 = ((cy + side / 2.0).ceil() as u32).min(img.height());
    png(&image::imageops::crop_imm(&img, x0, y0, x1 - x0, y1 - y0).to_image())
}

/// A degraded copy (downscaled 0.8x) of a PNG: another presentation of the same face.
fn rescaled(bytes: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(bytes).unwrap().to_rgb8();
    let (w, h) = (img.width() * 4 / 5, img.height() * 4 / 5);
    png(&image::imageops::resize(
        &img,
        w,
        h,
        image::imageops::FilterType::Triangle,
    ))
}

/// dlib's embedding of a face, as a template enrolled before faceres-deep holds it.
fn legacy_template(image: &str) -> NewTemplate {
    let a = vision().enrol(&face(image)).unwrap();
    NewTemplate {
        model: EMBEDDING_MODEL.to_string(),
        embedding: a.embedding.as_slice().to_vec(),
        quality: None,
        enrolled_by: None,
    }
}

async fn create_subject(s: &Running, name: &str) -> String {
    let (status, v) = s
        .json(
            s.client
                .post(s.url("/v1/subjects"))
                .json(&json!({ "name": name })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn enrol(s: &Running, id: &str, bytes: Vec<u8>) -> Value {
    let form = Form::new().part("image", Part::bytes(bytes).file_name("face.png"));
    let (status, v) = s
        .json(
            s.client
                .post(s.url(&format!("/v1/subjects/{id}/faces")))
                .multipart(form),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    v
}

async fn verify(s: &Running, id: &str, bytes: Vec<u8>) -> Value {
    let form = Form::new()
        .text("subject", id.to_owned())
        .part("image", Part::bytes(bytes).file_name("probe.png"));
    let (status, v) = s
        .json(s.client.post(s.url("/v1/verify")).multipart(form))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

async fn subject(s: &Running, id: &str) -> Value {
    let (status, v) = s
        .json(s.client.get(s.url(&format!("/v1/subjects/{id}"))))
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    v
}

fn models(v: &Value) -> Vec<&str> {
    v["match"]["models"]
        .as_array()
        .unwrap_or_else(|| panic!("no match.models in {v}"))
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect()
}

fn metric(text: &str, models: &str) -> u64 {
    let prefix = format!("facekey_verify_match_models_total{{models=\"{models}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Everything the server does with a legacy subject `legacy` (one dlib-only template of
/// `astronaut.png`, written through the store before the server started) and new ones.
async fn fused_and_legacy(s: &Running, legacy: &str) {
    // The lab's look-alike pair: dlib alone calls them the same person (distance below 0.6 on
    // its degraded copies); the fused score separates them.
    let (a, b) = (t1_face(0), t1_face(1));
    let v = vision();
    let (ea, eb) = (
        v.enrol(&a).unwrap().embedding,
        v.enrol(&b).unwrap().embedding,
    );
    let fused = v.compare(&ea, &eb);
    assert_eq!(fused.models, MatchModels::DlibFaceres);
    eprintln!(
        "t1-1 vs t1-2: dlib distance {:.3}, fused similarity {:.3}",
        fused.distance, fused.similarity
    );
    assert!(fused.similarity < 0.5, "{fused:?}");
    let dlib = facekey_runtime::vision::embed::compare(&ea, &eb, &v.config().matching);
    assert!(
        dlib.similarity > 0.5,
        "dlib alone accepts the pair: {dlib:?}"
    );

    let t1 = create_subject(s, "t1-1").await;
    let e = enrol(s, &t1, a.clone()).await;
    assert_eq!(e["faces"], 1, "{e}");
    let view = subject(s, &t1).await;
    assert_eq!(
        view["face_models"],
        json!({ FUSED_TEMPLATE_MODEL: 1 }),
        "{view}"
    );
    assert_eq!(view["outdated_faces"], 0, "{view}");

    let before = s.metrics().await;
    let (dlib0, fused0) = (metric(&before, "dlib"), metric(&before, "dlib+faceres"));

    // Genuine: another presentation of t1-1 is accepted on the fused score.
    let genuine = verify(s, &t1, rescaled(&a)).await;
    assert_eq!(genuine["decision"], "accept", "{genuine}");
    assert_eq!(models(&genuine), ["dlib", "faceres"]);
    assert!(genuine.get("warnings").is_none(), "{genuine}");
    assert!(genuine["inference_ms"]["faceres"].as_f64().unwrap() > 0.0);
    // Passive liveness ran both models and fused them.
    let live = &genuine["liveness"]["models"];
    assert!(live["human_liveness"].as_f64().is_some(), "{genuine}");
    assert!(genuine["inference_ms"]["human_liveness"].as_f64().unwrap() > 0.0);

    // Look-alike: t1-2 claiming to be t1-1 is rejected as no match.
    let lookalike = verify(s, &t1, b).await;
    assert_eq!(lookalike["decision"], "reject", "{lookalike}");
    assert_eq!(models(&lookalike), ["dlib", "faceres"]);
    assert_eq!(lookalike["match"]["decision"], "reject", "{lookalike}");
    assert!(
        lookalike["reasons"]
            .as_array()
            .unwrap()
            .contains(&json!("no_match")),
        "{lookalike}"
    );

    // Legacy subject: matched on dlib alone, and the answer says so.
    let view = subject(s, legacy).await;
    assert_eq!(view["face_models"], json!({ EMBEDDING_MODEL: 1 }), "{view}");
    assert_eq!(view["outdated_faces"], 0, "{view}");
    let old = verify(s, legacy, face("astronaut_640x480.jpg")).await;
    assert_eq!(old["decision"], "accept", "{old}");
    assert_eq!(models(&old), ["dlib"]);
    let warning = old["warnings"][0].as_str().unwrap();
    assert!(warning.starts_with("matched_on_dlib_only"), "{old}");
    assert!(
        warning.contains(&format!("/v1/subjects/{legacy}/faces")),
        "{old}"
    );

    let after = s.metrics().await;
    assert_eq!(metric(&after, "dlib"), dlib0 + 1);
    assert_eq!(metric(&after, "dlib+faceres"), fused0 + 2);

    // Re-enrolment is adding the face again: the new template holds both embeddings and the
    // fused score decides from then on.
    enrol(s, legacy, face("astronaut.png")).await;
    let view = subject(s, legacy).await;
    assert_eq!(
        view["face_models"],
        json!({ EMBEDDING_MODEL: 1, FUSED_TEMPLATE_MODEL: 1 }),
        "{view}"
    );
    let new = verify(s, legacy, face("astronaut_640x480.jpg")).await;
    assert_eq!(new["decision"], "accept", "{new}");
    assert_eq!(models(&new), ["dlib", "faceres"]);
    assert!(new.get("warnings").is_none(), "{new}");
    assert_eq!(new["match"]["templates"], 2, "{new}");
}

/// The test server: the faces of the group photo `t1.jpg` are small (quality about 0.3), so the
/// enrolment quality gate is lowered to enrol them.
fn test_config() -> Config {
    let mut c = Config::for_tests();
    c.enrol_min_quality = 0.0;
    c
}

#[tokio::test]
async fn fused_match_on_the_embedded_store() {
    let config = test_config();
    // A subject enrolled before faceres-deep: written through the store, then the server opens it.
    let legacy = {
        let keys = TemplateKeys::load_or_create_local(&config.data_dir).unwrap();
        let store = RedbStore::open(&config.data_dir, 10, keys).unwrap();
        let subject = store.create_subject("legacy", None, None).await.unwrap();
        store
            .add_template(&subject.id, legacy_template("astronaut.png"), None)
            .await
            .unwrap();
        subject.id
    };
    let s = Running::start(config).await;
    fused_and_legacy(&s, &legacy).await;
}

#[tokio::test]
async fn fused_match_on_postgres() {
    let pg = PgServer::start();
    let line = format!("k1:{}", "cd".repeat(32));
    let keys_path = key_file(pg.dir.path(), &line);
    let legacy = {
        let keys = TemplateKeys::from_file(&keys_path).unwrap();
        let store = PgStore::connect(&pg.url(), None, keys, 10, "FACEKEY_DATABASE_URL")
            .await
            .unwrap();
        let subject = store.create_subject("legacy", None, None).await.unwrap();
        store
            .add_template(&subject.id, legacy_template("astronaut.png"), None)
            .await
            .unwrap();
        subject.id
    };
    let mut config = test_config();
    config.database_url = Some(pg.url());
    config.template_key_file = Some(keys_path);
    let s = Running::start(config).await;
    fused_and_legacy(&s, &legacy).await;
    // Templates holding both embeddings are sealed in PostgreSQL like every template.
    let row = pg.psql(&format!(
        "SELECT model, octet_length(ciphertext) FROM facekey_templates \
         WHERE model = '{FUSED_TEMPLATE_MODEL}' LIMIT 1"
    ));
    assert!(row.contains(&((128 + 1024) * 4 + 16).to_string()), "{row}");
}

#[tokio::test]
async fn dlib_only_setting_matches_on_dlib_alone() {
    let mut config = Config::for_tests();
    config.match_models = MatchModels::Dlib;
    config.passive_liveness_models =
        facekey_runtime::vision::second_opinion::PassiveLivenessModels::FrLiveness;
    let s = Running::start(config).await;
    let id = create_subject(&s, "Eileen").await;
    enrol(&s, &id, face("astronaut.png")).await;
    assert_eq!(
        subject(&s, &id).await["face_models"],
        json!({ EMBEDDING_MODEL: 1 })
    );
    let v = verify(&s, &id, face("astronaut_640x480.jpg")).await;
    assert_eq!(v["decision"], "accept", "{v}");
    assert_eq!(models(&v), ["dlib"]);
    // Configured for dlib alone: nothing to warn about.
    assert!(v.get("warnings").is_none(), "{v}");
    assert!(
        v["liveness"]["models"].get("human_liveness").is_none(),
        "{v}"
    );
    assert!(v["inference_ms"]["faceres"].is_null(), "{v}");
}
