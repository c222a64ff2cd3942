//! The verification pipeline: decode → detect → choose the face → align → embed → liveness →
//! quality, with per-stage wall times and the pure model-inference time of every model, so
//! benchmarks can compare end-to-end latency with the inference floor.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::{Serialize, Serializer};

use super::VisionError;
use super::align::align_face;
use super::config::{MultiFacePolicy, VisionConfig};
use super::decode::decode_image;
use super::detect::{Detection, Detector, DetectorInference, largest};
use super::embed::{Embedder, Embedding, MatchScore, compare_with};
use super::liveness::{LivenessChecker, LivenessInference, LivenessResult};
use super::models::{self, DTN, EMBEDDER, MINIFAS, ModelSpec, ONET, PNET, RNET};
use super::onnx::{SessionError, SessionOptions, SessionPool, ort_runtime};
use super::quality::{QualityResult, assess};
use super::second_opinion::{
    HumanLiveness, MatchModels, PassiveLivenessModels, SecondEmbedder, SecondModel,
    SecondOpinionError,
};

fn as_millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

fn opt_as_millis<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

/// Wall time of each pipeline stage (serialised as milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct StageTimings {
    /// Decoding the image bytes.
    #[serde(serialize_with = "as_millis")]
    pub decode: Duration,
    /// MTCNN detection (pre/post-processing included).
    #[serde(serialize_with = "as_millis")]
    pub detect: Duration,
    /// Similarity transform and warp to the 150x150 chip.
    #[serde(serialize_with = "as_millis")]
    pub align: Duration,
    /// Embedding.
    #[serde(serialize_with = "as_millis")]
    pub embed: Duration,
    /// Passive liveness (all configured models).
    #[serde(serialize_with = "as_millis")]
    pub liveness: Duration,
    /// Quality scoring.
    #[serde(serialize_with = "as_millis")]
    pub quality: Duration,
    /// Whole call. With `parallel_liveness` the liveness stage overlaps align, embed and
    /// quality, so the stages can add up to more than this.
    #[serde(serialize_with = "as_millis")]
    pub total: Duration,
}

/// Time spent inside ONNX Runtime per model (serialised as milliseconds): the inference floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ModelTimings {
    /// PNet, summed over pyramid levels.
    #[serde(serialize_with = "as_millis")]
    pub pnet: Duration,
    /// Number of PNet runs.
    pub pnet_runs: u32,
    /// RNet.
    #[serde(serialize_with = "as_millis")]
    pub rnet: Duration,
    /// ONet.
    #[serde(serialize_with = "as_millis")]
    pub onet: Duration,
    /// Embedding model.
    #[serde(serialize_with = "opt_as_millis")]
    pub embed: Option<Duration>,
    /// Deep Tree Network.
    #[serde(serialize_with = "opt_as_millis")]
    pub dtn: Option<Duration>,
    /// MiniFASNet-like model.
    #[serde(serialize_with = "opt_as_millis")]
    pub minifas: Option<Duration>,
    /// faceres-deep (second embedding), when it ran.
    #[serde(serialize_with = "opt_as_millis")]
    pub faceres: Option<Duration>,
    /// human_liveness (second passive liveness model), when it ran.
    #[serde(serialize_with = "opt_as_millis")]
    pub human_liveness: Option<Duration>,
}

impl ModelTimings {
    /// Sum of every model's inference time.
    pub fn total(&self) -> Duration {
        self.pnet
            + self.rnet
            + self.onet
            + self.embed.unwrap_or_default()
            + self.dtn.unwrap_or_default()
            + self.minifas.unwrap_or_default()
            + self.faceres.unwrap_or_default()
            + self.human_liveness.unwrap_or_default()
    }

    fn add_detector(&mut self, d: DetectorInference) {
        self.pnet += d.pnet;
        self.pnet_runs += d.pnet_runs;
        self.rnet += d.rnet;
        self.onet += d.onet;
    }
}

