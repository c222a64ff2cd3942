//! The models' side of the sequences: building [`Subject`]s from the sample photos (every face
//! framed like a webcam, its 68 landmarks found by the runtime's own landmark model) and turning
//! a clip's frames into [`FrameObservation`]s with the server's [`observe_bytes`].

use facekey_runtime::challenge::{FrameObservation, Landmarks68};
use facekey_runtime::vision::landmarks::{ChallengeModels, observe_bytes, observe_frame};
use facekey_runtime::vision::{Embedding, Vision};

use super::face::Points68;
use super::{Sequence, SequenceKind, Subject, frame_face};
use crate::EvalError;
use crate::collect::Source;
use crate::rng::Rng;

/// The runtime's landmarks as `f64` pairs.
pub fn points(lm: &Landmarks68) -> Points68 {
    let mut out = [(0.0, 0.0); 68];
    for (o, p) in out.iter_mut().zip(lm.points()) {
        *o = (f64::from(p.x), f64::from(p.y));
    }
    out
}

/// Why a face of a photo did not become a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// `photo#face`.
    pub face: String,
    /// Why.
    pub reason: String,
}

/// Every face of every source photo whose box is at least `min_face_px` on its short side,
/// framed at `w x h` (face box = 42 % of the frame's height), with the landmarks the runtime
/// finds in that neutral frame and the eye-open probability `fr_eye` gives it. A face whose
/// framed copy yields no usable observation, or that repeats an earlier subject (embedding
/// distance under 0.3), is skipped with the reason.
pub fn subjects(
    vision: &Vision,
    models: &ChallengeModels,
    sources: &[Source],
    w: u32,
    h: u32,
    min_face_px: f32,
    seed: u64,
) -> Result<(Vec<Subject>, Vec<Skipped>), EvalError> {
    let mut out: Vec<(Subject, Embedding)> = Vec::new();
    let mut skipped = Vec::new();
    for src in sources {
        let (faces, _) = vision
            .detect(&src.image)
            .map_err(|source| EvalError::Vision {
                context: format!("detecting faces in {}", src.name),
                source,
            })?;
        let stem = src
            .name
            .rsplit_once('.')
            .map_or(src.name.as_str(), |(s, _)| s)
            .to_string();
        let big: Vec<_> = faces
            .iter()
            .filter(|f| f.bbox.width.min(f.bbox.height) >= min_face_px)
            .collect();
        for (k, face) in big.iter().enumerate() {
            let name = if big.len() == 1 {
                stem.clone()
            } else {
                format!("{stem}-{}", k + 1)
            };
            let mut rng = Rng::derive(seed, &format!("frame/{name}"));
            let b = face.bbox;
            let others: Vec<[f64; 4]> = faces
                .iter()
                .filter(|o| o.bbox != b)
                .map(|o| {
                    let ob = o.bbox;
                    [ob.x, ob.y, ob.width, ob.height].map(f64::from)
                })
                .collect();
            let (neutral, _) = frame_face(
                &src.image,
                [
                    f64::from(b.x),
                    f64::from(b.y),
                    f64::from(b.width),
                    f64::from(b.height),
                ],
                &others,
                w,
                h,
                0.42,
                &mut rng,
            );
            let obs = observe_frame(vision, models, &neutral, 0);
            let Some(f) = obs.face else {
                skipped.push(Skipped {
                    face: name,
                    reason: obs
                        .unusable
                        .unwrap_or_else(|| "no face in the framed copy".into()),
                });
                continue;
            };
            let Some(embedding) = f.embedding else {
                continue;
            };
            if let Some((dup, _)) = out.iter().find(|(_, e)| e.distance(&embedding) < 0.3) {
                skipped.push(Skipped {
                    face: name,
                    reason: format!("the same face as {}", dup.name),
                });
                continue;
            }
            let eyes_open = f.eyes.map_or(0.0, |e| e.mean_open());
            out.push((
                Subject {
                    name,
                    neutral,
                    landmarks: points(&f.landmarks),
                    eyes_open,
                },
                embedding,
            ));
        }
    }
    Ok((out.into_iter().map(|(s, _)| s).collect(), skipped))
}

/// A clip as the checker sees it: one observation per frame, in order (serialisable, so the
/// lab can cache the models' observations and re-judge them without rendering again).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ObservedClip {
    /// Clip id.
    pub id: String,
    /// What it shows.
    pub kind: SequenceKind,
    /// Whose face.
    pub identity: String,
    /// The challenge it is judged against.
    pub challenge: Vec<facekey_runtime::challenge::Action>,
    /// Observations (client timestamps from `base_ms`).
    pub frames: Vec<FrameObservation>,
    /// Ground truth per frame: the action being performed, if any (empty when unknown).
    #[serde(default)]
    pub performing: Vec<Option<facekey_runtime::challenge::Action>>,
}

/// Observes every frame of `seq` as the server would, with client timestamps `base_ms + t_ms`.
pub fn observe(
    vision: &Vision,
    models: &ChallengeModels,
    seq: &Sequence,
    base_ms: u64,
) -> Result<ObservedClip, EvalError> {
    let frames = seq
        .frames
        .iter()
        .map(|f| {
            observe_bytes(vision, models, &f.jpeg, base_ms + f.t_ms).map_err(|source| {
                EvalError::Vision {
                    context: format!("decoding a frame of {}", seq.id),
                    source,
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ObservedClip {
        id: seq.id.clone(),
        kind: seq.kind,
        identity: seq.identity.clone(),
        challenge: seq.challenge.clone(),
        frames,
        performing: seq.frames.iter().map(|f| f.performing).collect(),
    })
}
