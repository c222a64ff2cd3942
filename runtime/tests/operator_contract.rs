//! The contract between the operator and the runtime: every `FACEKEY_*` variable the operator
//! writes into a runtime pod is one the runtime reads, and every value it writes is one the
//! runtime's flag parser accepts and applies, and with which the runtime's start-up checks pass
//! (nothing unsafe, nothing contradictory), for the Deployment's pods and the injected sidecar.
//! Renaming a runtime setting, changing the values a flag accepts, or a start-up check the
//! operator's output would fail, fails here rather than in a cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use facekey_crds::FaceKeyDeploymentSpec;
use facekey_operator::desired::{config_data, runtime_env_for, runtime_env_names, sidecar_env};
use facekey_runtime::config::Config;

/// Specs that make the operator write every setting it can.
fn specs() -> Vec<FaceKeyDeploymentSpec> {
    let full = serde_json::json!({
        "image": "registry.example/facekey/runtime:1.0",
        "models": {
            "thresholds": { "auth": 0.77, "spoof": 0.42, "match": 0.61 },
            "scoreWeights": { "inline": "{\"not\":\"checked here\"}" },
            "spoof": { "configMap": "liveness-models" }
        },
        "alerting": { "email": {
            "to": "security@example.com",
            "from": "facekey@example.com",
            "smarthost": "smtp.example.com:465",
            "authUsername": "mailer",
            "authSecretRef": { "name": "smtp", "key": "password" },
            "caSecretRef": { "name": "corp-ca", "key": "ca.crt" }
        }},
        "ui": { "enabled": false }
    });
    let variants = [
        full.clone(),
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "models": {
                "scoreWeights": { "configMapKeyRef": { "name": "w", "key": "weights.json" } },
                "spoof": { "pvc": "liveness-models" }
            },
            // A trusted relay without TLS or AUTH.
            "alerting": { "email": {
                "to": "a@example.com", "from": "f@example.com", "smarthost": "smtp:25",
                "requireTls": false
            }}
        }),
        serde_json::json!({ "image": "registry.example/facekey/runtime:1.0" }),
        // Credentials over STARTTLS, a sidecar with resources of its own.
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "resources": { "limits": { "cpu": "4", "memory": "2Gi" } },
            "alerting": { "email": {
                "to": "a@example.com", "from": "f@example.com", "smarthost": "smtp:587",
                "authSecretRef": { "name": "smtp", "key": "password" }
            }},
            "sidecar": { "resources": { "requests": { "cpu": "250m", "memory": "384Mi" } } }
        }),
        // PostgreSQL: the URL and the (generated) template key as mounted Secret files.
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "autoscaling": { "minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 60 },
            "store": { "postgres": {
                "urlSecretRef": { "name": "db", "key": "url" },
                "caSecretRef": { "name": "db-ca", "key": "ca.pem" }
            } }
        }),
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "store": { "postgres": { "cloudNativePG": { "instances": 2 } } }
        }),
        // Embedded on a volume, with a key of the user's (without one the runtime makes its own).
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "store": {
                "embedded": { "pvc": { "size": "2Gi" } },
                "templateKeySecretRef": { "name": "keys", "key": "current" }
            }
        }),
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "store": { "embedded": {}, "maxSubjects": 20000, "maxTemplates": 40000, "maxFacesPerSubject": 3, "maxSubjectsPerKey": 500, "maxTemplatesPerKey": 700 }
        }),
        // Every verification field, and every setting `spec.settings` may pass through.
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "models": { "scoreWeights": { "configMapKeyRef": { "name": "w", "key": "weights.json" } } },
            "verification": {
                "requireSession": true,
                "decisionPolicy": "fusion",
                "sessions": { "ttlSeconds": 30, "maxFrames": 90, "maxOpen": 100, "maxOpenPerKey": 10 },
                "lockout": { "attempts": 3, "windowSeconds": 600, "durationSeconds": 1200,
                             "maxDurationSeconds": 7200 },
                "enrolment": { "liveness": false, "minQuality": 0.55 }
            },
            "settings": settings_values()
        }),
        // Lockout off.
        serde_json::json!({
            "image": "registry.example/facekey/runtime:1.0",
            "verification": { "requireSession": false, "lockout": { "attempts": 0 },
                              "enrolment": { "liveness": true } }
        }),
    ];
    variants
        .into_iter()
        .map(|v| {
            let spec = serde_json::from_value(v).unwrap();
            // Only specs the operator accepts: the others never reach a pod.
            facekey_operator::validate::validate(&spec).unwrap();
            spec
        })
        .collect()
}

