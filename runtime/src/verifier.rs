//! The verification core: the one owner of thresholds and of every accept/reject decision.
//! Vision measures (distance, similarity, liveness scores, quality); the [`Verifier`] turns those
//! measurements into verdicts and the final decision. `/v1/verify`, `/v1/liveness`, `/v1/score`,
//! the evaluation lab and later callers (identify, challenge sessions) all decide through it, so
//! the rule exists once. Pure: no I/O, every rule unit-tested here.

use facekey_settings::defaults;
use serde::Serialize;

use crate::decision::Decision;
use crate::fusion::{Forward, FusionMlp, INPUTS};
use crate::vision::second_opinion::MatchModels;
use crate::vision::{LivenessResult, MatchScore};

/// Who decides accept/reject in verification.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DecisionPolicy {
    /// Fused probability, match and liveness must all accept.
    Strict,
    /// The fused probability alone (failed checks are still reported), except that liveness
    /// which could not run (`unknown`) always rejects: a failure never counts as live.
    Fusion,
}

/// The thresholds and policy of verification decisions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VerifierConfig {
    /// Minimum match similarity in `[0, 1]` (0.5 is dlib's distance 0.6).
    pub match_threshold: f64,
    /// Minimum liveness score in `[0, 1]` to call a face live.
    pub liveness_threshold: f64,
    /// Whether passive liveness is part of the decision. `false` is the explicitly insecure
    /// mode in which every face counts as live (for trusted capture only).
    pub check_liveness: bool,
    /// `strict` or `fusion`.
    pub policy: DecisionPolicy,
    /// Threshold on the fused probability; `None` takes the weights' recommended threshold,
    /// else [`defaults::THRESHOLD`].
    pub threshold: Option<f64>,
}

impl VerifierConfig {
    /// `accept` when a similarity reaches the match threshold.
    pub fn match_decision(&self, similarity: f64) -> Decision {
        Decision::at_least(similarity, self.match_threshold)
    }

    /// The match verdict of a distance/similarity pair measured against `templates` templates.
    pub fn judge_match(&self, distance: f64, similarity: f64, templates: usize) -> MatchVerdict {
        MatchVerdict {
            distance,
            similarity,
            threshold: self.match_threshold,
            decision: self.match_decision(similarity),
            templates,
            models: MatchModels::Dlib,
        }
    }

    /// The liveness verdict of a combined score; `failure` says why no score was measured.
    pub fn judge_liveness_score(
        &self,
        score: Option<f64>,
        failure: Option<&str>,
    ) -> LivenessVerdict {
        let threshold = self.liveness_threshold;
        if !self.check_liveness {
            return LivenessVerdict {
                state: LivenessState::Off,
                score: None,
                threshold,
                reason: None,
            };
        }
        match score.filter(|s| s.is_finite()) {
            Some(s) => LivenessVerdict {
                state: if Decision::at_least(s, threshold) == Decision::Accept {
                    LivenessState::Live
                } else {
                    LivenessState::Spoof
                },
                score: Some(s),
                threshold,
                reason: None,
            },
            None => LivenessVerdict {
                state: LivenessState::Unknown,
                score: None,
                threshold,
                reason: Some(
                    failure
                        .unwrap_or("no liveness score was measured for this face")
                        .to_owned(),
                ),
            },
        }
    }
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            match_threshold: defaults::MATCH_THRESHOLD,
            liveness_threshold: defaults::LIVENESS_THRESHOLD,
            check_liveness: true,
            policy: DecisionPolicy::Strict,
            threshold: None,
        }
    }
}

/// The liveness outcome of one face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LivenessState {
    /// Liveness ran and the score reached the threshold.
    Live,
    /// Liveness ran and the score fell below the threshold: a presentation attack.
    Spoof,
    /// Liveness is configured on but could not run on this face (crop impossible, model
    /// error). Never counts as live.
    Unknown,
    /// Liveness is configured off (insecure mode): the face counts as live.
    Off,
}

impl LivenessState {
    /// The lowercase label used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Spoof => "spoof",
            Self::Unknown => "unknown",
            Self::Off => "off",
        }
    }
}