/// A cancellation flag checked at stage boundaries: once set (the client went away, the
/// deadline passed), the pipeline stops before its next stage with
/// [`VisionError::Cancelled`] instead of spending inference time on an answer nobody reads.
#[derive(Debug, Clone, Default)]
pub struct Cancel(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Cancel {
    /// Ask the work to stop at its next stage boundary.
    pub fn cancel(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    fn check(&self, before: &'static str) -> Result<(), VisionError> {
        if self.is_cancelled() {
            Err(VisionError::Cancelled { before })
        } else {
            Ok(())
        }
    }
}

/// Which optional stages [`Vision::analyze`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyzeOptions {
    /// Run passive liveness.
    pub liveness: bool,
    /// Score quality.
    pub quality: bool,
}

impl AnalyzeOptions {
    /// Everything (verification).
    pub const FULL: Self = Self {
        liveness: true,
        quality: true,
    };
    /// Embedding and quality, no liveness (enrolment of a trusted image).
    pub const ENROL: Self = Self {
        liveness: false,
        quality: true,
    };
}

/// Everything the pipeline learnt about the chosen face of an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceAnalysis {
    /// Upright image width.
    pub image_width: u32,
    /// Upright image height.
    pub image_height: u32,
    /// How many faces the detector found (the chosen one included).
    pub faces_detected: usize,
    /// The chosen face: box, confidence, landmarks.
    pub face: Detection,
    /// The 128-d dlib embedding, carrying faceres-deep's when `FACEKEY_MATCH_MODELS` is
    /// `dlib+faceres`.
    pub embedding: Embedding,
    /// RMS landmark-to-template distance after alignment (chip pixels).
    pub alignment_residual: f32,
    /// Passive liveness scores, when run (`failure` says why a configured model could not run).
    pub liveness: Option<LivenessResult>,
    /// Quality, when run.
    pub quality: Option<QualityResult>,
    /// Per-stage wall times.
    pub timings: StageTimings,
    /// Per-model inference times.
    pub inference: ModelTimings,
}

impl FaceAnalysis {
    /// Compares this face's embedding with a stored template.
    pub fn compare(&self, template: &Embedding, vision: &Vision) -> MatchScore {
        vision.compare(&self.embedding, template)
    }
}

/// Liveness of one face of a multi-face image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaceLiveness {
    /// The face.
    pub face: Detection,
    /// Its liveness.
    pub liveness: LivenessResult,
}

/// Liveness of every face of an image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LivenessReport {
    /// Upright image width.
    pub image_width: u32,
    /// Upright image height.
    pub image_height: u32,
    /// How many faces the detector found.
    pub faces_detected: usize,
    /// The analysed faces (at most `max_faces`), by descending detection confidence.
    pub faces: Vec<FaceLiveness>,
    /// Per-stage wall times (align, embed and quality stay zero).
    pub timings: StageTimings,
    /// Per-model inference times (liveness summed over faces).
    pub inference: ModelTimings,
}

/// The loaded vision pipeline: every model session built once, shareable across threads
/// (`Arc<Vision>`; calls block, so run them on a blocking thread pool in async code).
#[derive(Debug)]
pub struct Vision {
    config: VisionConfig,
    detector: Detector,
    embedder: Embedder,
    /// faceres-deep, with `dlib+faceres` matching.
    faceres: Option<SecondEmbedder>,
    liveness: LivenessChecker,
    library: PathBuf,
    models_dir: PathBuf,
}

