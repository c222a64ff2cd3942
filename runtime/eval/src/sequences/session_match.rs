//! How passed genuine sessions verify, and whether another face's verify: each genuine clip
//! that passes is matched as `/v1/verify` matches a session ([`Verifier::judge_session`]),
//! against a template of the same face from another of its genuine clips (the same photo,
//! rendered and observed again; its first usable frame) and against every other face's. The
//! match is reported without the action frames (the rule before 2026-12-07: the worse of the
//! probe and the witnesses' median) and with them (now), so the cost of judging the frames that
//! performed the actions, turned or with the mouth open, is measured rather than assumed.

use clap::Parser;
use facekey_runtime::challenge::checker::kept_for_verify;
use facekey_runtime::challenge::{ChallengePolicy, FrameObservation, Outcome, evaluate};
use facekey_runtime::config::Config;
use facekey_runtime::decision::Decision;
use facekey_runtime::fusion::FusionMlp;
use facekey_runtime::verifier::{MatchVerdict, Verifier};
use facekey_runtime::vision::VisionConfig;
use facekey_runtime::vision::embed::{Embedding, MatchScore, compare_with};
use serde::Serialize;

use super::SequenceKind;
use super::observe::ObservedClip;

/// One passed genuine session matched against one face's template.
#[derive(Debug, Clone, Serialize)]
pub struct SessionMatch {
    /// The session's clip.
    pub clip: String,
    /// The clip whose first usable frame is the template.
    pub template: String,
    /// Whether the template is of the session's own face.
    pub genuine: bool,
    /// Similarity of the probe (the best frame).
    pub probe: f64,
    /// Similarity of the witnesses' median.
    pub witnesses: Option<f64>,
    /// Similarity of the action frames' median.
    pub action_frames: Option<f64>,
    /// Accepted by the match without the action frames.
    pub accepted_before: bool,
    /// Accepted by the match with them (the shipped rule).
    pub accepted_now: bool,
}

/// Counts of [`SessionMatch`]es.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SessionMatchCounts {
    /// Genuine pairs, and how many each rule accepts.
    pub genuine: usize,
    /// Genuine pairs accepted without the action frames.
    pub genuine_accepted_before: usize,
    /// Genuine pairs accepted with them.
    pub genuine_accepted_now: usize,
    /// Impostor pairs, and how many each rule accepts.
    pub impostor: usize,
    /// Impostor pairs accepted without the action frames.
    pub impostor_accepted_before: usize,
    /// Impostor pairs accepted with them.
    pub impostor_accepted_now: usize,
}

/// The report: every pair and the counts.
#[derive(Debug, Clone, Serialize)]
pub struct SessionMatchReport {
    /// The counts.
    pub counts: SessionMatchCounts,
    /// Every pair.
    pub pairs: Vec<SessionMatch>,
}

fn first_embedding(frames: &[FrameObservation]) -> Option<Embedding> {
    frames
        .iter()
        .find_map(|f| f.face.as_ref()?.embedding.clone())
}

/// Matches every genuine clip that passes under `policy` against the template of each other
/// genuine clip (its first usable frame) of the same face and of every other face.
pub fn session_matches(
    clips: &[ObservedClip],
    policy: &ChallengePolicy,
) -> anyhow::Result<SessionMatchReport> {
    let config = Config::try_parse_from(["facekey-runtime"])
        .map_err(|e| anyhow::anyhow!("the server's default configuration: {e}"))?;
    let fusion =
        FusionMlp::reference().map_err(|e| anyhow::anyhow!("the reference fusion weights: {e}"))?;
    let verifier = Verifier::new(fusion, config.verifier_config());
    let matching = VisionConfig::default().matching;
    let models = config.match_models;
    let scores = |e: &Embedding, t: &Embedding| -> Vec<MatchScore> {
        vec![compare_with(e, t, &matching, models)]
    };
    let genuine: Vec<&ObservedClip> = clips
        .iter()
        .filter(|c| c.kind == SequenceKind::Genuine)
        .collect();
    let mut pairs = Vec::new();
    for clip in &genuine {
        let verdict = evaluate(&clip.challenge, &clip.frames, policy);
        if verdict.outcome != Outcome::Passed {
            continue;
        }
        let Some(kept) = kept_for_verify(&verdict, &clip.frames) else {
            continue;
        };
        let Some(probe) = kept.probe.embedding.clone() else {
            continue;
        };
        for other in genuine.iter().filter(|o| o.id != clip.id) {
            let Some(template) = first_embedding(&other.frames) else {
                continue;
            };
            let witnesses: Vec<_> = kept
                .witnesses
                .iter()
                .map(|w| scores(w, &template))
                .collect();
            let actions: Vec<_> = kept
                .action_frames
                .iter()
                .map(|a| scores(a, &template))
                .collect();
            let probe_scores = scores(&probe, &template);
            let typical =
                |frames: &[Vec<MatchScore>]| verifier.judge_typical(frames).map(|v| v.similarity);
            let before = verifier.judge_session(&probe_scores, &witnesses, &[]);
            let now = verifier.judge_session(&probe_scores, &witnesses, &actions);
            let accepted =
                |v: Option<MatchVerdict>| v.is_some_and(|v| v.decision == Decision::Accept);
            pairs.push(SessionMatch {
                clip: clip.id.clone(),
                template: other.id.clone(),
                genuine: other.identity == clip.identity,
                probe: verifier
                    .judge_templates(&probe_scores)
                    .map_or(0.0, |v| v.similarity),
                witnesses: typical(&witnesses),
                action_frames: typical(&actions),
                accepted_before: accepted(before),
                accepted_now: accepted(now),
            });
        }
    }
    let mut counts = SessionMatchCounts::default();
    for p in &pairs {
        if p.genuine {
            counts.genuine += 1;
            counts.genuine_accepted_before += usize::from(p.accepted_before);
            counts.genuine_accepted_now += usize::from(p.accepted_now);
        } else {
            counts.impostor += 1;
            counts.impostor_accepted_before += usize::from(p.accepted_before);
            counts.impostor_accepted_now += usize::from(p.accepted_now);
        }
    }
    Ok(SessionMatchReport { counts, pairs })
}