/// A value the runtime accepts for each name `spec.settings` may set, none its default.
fn settings_values() -> serde_json::Value {
    let values = [
        ("FACEKEY_MAX_BODY_BYTES", "4194304"),
        ("FACEKEY_MAX_BODY_MEMORY_BYTES", "67108864"),
        ("FACEKEY_MAX_BODY_MEMORY_PER_KEY_SHARE", "0.5"),
        ("FACEKEY_MIN_BODY_BYTES_PER_SEC", "8192"),
        ("FACEKEY_BODY_RATE_GRACE_SECS", "8"),
        ("FACEKEY_MAX_IMAGE_BYTES", "3145728"),
        ("FACEKEY_MAX_IMAGE_PIXELS", "12000000"),
        ("FACEKEY_MIN_FACE_SIZE", "40"),
        ("FACEKEY_MULTI_FACE", "reject"),
        ("FACEKEY_MAX_FACES_PER_IMAGE", "4"),
        ("FACEKEY_LIVENESS", "both"),
        ("FACEKEY_LIVENESS_COMBINE", "min"),
        ("FACEKEY_MATCH_MODELS", "dlib"),
        ("FACEKEY_PASSIVE_LIVENESS_MODELS", "fr_liveness"),
        ("FACEKEY_SESSION_PASSIVE_MIN", "0.6"),
        ("FACEKEY_SESSION_REPLAY_WINDOW_SECS", "3600"),
        ("FACEKEY_MAX_BATCH", "64"),
        ("FACEKEY_MAX_QUEUE", "6"),
        ("FACEKEY_MAX_QUEUE_WAIT_MS", "400"),
        ("FACEKEY_QUEUE_MAX_LOAD", "1.5"),
        ("FACEKEY_REQUEST_TIMEOUT_SECS", "20"),
        ("FACEKEY_MAX_CONNECTIONS", "512"),
        ("FACEKEY_HEADER_READ_TIMEOUT_SECS", "5"),
        ("FACEKEY_MAX_CONNECTION_AGE_SECS", "300"),
        ("FACEKEY_ALERT_MIN_INTERVAL_SECS", "120"),
        (
            "FACEKEY_CORS_ORIGINS",
            "https://a.example,https://b.example",
        ),
        ("FACEKEY_LOG", "info,facekey_runtime=debug"),
        ("FACEKEY_ALLOW_INSECURE", "true"),
    ];
    let listed: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        listed,
        facekey_crds::RUNTIME_SETTINGS,
        "a value for every name spec.settings accepts"
    );
    serde_json::Value::Object(
        values
            .iter()
            .map(|(n, v)| (facekey_crds::settings_field(n), serde_json::json!(v)))
            .collect(),
    )
}

/// What `spec.verification` and `store.maxFacesPerSubject` / `maxSubjectsPerKey` /
/// `maxTemplatesPerKey` say is what `config` applies.
fn applies_verification(spec: &FaceKeyDeploymentSpec, config: &Config) {
    if let Some(n) = spec.store.as_ref().and_then(|s| s.max_faces_per_subject) {
        assert_eq!(config.max_faces_per_subject, n as usize);
    }
    if let Some(n) = spec.store.as_ref().and_then(|s| s.max_templates_per_key) {
        assert_eq!(config.max_templates_per_key, n as usize);
    }
    if let Some(n) = spec.store.as_ref().and_then(|s| s.max_subjects_per_key) {
        assert_eq!(config.max_subjects_per_key, n as usize);
    }
    let Some(v) = &spec.verification else {
        return;
    };
    let switch = |on: bool| if on { "On" } else { "Off" };
    if let Some(on) = v.require_session {
        assert_eq!(format!("{:?}", config.require_session), switch(on));
    }
    if let Some(policy) = v.decision_policy {
        assert_eq!(
            format!("{:?}", config.decision_policy).to_lowercase(),
            policy.as_str()
        );
    }
    if let Some(s) = &v.sessions {
        let n = |v: Option<u32>, got: u64| {
            if let Some(v) = v {
                assert_eq!(u64::from(v), got);
            }
        };
        n(s.ttl_seconds, config.session_ttl_secs);
        n(s.max_frames, config.session_max_frames as u64);
        n(s.max_open, config.max_sessions as u64);
        n(s.max_open_per_key, config.max_sessions_per_key as u64);
    }
    if let Some(l) = &v.lockout {
        if let Some(a) = l.attempts {
            assert_eq!(config.lockout_attempts, a);
        }
        if let Some(w) = l.window_seconds {
            assert_eq!(config.lockout_window_secs, u64::from(w));
        }
        if let Some(d) = l.duration_seconds {
            assert_eq!(config.lockout_secs, u64::from(d));
        }
        if let Some(m) = l.max_duration_seconds {
            assert_eq!(config.lockout_max_secs, u64::from(m));
        }
    }
    if let Some(e) = &v.enrolment {
        if let Some(on) = e.liveness {
            assert_eq!(format!("{:?}", config.enrol_liveness), switch(on));
        }
        if let Some(q) = e.min_quality {
            assert_eq!(config.enrol_min_quality, q);
        }
    }
}