impl Vision {
    /// Loads ONNX Runtime (resolving the library), finds the models directory, verifies the model
    /// checksums and builds every session the configuration needs. Fails with an error naming
    /// the library paths tried or the model file at fault.
    pub fn load(config: VisionConfig) -> Result<Self, VisionError> {
        let rt = ort_runtime(config.runtime.ort_library.as_deref())?;
        let dir = models::resolve_models_dir(config.runtime.models_dir.as_deref())?;
        let options = SessionOptions {
            intra_threads: config.runtime.intra_threads,
            sessions: config.runtime.sessions_per_model.max(1),
        };
        let verify = config.runtime.verify_checksums;
        let warm_up = config.runtime.warm_up;
        let spoof_dir = config.runtime.spoof_model_dir.clone();
        if let Some(d) = &spoof_dir
            && !d.join("SHA256SUMS").exists()
        {
            tracing::warn!(
                dir = %d.display(),
                "replacement liveness models have no SHA256SUMS; loading them unverified"
            );
        }
        let mode = config.liveness.mode;
        let mut wanted: Vec<ModelSpec> = vec![PNET, RNET, ONET, EMBEDDER];
        if mode.uses_dtn() {
            wanted.push(DTN);
        }
        if mode.uses_minifas() {
            wanted.push(MINIFAS);
        }
        // Session creation (graph optimisation) dominates start-up; build models in parallel.
        let loaded: Vec<Result<(ModelSpec, SessionPool), VisionError>> = std::thread::scope(|s| {
            let handles: Vec<_> = wanted
                .iter()
                .map(|&spec| {
                    // Liveness models may come from a replacement directory with its own sums.
                    let replaced = spoof_dir
                        .as_deref()
                        .filter(|_| spec == DTN || spec == MINIFAS);
                    let dir = replaced.unwrap_or(&dir);
                    s.spawn(move || {
                        let expected = match replaced {
                            Some(d) => models::sums_file_checksum(d, spec.file)?,
                            None => verify.then(|| spec.sha256.to_string()),
                        };
                        models::load_model(rt, dir, spec, expected.as_deref(), warm_up, options)
                            .map(|p| (spec, p))
                            .map_err(VisionError::from)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(VisionError::LoaderPanicked))
                })
                .collect()
        });
        let mut pools: Vec<(ModelSpec, SessionPool)> = Vec::with_capacity(loaded.len());
        for r in loaded {
            pools.push(r?);
        }
        let mut take = |spec: ModelSpec| -> Option<SessionPool> {
            let i = pools.iter().position(|(s, _)| *s == spec)?;
            Some(pools.swap_remove(i).1)
        };
        let missing = |spec: ModelSpec| VisionError::ModelNotLoaded { file: spec.file };
        let detector = Detector::new(
            take(PNET).ok_or_else(|| missing(PNET))?,
            take(RNET).ok_or_else(|| missing(RNET))?,
            take(ONET).ok_or_else(|| missing(ONET))?,
            config.detector,
        );
        let embedder = Embedder::new(take(EMBEDDER).ok_or_else(|| missing(EMBEDDER))?);
        let mut liveness = LivenessChecker::new(take(DTN), take(MINIFAS), config.liveness);
        // The second-opinion models: from the bundled directory, pinned checksums.
        let second = config.second_opinion;
        let want_faceres = second.match_models == MatchModels::DlibFaceres;
        let want_human = second.passive_liveness_models
            == PassiveLivenessModels::FrLivenessHumanLiveness
            && mode.uses_minifas();
        let (faceres, human) = std::thread::scope(|s| {
            let f = want_faceres.then(|| {
                s.spawn(|| SecondEmbedder::load(rt, &dir, SecondModel::Faceres, verify, options))
            });
            let h = want_human.then(|| s.spawn(|| HumanLiveness::load(rt, &dir, verify, options)));
            fn join<T>(
                h: std::thread::ScopedJoinHandle<'_, Result<T, SecondOpinionError>>,
            ) -> Result<T, VisionError> {
                h.join()
                    .map_err(|_| VisionError::LoaderPanicked)?
                    .map_err(VisionError::from)
            }
            Ok::<_, VisionError>((f.map(join).transpose()?, h.map(join).transpose()?))
        })?;
        if let Some(h) = human {
            liveness = liveness.with_human_liveness(h);
        }
        Ok(Self {
            detector,
            embedder,
            faceres,
            liveness,
            library: rt.library().to_path_buf(),
            models_dir: dir,
            config,
        })
    }

    /// The configuration the pipeline was loaded with.
    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// The ONNX Runtime library in use.
    pub fn ort_library(&self) -> &Path {
        &self.library
    }

    /// The models directory in use.
    pub fn models_dir(&self) -> &Path {
        &self.models_dir
    }

    /// Decodes image bytes under the configured limits.
    pub fn decode(&self, bytes: &[u8]) -> Result<RgbImage, VisionError> {
        Ok(decode_image(bytes, &self.config.decode)?)
    }

    /// Detects every face of a decoded image (descending confidence) with the detector's
    /// inference times.
    pub fn detect(
        &self,
        img: &RgbImage,
    ) -> Result<(Vec<Detection>, DetectorInference), VisionError> {
        Ok(self.detector.detect(img)?)
    }

    /// Full verification analysis of image bytes: every stage.
    pub fn verify(&self, bytes: &[u8]) -> Result<FaceAnalysis, VisionError> {
        self.analyze(bytes, AnalyzeOptions::FULL, &Cancel::default())
    }

    /// Enrolment analysis of image bytes: embedding and quality, no liveness. Store
    /// `embedding` as the template.
    pub fn enrol(&self, bytes: &[u8]) -> Result<FaceAnalysis, VisionError> {
        self.analyze(bytes, AnalyzeOptions::ENROL, &Cancel::default())
    }

    /// Decodes and analyses the image's face (chosen by the multi-face policy), stopping before
    /// the next stage once `cancel` is set.
    pub fn analyze(
        &self,
        bytes: &[u8],
        opts: AnalyzeOptions,
        cancel: &Cancel,
    ) -> Result<FaceAnalysis, VisionError> {
        let started = Instant::now();
        cancel.check("decode")?;
        let img = self.decode(bytes)?;
        let decode = started.elapsed();
        cancel.check("detect")?;
        let mut a = self.analyze_image_until(&img, opts, cancel)?;
        a.timings.decode = decode;
        a.timings.total = started.elapsed();
        Ok(a)
    }

    /// Analyses the face of an already decoded, upright image.
    pub fn analyze_image(
        &self,
        img: &RgbImage,
        opts: AnalyzeOptions,
    ) -> Result<FaceAnalysis, VisionError> {
        self.analyze_image_until(img, opts, &Cancel::default())
    }

    fn analyze_image_until(
        &self,
        img: &RgbImage,
        opts: AnalyzeOptions,
        cancel: &Cancel,
    ) -> Result<FaceAnalysis, VisionError> {
        let started = Instant::now();
        let t = Instant::now();
        let (faces, det) = self.detector.detect(img)?;
        let detect = t.elapsed();
        let face = choose_face(&faces, self.config.multi_face)?;
        cancel.check("align")?;
        let mut a = self.analyze_face(img, face, opts)?;
        a.faces_detected = faces.len();
        a.timings.detect = detect;
        a.inference.add_detector(det);
        a.timings.total = started.elapsed();
        Ok(a)
    }

    /// Aligns, embeds and (per `opts`) scores liveness and quality of one detected face, e.g.
    /// each face of [`Vision::detect`] for 1:N identification of a group photo. Detection
    /// timings stay zero and `faces_detected` is 1.
    pub fn analyze_face(
        &self,
        img: &RgbImage,
        face: Detection,
        opts: AnalyzeOptions,
    ) -> Result<FaceAnalysis, VisionError> {
        let started = Instant::now();
        let mut timings = StageTimings::default();
        let mut inference = ModelTimings::default();

        // Liveness only needs the image and the box: with `parallel_liveness` it runs on a
        // second thread while this one aligns, embeds and scores quality.
        let run_liveness = || {
            let t = Instant::now();
            let (result, li) = self.liveness.check(img, &face.bbox);
            (result, li, t.elapsed())
        };
        let rest = || -> Result<_, VisionError> {
            let t = Instant::now();
            let aligned = align_face(img, &face.landmarks)?;
            let align = t.elapsed();
            let t = Instant::now();
            let (embedding, took) = self.embed_both(img, &face, &aligned.chip)?;
            let embed = t.elapsed();
            let t = Instant::now();
            let quality = opts.quality.then(|| {
                assess(
                    &face.bbox,
                    &face.landmarks,
                    &aligned.chip,
                    &self.config.quality,
                )
            });
            Ok((aligned, embedding, took, quality, align, embed, t.elapsed()))
        };
        let panicked = |_| {
            let failure = SessionError::Panicked { model: "liveness" }.to_string();
            tracing::error!(%failure, "passive liveness thread panicked");
            (
                LivenessResult::failed(failure),
                LivenessInference::default(),
                Duration::ZERO,
            )
        };
        let (rest, live) = if opts.liveness
            && self.config.runtime.parallel_liveness
            && rayon::current_thread_index().is_some()
        {
            // On the runtime's inference pool: the liveness branch is a job of the same pool
            // (an idle pool thread takes it, else this one runs it next), never a new thread.
            let (rest, live) = rayon::join(rest, || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(run_liveness))
                    .unwrap_or_else(panicked)
            });
            (rest, Some(live))
        } else if opts.liveness && self.config.runtime.parallel_liveness {
            // Outside a pool (the evaluation lab, benchmarks): a scoped second thread.
            std::thread::scope(|s| {
                let handle = s.spawn(run_liveness);
                let rest = rest();
                let live = handle.join().unwrap_or_else(panicked);
                (rest, Some(live))
            })
        } else {
            let rest = rest();
            let live = if opts.liveness && rest.is_ok() {
                Some(run_liveness())
            } else {
                None
            };
            (rest, live)
        };
        let (aligned, embedding, embed_took, quality, align, embed, quality_time) = rest?;
        timings.align = align;
        timings.embed = embed;
        inference.embed = Some(embed_took.0);
        inference.faceres = embed_took.1;
        if quality.is_some() {
            timings.quality = quality_time;
        }
        let liveness = match live {
            Some((result, li, took)) => {
                timings.liveness = took;
                inference.dtn = li.dtn;
                inference.minifas = li.minifas;
                inference.human_liveness = li.human_liveness;
                Some(result)
            }
            None => None,
        };