/// The verifier's judgement of a face's liveness.
#[derive(Debug, Clone, PartialEq)]
pub struct LivenessVerdict {
    /// Live, spoof, unknown or off.
    pub state: LivenessState,
    /// The combined live score, when liveness ran.
    pub score: Option<f64>,
    /// The threshold applied.
    pub threshold: f64,
    /// Why liveness could not run (state `unknown`), or why a passed session counts as a spoof
    /// (`replayed_session`).
    pub reason: Option<String>,
}

impl LivenessVerdict {
    /// `accept` for live faces and in the insecure off mode; `reject` for spoofs and unknowns.
    pub fn decision(&self) -> Decision {
        match self.state {
            LivenessState::Live | LivenessState::Off => Decision::Accept,
            LivenessState::Spoof | LivenessState::Unknown => Decision::Reject,
        }
    }

    /// The fusion input `x2`: the score when measured, 0 when unknown (never live), 1 when
    /// liveness is off.
    pub fn feature(&self) -> f64 {
        match self.state {
            LivenessState::Live | LivenessState::Spoof => self.score.unwrap_or(0.0),
            LivenessState::Unknown => 0.0,
            LivenessState::Off => 1.0,
        }
    }
}

/// The verifier's judgement of a probe against a subject's templates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchVerdict {
    /// Euclidean distance to the closest template.
    pub distance: f64,
    /// Similarity in `[0, 1]` of that distance.
    pub similarity: f64,
    /// Minimum similarity to match.
    pub threshold: f64,
    /// `accept` when `similarity >= threshold`.
    pub decision: Decision,
    /// Templates compared.
    pub templates: usize,
    /// The embedding models the similarity comes from: `dlib+faceres` (fused) or `dlib` alone
    /// (the subject's closest template was enrolled before faceres-deep, or the server matches
    /// on dlib alone).
    pub models: MatchModels,
}

/// A check that failed, as reported in `reasons`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The face did not match the subject.
    NoMatch,
    /// The liveness check called the face a presentation attack.
    Spoof,
    /// Liveness is on but could not run on this face.
    LivenessUnknown,
    /// The fused probability fell below the threshold.
    LowProbability,
    /// The liveness session repeated frames of an earlier session accepted for the subject: a
    /// replayed recording (refused whatever the fusion said).
    ReplayedSession,
}

impl Reason {
    /// The snake_case label used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoMatch => "no_match",
            Self::Spoof => "spoof",
            Self::LivenessUnknown => "liveness_unknown",
            Self::LowProbability => "low_probability",
            Self::ReplayedSession => "replayed_session",
        }
    }
}

/// The outcome of one verification.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// The fusion inputs `[match_similarity, liveness, quality]`.
    pub features: [f64; INPUTS],
    /// The fusion forward pass (probability and layers).
    pub forward: Forward,
    /// The final decision under the policy.
    pub decision: Decision,
    /// Every check that failed, in the order match, liveness, probability.
    pub reasons: Vec<Reason>,
}

impl Verification {
    /// Rejects whatever the fusion decided, for `reason` (a check outside the fusion failed).
    pub fn refuse(&mut self, reason: Reason) {
        self.decision = Decision::Reject;
        if !self.reasons.contains(&reason) {
            self.reasons.push(reason);
        }
    }
}

/// The scores that decide a match, in order: the fused ones (dlib + faceres-deep) when any
/// template holds both embeddings, else all (dlib alone).
fn best_class(scores: &[MatchScore]) -> impl Iterator<Item = MatchScore> + '_ {
    let fused = scores.iter().any(|s| s.models == MatchModels::DlibFaceres);
    scores
        .iter()
        .copied()
        .filter(move |s| !fused || s.models == MatchModels::DlibFaceres)
}

/// The closest of `scores`: the highest similarity (for dlib alone, the smallest distance;
/// fused scores compare on the same 0.5-boundary scale); a NaN never wins. `None` when empty.
pub fn closest(scores: impl IntoIterator<Item = MatchScore>) -> Option<MatchScore> {
    scores.into_iter().reduce(|a, b| {
        let better = b.similarity > a.similarity
            || (b.similarity == a.similarity && b.distance < a.distance);
        if better || a.similarity.is_nan() || (a.distance.is_nan() && !b.distance.is_nan()) {
            b
        } else {
            a
        }
    })
}

/// Thresholds, policy and fusion weights: decides every verification.
#[derive(Debug, Clone)]
pub struct Verifier {
    config: VerifierConfig,
    fusion: FusionMlp,
    threshold: f64,
}