/// Runtime flags for `vars` (`FACEKEY_*` name and value), as the pod's environment would set
/// them; a variable the pod takes from a Secret gets a stand-in value.
fn args_for(flags: &BTreeMap<String, String>, vars: &[(String, Option<String>)]) -> Vec<String> {
    let mut args = vec!["facekey-runtime".to_owned()];
    for (name, value) in vars.iter().filter(|(k, _)| k.starts_with("FACEKEY_")) {
        // One argument, as a variable is one value (`--x -1` would read `-1` as a flag).
        let value = value.as_deref().unwrap_or("from-secret");
        args.push(format!("--{}={value}", flags[name]));
    }
    args
}

#[test]
fn the_runtime_starts_with_what_the_operator_writes() {
    let flags = flags_by_env();
    for spec in specs() {
        let pod = pod_vars(&spec);
        // The injected sidecar: its own `env`.
        let sidecar: Vec<(String, Option<String>)> =
            sidecar_env(&spec, &spec.sidecar.clone().unwrap_or_default())
                .into_iter()
                .map(|e| (e.name, e.value))
                .collect();
        for (what, vars) in [("pod", pod), ("sidecar", sidecar)] {
            let args = args_for(&flags, &vars);
            let config = Config::try_parse_from(&args).unwrap_or_else(|e| {
                panic!("the runtime rejects the operator's {what} settings {args:?}: {e}")
            });
            assert_eq!(
                config.check(),
                Ok(Vec::new()),
                "the runtime would not start (or only with --allow-insecure) on the {what} \
                 settings {args:?}"
            );
        }
    }
}

/// The runtime variables of the Deployment's pods for `spec`: the ConfigMap's, and those from
/// Secrets (`None`).
fn pod_vars(spec: &FaceKeyDeploymentSpec) -> Vec<(String, Option<String>)> {
    let mut pod: Vec<(String, Option<String>)> = config_data(spec)
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    for name in runtime_env_for(spec) {
        if !pod.iter().any(|(k, _)| *k == name) {
            pod.push((name, None));
        }
    }
    pod
}

/// Values tried for every `spec.settings` name: bounds and one past them, numbers the flag
/// parsers read differently, words, and filters.
const PROBES: &[&str] = &[
    "",
    " 1",
    "1 ",
    "+1",
    "0",
    "1",
    "2",
    "-1",
    "0.5",
    "1.0",
    "1.5",
    "1e3",
    "NaN",
    "inf",
    "-inf",
    "0x10",
    "11.9",
    "12",
    "4096",
    "4097",
    "300",
    "301",
    "86400",
    "86401",
    "1000000",
    "1000001",
    "134217728",
    "134217729",
    "18446744073709551615",
    "18446744073709551616",
    "abc",
    "true",
    "false",
    "TRUE",
    "on",
    "off",
    "*",
    "https://a.example",
    "info",
    "debug,tower_http=info",
    "facekey_runtime=[",
    "a=b=c",
];