        timings.total = started.elapsed();
        Ok(FaceAnalysis {
            image_width: img.width(),
            image_height: img.height(),
            faces_detected: 1,
            face,
            embedding,
            alignment_residual: aligned.residual as f32,
            liveness,
            quality,
            timings,
            inference,
        })
    }

    /// Passive liveness of the faces in the image bytes (for `/v1/liveness`), at most
    /// `max_faces` of them, the most confident first; an image without faces gives an empty
    /// list, not an error.
    pub fn liveness_all(&self, bytes: &[u8]) -> Result<LivenessReport, VisionError> {
        self.liveness_all_until(bytes, &Cancel::default())
    }

    /// [`Vision::liveness_all`], stopping before the next stage (or face) once `cancel` is set.
    pub fn liveness_all_until(
        &self,
        bytes: &[u8],
        cancel: &Cancel,
    ) -> Result<LivenessReport, VisionError> {
        let started = Instant::now();
        cancel.check("decode")?;
        let img = self.decode(bytes)?;
        cancel.check("detect")?;
        let mut timings = StageTimings {
            decode: started.elapsed(),
            ..StageTimings::default()
        };
        let mut inference = ModelTimings::default();
        let t = Instant::now();
        let (faces, det) = self.detector.detect(&img)?;
        timings.detect = t.elapsed();
        inference.add_detector(det);
        let t = Instant::now();
        let faces_detected = faces.len();
        let mut out = Vec::with_capacity(faces.len().min(self.config.max_faces));
        for face in faces.into_iter().take(self.config.max_faces) {
            cancel.check("liveness")?;
            let (liveness, li) = self.liveness.check(&img, &face.bbox);
            if let Some(d) = li.dtn {
                inference.dtn = Some(inference.dtn.unwrap_or_default() + d);
            }
            if let Some(d) = li.minifas {
                inference.minifas = Some(inference.minifas.unwrap_or_default() + d);
            }
            if let Some(d) = li.human_liveness {
                inference.human_liveness = Some(inference.human_liveness.unwrap_or_default() + d);
            }
            out.push(FaceLiveness { face, liveness });
        }
        timings.liveness = t.elapsed();
        timings.total = started.elapsed();
        Ok(LivenessReport {
            image_width: img.width(),
            image_height: img.height(),
            faces_detected,
            faces: out,
            timings,
            inference,
        })
    }

    /// Compares two embeddings under the configured match models (`FACEKEY_MATCH_MODELS`):
    /// fused dlib + faceres-deep when both carry faceres-deep's embedding, else dlib alone
    /// ([`MatchScore::models`] says which).
    pub fn compare(&self, a: &Embedding, b: &Embedding) -> MatchScore {
        compare_with(
            a,
            b,
            &self.config.matching,
            self.config.second_opinion.match_models,
        )
    }

    /// [`Self::compare`] of `probe` with each of `templates`, in their order.
    pub fn compare_all(&self, probe: &Embedding, templates: &[Embedding]) -> Vec<MatchScore> {
        templates.iter().map(|t| self.compare(probe, t)).collect()
    }

    /// The match models configured.
    pub fn match_models(&self) -> MatchModels {
        self.config.second_opinion.match_models
    }

    /// dlib's embedding of the aligned chip, carrying faceres-deep's (own alignment, from
    /// the image) when configured; with the inference times of each. On the runtime's
    /// inference pool the two models run as a `rayon::join` (an idle pool thread takes
    /// faceres-deep, else this one runs it next), never on a new thread. A faceres-deep
    /// failure fails the analysis: it never falls back to dlib alone silently.
    fn embed_both(
        &self,
        img: &RgbImage,
        face: &Detection,
        chip: &RgbImage,
    ) -> Result<(Embedding, (Duration, Option<Duration>)), VisionError> {
        let Some(faceres) = &self.faceres else {
            let (e, took) = self.embedder.embed(chip)?;
            return Ok((e, (took, None)));
        };
        let dlib = || self.embedder.embed(chip);
        let second = || faceres.embed(img, &face.landmarks);
        let (d, f) = if rayon::current_thread_index().is_some() {
            rayon::join(dlib, second)
        } else {
            (dlib(), second())
        };
        let (e, took) = d?;
        let (values, f_took, _) = f.map_err(VisionError::from)?;
        let e = e.with_faceres(values).map_err(|err| SessionError::Output {
            model: "faceres",
            detail: err.to_string(),
        })?;
        Ok((e, (took, Some(f_took))))
    }
}