impl Verifier {
    /// A verifier deciding with `config` and the fusion MLP `fusion`.
    pub fn new(fusion: FusionMlp, config: VerifierConfig) -> Self {
        let threshold = config
            .threshold
            .or(fusion.recommended_threshold())
            .unwrap_or(defaults::THRESHOLD);
        Self {
            config,
            fusion,
            threshold,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// The same weights and thresholds deciding under another policy (the evaluation reports
    /// both).
    pub fn with_policy(&self, policy: DecisionPolicy) -> Self {
        Self {
            config: VerifierConfig {
                policy,
                ..self.config
            },
            ..self.clone()
        }
    }

    /// The fusion MLP.
    pub fn fusion(&self) -> &FusionMlp {
        &self.fusion
    }

    /// The threshold on the fused probability in use.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// `accept` when the fused probability reaches the threshold (`/v1/score`).
    pub fn fused_decision(&self, probability: f64) -> Decision {
        Decision::at_least(probability, self.threshold)
    }

    /// `accept` when a similarity reaches the match threshold.
    pub fn match_decision(&self, similarity: f64) -> Decision {
        self.config.match_decision(similarity)
    }

    /// The match verdict of a distance/similarity pair measured against `templates` templates.
    pub fn judge_match(&self, distance: f64, similarity: f64, templates: usize) -> MatchVerdict {
        self.config.judge_match(distance, similarity, templates)
    }

    /// The match verdict of the closest of `scores` (one per template); `None` without any.
    /// When some scores are fused (dlib + faceres-deep), only those decide: once a subject
    /// holds a face with both embeddings, its dlib-only faces (enrolled before) can no longer
    /// let dlib alone accept a look-alike.
    pub fn judge_templates(&self, scores: &[MatchScore]) -> Option<MatchVerdict> {
        let best = closest(best_class(scores))?;
        Some(self.verdict_of(best, scores.len()))
    }

    /// The match verdict of one template's score, `templates` compared in all.
    fn verdict_of(&self, score: MatchScore, templates: usize) -> MatchVerdict {
        MatchVerdict {
            models: score.models,
            ..self.judge_match(
                f64::from(score.distance),
                f64::from(score.similarity),
                templates,
            )
        }
    }

    /// The match verdict against the first of `scores` (one per template, oldest first) of the
    /// best model class (fused when any is): what an enrolment by a key without `admin` must
    /// match. Against the closest face only, a chain of faces each close to the one before
    /// could walk a subject toward another person; the first face anchors who it is.
    pub fn judge_first_template(&self, scores: &[MatchScore]) -> Option<MatchVerdict> {
        let first = best_class(scores).next()?;
        Some(self.verdict_of(first, scores.len()))
    }

    /// The typical match verdict of a session's `frames` (one score per template each): the
    /// median of their verdicts, the lower middle (less similar) of an even count; `None`
    /// without frames.
    pub fn judge_typical(&self, frames: &[Vec<MatchScore>]) -> Option<MatchVerdict> {
        let mut verdicts: Vec<MatchVerdict> = frames
            .iter()
            .filter_map(|w| self.judge_templates(w))
            .collect();
        verdicts.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        verdicts.get(verdicts.len() / 2).copied()
    }

    /// The match verdict of a liveness session: the worst (least similar) of its probe's
    /// (`probe`: one score per template), its witnesses' typical one and its action frames'
    /// typical one, each the median of their verdicts (the lower middle of an even count). A
    /// probe the client chose (a sharp frontal frame, or an image sent beside the session, each
    /// only held to the session's same-face bound) therefore cannot carry a session whose
    /// frames show someone else, and the frames that completed the actions, the ones the
    /// performer made, cannot be outvoted by photos of the subject sent between them: a
    /// look-alike performing between the subject's photos matches as the performer. Their
    /// median rather than their worst, so that one action frame a model reads badly (a turned
    /// head) does not sink a genuine three-action session. Without witnesses or action frames
    /// (a session passed before they were kept) the others decide.
    pub fn judge_session(
        &self,
        probe: &[MatchScore],
        witnesses: &[Vec<MatchScore>],
        action_frames: &[Vec<MatchScore>],
    ) -> Option<MatchVerdict> {
        let probe = self.judge_templates(probe)?;
        Some(
            [
                self.judge_typical(witnesses),
                self.judge_typical(action_frames),
            ]
            .into_iter()
            .flatten()
            .fold(probe, |worst, v| {
                if v.similarity < worst.similarity {
                    v
                } else {
                    worst
                }
            }),
        )
    }

    /// The liveness verdict of a combined score; `failure` says why no score was measured.
    pub fn judge_liveness_score(
        &self,
        score: Option<f64>,
        failure: Option<&str>,
    ) -> LivenessVerdict {
        self.config.judge_liveness_score(score, failure)
    }

    /// The liveness verdict of what vision measured (`None`: liveness did not run).
    pub fn judge_liveness(&self, measured: Option<&LivenessResult>) -> LivenessVerdict {
        self.judge_liveness_score(
            measured.and_then(|m| m.score).map(f64::from),
            measured.and_then(|m| m.failure.as_deref()),
        )
    }

    /// The final decision: fuse `[similarity, liveness, quality]` and apply the policy.
    /// `strict` accepts only when the probability reaches the threshold and the match and
    /// liveness checks accept; `fusion` lets the probability alone decide (failed checks are
    /// still reported) unless liveness is `unknown`: a model that failed, timed out or found no
    /// crop rejects under every policy, since its fusion input of 0 can be outweighed by a high
    /// similarity (the trained weights give `[1, 0, 1]` a probability of 0.96).
    pub fn decide(
        &self,
        matched: &MatchVerdict,
        liveness: &LivenessVerdict,
        quality: f64,
    ) -> Verification {
        let features = [matched.similarity, liveness.feature(), quality];
        let forward = self.fusion.forward(&features);
        let mut reasons = Vec::new();
        if matched.decision == Decision::Reject {
            reasons.push(Reason::NoMatch);
        }
        match liveness.state {
            LivenessState::Spoof => reasons.push(Reason::Spoof),
            LivenessState::Unknown => reasons.push(Reason::LivenessUnknown),
            LivenessState::Live | LivenessState::Off => {}
        }
        // A non-finite feature (a NaN the checks upstream let through) decides nothing: ReLU
        // maps NaN to 0, so the network would answer as for a zero input, which some weights
        // accept.
        let fused = if features.iter().all(|v| v.is_finite()) {
            self.fused_decision(forward.probability)
        } else {
            Decision::Reject
        };
        if fused == Decision::Reject {
            reasons.push(Reason::LowProbability);
        }
        let decision = match self.config.policy {
            DecisionPolicy::Fusion if liveness.state == LivenessState::Unknown => Decision::Reject,
            DecisionPolicy::Fusion => fused,
            DecisionPolicy::Strict if reasons.is_empty() => Decision::Accept,
            DecisionPolicy::Strict => Decision::Reject,
        };
        Verification {
            features,
            forward,
            decision,
            reasons,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn verifier(policy: DecisionPolicy, check_liveness: bool) -> Verifier {
        Verifier::new(
            FusionMlp::reference().unwrap(),
            VerifierConfig {
                policy,
                check_liveness,
                ..VerifierConfig::default()
            },
        )
    }

    fn score(d: f32) -> MatchScore {
        MatchScore {
            distance: d,
            similarity: 1.0 - d,
            models: MatchModels::Dlib,
        }
    }

    #[test]
    fn defaults_come_from_the_settings_catalogue() {
        let v = verifier(DecisionPolicy::Strict, true);
        assert_eq!(v.config().match_threshold, defaults::MATCH_THRESHOLD);
        assert_eq!(v.config().liveness_threshold, defaults::LIVENESS_THRESHOLD);
        // Without an explicit threshold: the weights' recommendation, else the catalogue's.
        let reference = FusionMlp::reference().unwrap();
        assert_eq!(
            v.threshold(),
            reference
                .recommended_threshold()
                .unwrap_or(defaults::THRESHOLD)
        );
        let explicit = Verifier::new(
            FusionMlp::reference().unwrap(),
            VerifierConfig {
                threshold: Some(0.7),
                ..VerifierConfig::default()
            },
        );
        assert_eq!(explicit.threshold(), 0.7);
    }

    #[test]
    fn liveness_has_four_states() {
        let v = verifier(DecisionPolicy::Strict, true);
        let live = v.judge_liveness_score(Some(0.9), None);
        assert_eq!(
            (live.state, live.decision()),
            (LivenessState::Live, Decision::Accept)
        );
        assert_eq!(live.feature(), 0.9);
        let spoof = v.judge_liveness_score(Some(0.1), None);
        assert_eq!(
            (spoof.state, spoof.decision()),
            (LivenessState::Spoof, Decision::Reject)
        );
        assert_eq!(spoof.feature(), 0.1);
        let unknown = v.judge_liveness_score(None, Some("minifas: model error"));
        assert_eq!(unknown.state, LivenessState::Unknown);
        assert_eq!(unknown.decision(), Decision::Reject);
        assert_eq!(
            unknown.feature(),
            0.0,
            "unknown never feeds the MLP as live"
        );
        assert_eq!(unknown.reason.as_deref(), Some("minifas: model error"));
        // A NaN score is no measurement.
        assert_eq!(
            v.judge_liveness_score(Some(f64::NAN), None).state,
            LivenessState::Unknown
        );
        let off = verifier(DecisionPolicy::Strict, false).judge_liveness_score(Some(0.1), None);
        assert_eq!(
            (off.state, off.decision()),
            (LivenessState::Off, Decision::Accept)
        );
        assert_eq!(off.feature(), 1.0);
        // The threshold itself is live.
        assert_eq!(
            v.judge_liveness_score(Some(defaults::LIVENESS_THRESHOLD), None)
                .state,
            LivenessState::Live
        );
    }

    #[test]
    fn strict_needs_every_check() {
        let v = verifier(DecisionPolicy::Strict, true);
        let good = v.judge_match(0.1, 0.99, 1);
        let live = v.judge_liveness_score(Some(0.99), None);
        let ok = v.decide(&good, &live, 1.0);
        assert_eq!(
            (ok.decision, ok.reasons.clone()),
            (Decision::Accept, vec![])
        );
        assert_eq!(ok.features, [0.99, 0.99, 1.0]);

        let spoof = v.decide(&good, &v.judge_liveness_score(Some(0.1), None), 1.0);
        assert_eq!(spoof.decision, Decision::Reject);
        assert!(spoof.reasons.contains(&Reason::Spoof));

        let unknown = v.decide(&good, &v.judge_liveness_score(None, None), 1.0);
        assert_eq!(unknown.decision, Decision::Reject);
        assert!(unknown.reasons.contains(&Reason::LivenessUnknown));
        assert_eq!(unknown.features[1], 0.0);

        // Every check failing, the probability under a demanding threshold included.
        let demanding = Verifier::new(
            FusionMlp::reference().unwrap(),
            VerifierConfig {
                threshold: Some(0.999),
                ..VerifierConfig::default()
            },
        );
        let bad = demanding.judge_match(1.0, 0.02, 1);
        let none = demanding.decide(&bad, &demanding.judge_liveness_score(Some(0.0), None), 0.0);
        assert_eq!(
            none.reasons,
            vec![Reason::NoMatch, Reason::Spoof, Reason::LowProbability]
        );
    }

    #[test]
    fn a_refusal_rejects_what_the_fusion_accepted() {
        let v = verifier(DecisionPolicy::Fusion, true);
        let mut out = v.decide(
            &v.judge_match(0.1, 1.0, 1),
            &v.judge_liveness_score(Some(0.99), None),
            1.0,
        );
        assert_eq!((out.decision, out.reasons.len()), (Decision::Accept, 0));
        out.refuse(Reason::ReplayedSession);
        out.refuse(Reason::ReplayedSession);
        assert_eq!(
            (out.decision, out.reasons),
            (Decision::Reject, vec![Reason::ReplayedSession])
        );
    }

    #[test]
    fn fusion_policy_follows_the_probability() {
        let v = verifier(DecisionPolicy::Fusion, true);
        let good = v.judge_match(0.1, 1.0, 1);
        // Liveness 0.49 is a spoof, and reported as one, yet the fusion policy lets the
        // probability alone decide.
        let spoofish = v.judge_liveness_score(Some(0.49), None);
        let out = v.decide(&good, &spoofish, -1.0);
        assert_eq!(out.decision, v.fused_decision(out.forward.probability));
        assert!(out.reasons.contains(&Reason::Spoof));
        assert_eq!(out.decision, Decision::Accept);
        let strict = v
            .with_policy(DecisionPolicy::Strict)
            .decide(&good, &spoofish, -1.0);
        assert_eq!(strict.decision, Decision::Reject);
        assert_eq!(strict.forward, out.forward);
    }

    #[test]
    fn unknown_liveness_rejects_under_the_fusion_policy_too() {
        // The trained weights give a perfect match and quality with liveness 0 a probability
        // above their threshold: the fusion policy alone would accept a face whose liveness
        // model failed.
        let v = Verifier::new(
            FusionMlp::built_in("trained").unwrap().unwrap(),
            VerifierConfig {
                policy: DecisionPolicy::Fusion,
                ..VerifierConfig::default()
            },
        );
        let good = v.judge_match(0.0, 1.0, 1);
        let unknown = v.judge_liveness_score(None, Some("minifas: model error"));
        let out = v.decide(&good, &unknown, 1.0);
        assert_eq!(
            v.fused_decision(out.forward.probability),
            Decision::Accept,
            "the probability alone accepts ({})",
            out.forward.probability
        );
        assert_eq!(out.decision, Decision::Reject);
        assert!(out.reasons.contains(&Reason::LivenessUnknown));
        // The same features from a measured score of 0: the veto is the failure's, not the
        // features'.
        let measured = v.decide(&good, &v.judge_liveness_score(Some(0.0), None), 1.0);
        assert_eq!(measured.forward, out.forward);
    }

    #[test]
    fn worked_example_through_the_verifier() {
        let v = verifier(DecisionPolicy::Fusion, true);
        let m = v.judge_match(0.0, 1.0, 1);
        let l = v.judge_liveness_score(Some(0.5), None);
        let out = v.decide(&m, &l, -1.0);
        assert_eq!(out.features, [1.0, 0.5, -1.0]);
        assert!((out.forward.probability - 0.768_524_783_499_017_8).abs() < 1e-15);
    }

    #[test]
    fn an_enrolment_is_judged_against_the_first_face_of_the_best_model() {
        let v = verifier(DecisionPolicy::Strict, true);
        // Closest 0.1 (the last face of a chain), the first 0.8: rejected.
        let m = v
            .judge_first_template(&[score(0.8), score(0.4), score(0.1)])
            .unwrap();
        assert_eq!(m.decision, Decision::Reject);
        assert_eq!(m.templates, 3);
        // A dlib-only face enrolled before the fused ones does not anchor them.
        let fused = |d: f32| MatchScore {
            models: MatchModels::DlibFaceres,
            ..score(d)
        };
        let m = v
            .judge_first_template(&[score(0.9), fused(0.2), fused(0.7)])
            .unwrap();
        assert_eq!(
            (m.models, m.decision),
            (MatchModels::DlibFaceres, Decision::Accept)
        );
        assert!(v.judge_first_template(&[]).is_none());
    }

    #[test]
    fn a_session_matches_as_its_typical_frame_unless_its_probe_is_worse() {
        let v = verifier(DecisionPolicy::Strict, true);
        let frames = |ds: &[f32]| ds.iter().map(|&d| vec![score(d)]).collect::<Vec<_>>();
        // A morph as the probe (0.1 from the subject) over frames of someone else: the
        // median frame (0.7, similarity 0.3) decides, and rejects.
        let m = v
            .judge_session(&[score(0.1)], &frames(&[0.9, 0.7, 0.1, 0.8, 0.65]), &[])
            .unwrap();
        assert!((m.distance - 0.7).abs() < 1e-6, "{m:?}");
        // One odd frame among the subject's own does not move the median.
        let m = v
            .judge_session(&[score(0.2)], &frames(&[0.25, 0.9, 0.3, 0.2, 0.22]), &[])
            .unwrap();
        assert!((m.distance - 0.25).abs() < 1e-6, "{m:?}");
        // Even count: the lower middle (the less similar of the two middle frames).
        let m = v
            .judge_session(&[score(0.0)], &frames(&[0.1, 0.2, 0.3, 0.4]), &[])
            .unwrap();
        assert!((m.distance - 0.3).abs() < 1e-6, "{m:?}");
        // A probe worse than its frames decides; no witnesses: the probe alone.
        let m = v
            .judge_session(&[score(0.5)], &frames(&[0.1, 0.1, 0.1]), &[])
            .unwrap();
        assert!((m.distance - 0.5).abs() < 1e-6, "{m:?}");
        let m = v.judge_session(&[score(0.3)], &[], &[]).unwrap();
        assert!((m.distance - 0.3).abs() < 1e-6, "{m:?}");
        assert!(v.judge_session(&[], &frames(&[0.1]), &[]).is_none());
    }

    #[test]
    fn the_frames_that_performed_the_actions_match_too() {
        let v = verifier(DecisionPolicy::Strict, true);
        let frames = |ds: &[f32]| ds.iter().map(|&d| vec![score(d)]).collect::<Vec<_>>();
        // The subject's photos as probe and most frames, a look-alike's live actions between
        // them: the action frames' typical one (0.7) decides, and rejects.
        let m = v
            .judge_session(
                &[score(0.1)],
                &frames(&[0.1, 0.15, 0.7, 0.12, 0.1]),
                &frames(&[0.7, 0.72, 0.68]),
            )
            .unwrap();
        assert!((m.distance - 0.7).abs() < 1e-6, "{m:?}");
        assert_eq!(m.decision, Decision::Reject);
        // One turned action frame read badly among three does not sink a genuine session.
        let m = v
            .judge_session(
                &[score(0.2)],
                &frames(&[0.2, 0.25]),
                &frames(&[0.3, 0.75, 0.28]),
            )
            .unwrap();
        assert!((m.distance - 0.3).abs() < 1e-6, "{m:?}");
        // Two action frames: the less similar of them.
        let m = v
            .judge_session(&[score(0.1)], &[], &frames(&[0.2, 0.4]))
            .unwrap();
        assert!((m.distance - 0.4).abs() < 1e-6, "{m:?}");
    }

    #[test]
    fn fused_scores_outrank_dlib_only_ones() {
        let v = verifier(DecisionPolicy::Strict, true);
        let legacy = MatchScore {
            distance: 0.1,
            similarity: 0.99,
            models: MatchModels::Dlib,
        };
        let fused = MatchScore {
            distance: 0.58,
            similarity: 0.2,
            models: MatchModels::DlibFaceres,
        };
        let m = v.judge_templates(&[legacy, fused]).unwrap();
        assert_eq!(m.models, MatchModels::DlibFaceres);
        assert_eq!(m.decision, Decision::Reject);
        assert_eq!(m.templates, 2);
        let m = v.judge_templates(&[legacy]).unwrap();
        assert_eq!(
            (m.models, m.decision),
            (MatchModels::Dlib, Decision::Accept)
        );
    }

    /// A NaN feature rejects under both policies, even where the weights' answer to the zero
    /// input ReLU turns it into reaches the threshold (here 0).
    #[test]
    fn a_non_finite_feature_never_accepts() {
        for policy in [DecisionPolicy::Fusion, DecisionPolicy::Strict] {
            let v = Verifier::new(
                FusionMlp::reference().unwrap(),
                VerifierConfig {
                    policy,
                    check_liveness: false,
                    threshold: Some(0.0),
                    ..VerifierConfig::default()
                },
            );
            let mut matched = v.judge_match(0.2, 0.8, 1);
            let live = v.judge_liveness_score(Some(0.9), None);
            assert_eq!(v.decide(&matched, &live, 1.0).decision, Decision::Accept);
            matched.similarity = f64::NAN;
            matched.decision = Decision::Accept;
            let out = v.decide(&matched, &live, 1.0);
            assert_eq!(out.decision, Decision::Reject, "{policy:?}");
            assert!(out.reasons.contains(&Reason::LowProbability));
            assert_eq!(
                v.decide(&v.judge_match(0.2, 0.8, 1), &live, f64::NAN)
                    .decision,
                Decision::Reject,
                "{policy:?}: NaN quality"
            );
        }
    }

    #[test]
    fn closest_template_wins_and_nan_never_does() {
        assert_eq!(
            closest([score(0.7), score(0.3), score(0.5)])
                .unwrap()
                .distance,
            0.3
        );
        assert_eq!(
            closest([score(0.7), score(f32::NAN)]).unwrap().distance,
            0.7
        );
        assert_eq!(
            closest([score(f32::NAN), score(0.7)]).unwrap().distance,
            0.7
        );
        assert!(closest([]).is_none());
        let v = verifier(DecisionPolicy::Strict, true);
        let m = v.judge_templates(&[score(0.8), score(0.2)]).unwrap();
        assert_eq!(m.templates, 2);
        assert!((m.similarity - 0.8).abs() < 1e-6);
        assert_eq!(m.decision, Decision::Accept);
        assert!(v.judge_templates(&[]).is_none());
    }
}