/// The operator refuses a `settings` value (`InvalidSpec`, no rollout) exactly when the runtime
/// would refuse to start with it: its flag parser, its log filter, and its start-up check
/// between settings. A value accepted by one and not the other fails here: either pods that
/// never become ready (with the embedded store's `Recreate` strategy, nothing left serving), or
/// a spec refused that would have run.
#[test]
fn the_operator_refuses_exactly_the_setting_values_the_runtime_refuses() {
    let flags = flags_by_env();
    let command = Config::command();
    let mut tried = 0;
    for env_name in facekey_crds::RUNTIME_SETTINGS {
        let field = facekey_crds::settings_field(env_name);
        let arg = command
            .get_arguments()
            .find(|a| a.get_env() == Some(std::ffi::OsStr::new(env_name)))
            .unwrap();
        let mut values: Vec<String> = PROBES.iter().map(|v| (*v).to_owned()).collect();
        values.extend(
            arg.get_possible_values()
                .iter()
                .map(|v| v.get_name().to_owned()),
        );
        if let Some(names) = facekey_settings::values::names(env_name) {
            values.extend(names.iter().map(|v| (*v).to_owned()));
        }
        for value in values {
            let mut settings = serde_json::Map::new();
            settings.insert(field.clone(), value.clone().into());
            if *env_name != "FACEKEY_ALLOW_INSECURE" {
                // Unsafe values (liveness off, CORS *) are the start-up check's other rule.
                settings.insert("allowInsecure".into(), "true".into());
            }
            let spec: FaceKeyDeploymentSpec = serde_json::from_value(serde_json::json!({
                "image": "registry.example/facekey/runtime:1.0",
                "settings": settings,
            }))
            .unwrap();
            let operator = facekey_operator::validate::validate(&spec)
                .map(drop)
                .map_err(|e| format!("{e:?}"));
            let args = args_for(&flags, &pod_vars(&spec));
            let runtime = Config::try_parse_from(&args)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check().map(drop));
            assert_eq!(
                operator.is_ok(),
                runtime.is_ok(),
                "settings.{field} = {value:?}: operator {operator:?}, runtime {runtime:?}"
            );
            tried += 1;
        }
    }
    assert!(tried > 40 * facekey_crds::RUNTIME_SETTINGS.len(), "{tried}");
}

/// The runtime's flags by the environment variable they read.
fn flags_by_env() -> BTreeMap<String, String> {
    Config::command()
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_string_lossy().into_owned();
            Some((env, a.get_long()?.to_owned()))
        })
        .collect()
}

#[test]
fn every_variable_the_operator_can_write_is_read_by_the_runtime() {
    let flags = flags_by_env();
    for name in runtime_env_names() {
        assert!(
            flags.contains_key(name),
            "the operator can write {name}, which the runtime does not read"
        );
    }
    for spec in specs() {
        for name in runtime_env_for(&spec) {
            assert!(flags.contains_key(&name), "{name} is not a runtime setting");
        }
    }
}

#[test]
fn every_value_the_operator_writes_parses_and_applies() {
    let flags = flags_by_env();
    for spec in specs() {
        let data = config_data(&spec);
        let mut args = vec!["facekey-runtime".to_owned()];
        for (name, value) in data.iter().filter(|(k, _)| k.starts_with("FACEKEY_")) {
            args.push(format!("--{}", flags[name]));
            args.push(value.clone());
        }
        let config = Config::try_parse_from(&args).unwrap_or_else(|e| {
            panic!("the runtime rejects the operator's settings {args:?}: {e}")
        });
        // What the operator meant is what the runtime applies.
        if let Some(t) = spec.models.as_ref().and_then(|m| m.thresholds.as_ref()) {
            assert_eq!(config.threshold, t.auth);
            if let Some(spoof) = t.spoof {
                assert_eq!(config.verifier_config().liveness_threshold, spoof);
            }
            if let Some(m) = t.match_ {
                assert_eq!(config.verifier_config().match_threshold, m);
            }
        }
        if let Some(email) = spec.alerting.as_ref().and_then(|a| a.email.as_ref()) {
            // The password comes from the Secret at run time; supply one as the pod would.
            let mut with_password = args.clone();
            if email.auth_secret_ref.is_some() {
                with_password.extend(["--smtp-password".to_owned(), "from-secret".to_owned()]);
            }
            let config = Config::try_parse_from(&with_password).unwrap();
            let settings = config.email_settings().unwrap().unwrap();
            assert_eq!(settings.smarthost, email.smarthost);
            assert_eq!(settings.from, email.from);
            assert_eq!(settings.to.len(), email.to.split(',').count());
        }
        assert_eq!(
            config.ui_enabled,
            spec.ui.as_ref().is_none_or(|u| u.enabled)
        );
        applies_verification(&spec, &config);
        // Each passed-through setting is written unchanged and changes what the runtime parses
        // (no sample value is the default).
        for (field, value) in &spec.settings {
            let name = facekey_crds::setting_env_name(field).unwrap();
            assert_eq!(data.get(name), Some(value), "{name} is passed through");
            let flag = format!("--{}", flags[name]);
            let without: Vec<String> = std::iter::once(args[0].clone())
                .chain(
                    args[1..]
                        .chunks(2)
                        .filter(|pair| pair[0] != flag)
                        .flatten()
                        .cloned(),
                )
                .collect();
            let default = Config::try_parse_from(&without).unwrap();
            assert_ne!(
                format!("{config:?}"),
                format!("{default:?}"),
                "{name}={value} changes nothing in the runtime"
            );
        }
        // The store: PostgreSQL reads the URL from a file and needs a key file; embedded keeps
        // its data dir (the volume), with a key file only when the spec names one.
        let store = spec.store.as_ref();
        let postgres = store.is_some_and(|s| s.postgres.is_some());
        assert_eq!(config.database_url_file.is_some(), postgres, "{args:?}");
        assert!(config.database_url.is_none(), "never the URL itself");
        assert_eq!(
            config.template_key_file.is_some(),
            postgres || store.is_some_and(|s| s.template_key_secret_ref.is_some()),
            "{args:?}"
        );
        assert_eq!(config.data_dir, std::path::Path::new("/var/lib/facekey"));
        if postgres {
            // The file the runtime is told to read is where the pod mounts the Secret key.
            assert_eq!(
                config.database_url_file.as_deref(),
                Some(std::path::Path::new("/etc/facekey/database/url"))
            );
            // A CA (the user's, or a CloudNativePG cluster's own) makes the runtime verify TLS.
            let pg = store.and_then(|s| s.postgres.as_ref()).unwrap();
            assert_eq!(
                config.database_ca_file.is_some(),
                pg.ca_secret_ref.is_some() || pg.cloud_native_pg.is_some(),
                "{args:?}"
            );
        }
    }
}