/// Picks the face a single-face operation uses.
pub fn choose_face(faces: &[Detection], policy: MultiFacePolicy) -> Result<Detection, VisionError> {
    match (faces.len(), policy) {
        (0, _) => Err(VisionError::NoFace),
        (1, _) => Ok(faces[0]),
        (n, MultiFacePolicy::Reject) => Err(VisionError::MultipleFaces { count: n }),
        (_, MultiFacePolicy::Largest) => {
            largest(faces).map(|i| faces[i]).ok_or(VisionError::NoFace)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::detect::{BoundingBox, Landmarks, Point};
    use super::*;

    fn det(size: f32, conf: f32) -> Detection {
        let p = Point { x: 1.0, y: 1.0 };
        Detection {
            bbox: BoundingBox {
                x: 0.0,
                y: 0.0,
                width: size,
                height: size,
            },
            confidence: conf,
            landmarks: Landmarks {
                left_eye: p,
                right_eye: p,
                nose: p,
                mouth_left: p,
                mouth_right: p,
            },
        }
    }

    #[test]
    fn face_choice_policies() {
        assert!(matches!(
            choose_face(&[], MultiFacePolicy::Largest),
            Err(VisionError::NoFace)
        ));
        let faces = [det(20.0, 0.99), det(50.0, 0.9)];
        assert_eq!(
            choose_face(&faces, MultiFacePolicy::Largest)
                .unwrap()
                .bbox
                .width,
            50.0
        );
        assert!(matches!(
            choose_face(&faces, MultiFacePolicy::Reject),
            Err(VisionError::MultipleFaces { count: 2 })
        ));
        assert_eq!(
            choose_face(&faces[..1], MultiFacePolicy::Reject)
                .unwrap()
                .bbox
                .width,
            20.0
        );
    }

    #[test]
    fn model_timings_total_and_json_millis() {
        let t = ModelTimings {
            pnet: Duration::from_millis(20),
            pnet_runs: 10,
            rnet: Duration::from_millis(5),
            onet: Duration::from_millis(3),
            embed: Some(Duration::from_millis(7)),
            dtn: None,
            minifas: Some(Duration::from_micros(4500)),
            faceres: None,
            human_liveness: None,
        };
        assert_eq!(t.total(), Duration::from_micros(39_500));
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["pnet"], 20.0);
        assert_eq!(v["minifas"], 4.5);
        assert!(v["dtn"].is_null());
    }
}