/// The template key the operator generates (for a PostgreSQL store without a key Secret) is a
/// key file the runtime loads.
#[test]
fn the_operators_generated_template_key_loads_in_the_runtime() {
    let line =
        facekey_operator::apply::new_template_key_line(facekey_operator::apply::GENERATED_KEY_ID)
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join(facekey_operator::desired::TEMPLATE_KEY_FILE);
    std::fs::write(&path, &line).unwrap();
    let keys = facekey_runtime::store::TemplateKeys::from_file(&path).unwrap();
    assert_eq!(keys.current_id(), facekey_operator::apply::GENERATED_KEY_ID);
    assert_ne!(
        facekey_operator::apply::new_template_key_line("k1").unwrap(),
        line,
        "fresh randomness each time"
    );
}

/// The CRD's bounds on the runtime's numbers are the runtime's own: what the schema admits the
/// runtime starts with, and one past it the runtime refuses.
#[test]
fn the_crd_bounds_are_the_runtimes() {
    use facekey_crds::bounds;
    use facekey_runtime::lockout;
    assert_eq!(bounds::LOCKOUT_ATTEMPTS, lockout::MAX_ATTEMPTS);
    assert_eq!(
        u64::from(bounds::LOCKOUT_PERIOD_SECONDS),
        lockout::MAX_PERIOD.as_secs()
    );
    let ttl = |secs: u32| {
        Config::try_parse_from(["facekey-runtime", "--session-ttl-secs", &secs.to_string()])
    };
    assert!(ttl(bounds::SESSION_TTL_SECONDS).is_ok());
    assert!(ttl(bounds::SESSION_TTL_SECONDS + 1).is_err());
    let frames = |n: u32| {
        Config::try_parse_from(["facekey-runtime", "--session-max-frames", &n.to_string()])
    };
    assert_eq!(
        bounds::SESSION_FRAMES as usize,
        facekey_runtime::config::MAX_SESSION_FRAMES
    );
    assert!(frames(bounds::SESSION_FRAMES).is_ok());
    assert!(frames(bounds::SESSION_FRAMES + 1).is_err());
    assert!(frames(0).is_err());
}

/// The operator's bound on `monitoring.rules.p99LatencyMs` stays below the runtime's top finite
/// latency bucket: `histogram_quantile` never exceeds it, so an alert threshold at or past it
/// could never fire.
#[test]
fn the_p99_alert_bound_is_below_the_top_latency_bucket() {
    let top_ms = facekey_runtime::metrics::REQUEST_BUCKETS
        .last()
        .map(|s| s * 1000.0)
        .unwrap();
    let bound = f64::from(facekey_crds::bounds::P99_LATENCY_MS);
    assert!(bound < top_ms, "bound {bound} ms, top bucket {top_ms} ms");
}
