//! `facekey-operator`: reconciles FaceKeyDeployment resources into scanned, monitored runtime pods.
//!
//! Subcommands: `run` (the controller and the sidecar injection webhook), `render` (print
//! desired objects, or pods as the webhook would inject them), `crdgen` (print the CRD),
//! `scan-summary` (the summary step inside scan Jobs), `merge-docker-config` (the registry logins
//! of scan Jobs: their pull secrets merged into one Docker config for Trivy).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{ArgAction, Parser, Subcommand};
use facekey_crds::{Severity, SidecarFailurePolicy};
use facekey_operator::controller::{self, Exit, RunConfig};
use facekey_operator::desired::{Capabilities, OptionalCrd};
use facekey_operator::policy_floor::{
    ClusterPolicy, DEFAULT_SCANNER_IMAGE, PolicyFloor, ScannerSettings,
};
use facekey_operator::render::{self, RenderOptions};
use facekey_operator::scan::docker_config::{self, Format};
use facekey_operator::scan::{MAX_SUMMARY_BYTES, ScanSummary, trivy};
use facekey_operator::webhook::certs::CertSettings;
use facekey_operator::webhook::manage::{CertMode, CertTargets};
use facekey_operator::webhook::{InjectOptions, WebhookConfig};

/// Default image of the operator, used for the summary container of scan Jobs.
const DEFAULT_OPERATOR_IMAGE: &str =
    concat!("ghcr.io/facekey/operator:", env!("CARGO_PKG_VERSION"));

#[derive(Parser)]
#[command(
    name = "facekey-operator",
    version,
    about = "FaceKey Kubernetes operator"
)]
struct Cli {
    /// Log format: `json` or `text`.
    #[arg(
        long,
        env = "FACEKEY_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

/// The cluster's scan policy floor and scanner settings (`run`, and `render` to preview them).
#[derive(clap::Args, Clone)]
struct ScanPolicyArgs {
    /// Refuse resources with `scanGate.enabled: false`.
    #[arg(long, env = "FACEKEY_OPERATOR_REQUIRE_SCAN", default_value_t = PolicyFloor::default().require_scan, action = ArgAction::Set)]
    require_scan: bool,
    /// Highest `scanGate.maxSeverity` a resource may set (UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL).
    #[arg(long, env = "FACEKEY_OPERATOR_MAX_ALLOWED_SEVERITY", default_value = PolicyFloor::default().max_severity.as_str(), value_parser = parse_severity)]
    max_allowed_severity: Severity,
    /// Allow resources to list `scanGate.ignoreCVEs`.
    #[arg(long, env = "FACEKEY_OPERATOR_ALLOW_IGNORE_CVES", default_value_t = PolicyFloor::default().allow_ignore_cves, action = ArgAction::Set)]
    allow_ignore_cves: bool,
    /// Allow resources to choose their scanner image, DB repositories and Trivy server.
    #[arg(long, env = "FACEKEY_OPERATOR_ALLOW_SCANNER_OVERRIDES", default_value_t = PolicyFloor::default().allow_scanner_overrides, action = ArgAction::Set)]
    allow_scanner_overrides: bool,
    /// Image of the Trivy container of scan Jobs.
    #[arg(long, env = "FACEKEY_OPERATOR_SCANNER_IMAGE", default_value = DEFAULT_SCANNER_IMAGE)]
    scanner_image: String,
    /// Trivy vulnerability DB repository (a mirror; Trivy's default when unset).
    #[arg(long, env = "FACEKEY_OPERATOR_TRIVY_DB_REPOSITORY")]
    db_repository: Option<String>,
    /// Trivy Java DB repository (a mirror; Trivy's default when unset).
    #[arg(long, env = "FACEKEY_OPERATOR_TRIVY_JAVA_DB_REPOSITORY")]
    java_db_repository: Option<String>,
    /// URL of a Trivy server: scan Jobs run `trivy image --server <url>` and download no DB.
    #[arg(long, env = "FACEKEY_OPERATOR_TRIVY_SERVER")]
    trivy_server: Option<String>,
}

impl ScanPolicyArgs {
    fn policy(self) -> ClusterPolicy {
        ClusterPolicy {
            floor: PolicyFloor {
                require_scan: self.require_scan,
                max_severity: self.max_allowed_severity,
                allow_ignore_cves: self.allow_ignore_cves,
                allow_scanner_overrides: self.allow_scanner_overrides,
            },
            scanner: ScannerSettings {
                image: self.scanner_image,
                db_repository: self.db_repository.filter(|s| !s.is_empty()),
                java_db_repository: self.java_db_repository.filter(|s| !s.is_empty()),
                server: self.trivy_server.filter(|s| !s.is_empty()),
            },
        }
    }
}

fn parse_severity(s: &str) -> Result<Severity, String> {
    Severity::ALL
        .into_iter()
        .find(|sev| sev.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("{s}: expected UNKNOWN, LOW, MEDIUM, HIGH or CRITICAL"))
}

fn parse_failure_policy(s: &str) -> Result<SidecarFailurePolicy, String> {
    match s.to_ascii_lowercase().as_str() {
        "fail" => Ok(SidecarFailurePolicy::Fail),
        "ignore" => Ok(SidecarFailurePolicy::Ignore),
        _ => Err(format!("{s}: expected Fail or Ignore")),
    }
}

/// The sidecar injection webhook of `run`.
#[derive(clap::Args, Clone)]
struct WebhookArgs {
    /// Serve the sidecar injection webhook (HTTPS).
    #[arg(long = "webhook", env = "FACEKEY_OPERATOR_WEBHOOK", default_value_t = true, action = ArgAction::Set)]
    enabled: bool,
    /// HTTPS address of the webhook.
    #[arg(
        long,
        env = "FACEKEY_OPERATOR_WEBHOOK_LISTEN",
        default_value = "[::]:9443"
    )]
    webhook_listen: SocketAddr,
    /// Service in front of the webhook (the serving certificate's DNS names).
    #[arg(
        long,
        env = "FACEKEY_OPERATOR_WEBHOOK_SERVICE",
        default_value = "facekey-webhook"
    )]
    webhook_service: String,
    /// Secret holding the webhook's CA and serving certificate (in the operator's namespace).
    #[arg(
        long,
        env = "FACEKEY_OPERATOR_WEBHOOK_SECRET",
        default_value = "facekey-webhook-tls"
    )]
    webhook_secret: String,
    /// MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(
        long,
        env = "FACEKEY_OPERATOR_WEBHOOK_CONFIG",
        default_value = "facekey-sidecar-injector"
    )]
    webhook_config: String,
    /// Who issues the serving certificate: `self-signed` (the operator's own CA) or
    /// `cert-manager` (a Certificate writes the Secret, its CA injector the caBundle).
    #[arg(long, env = "FACEKEY_OPERATOR_WEBHOOK_CERTS", default_value = "self-signed", value_parser = ["self-signed", "cert-manager"])]
    webhook_certs: String,
    /// What admission does with a pod naming a FaceKeyDeployment that does not exist, or that
    /// cannot be read from the API server in time (`LookupFailed`).
    #[arg(long, env = "FACEKEY_OPERATOR_SIDECAR_UNKNOWN_RESOURCE", default_value = "Fail", value_parser = parse_failure_policy)]
    sidecar_unknown_resource: SidecarFailurePolicy,
    /// PEM file of the CA(s) that issued the client certificate the API server presents to
    /// admission webhooks (its AdmissionConfiguration's kubeconfig): when set, the webhook
    /// serves only clients with such a certificate. Unset: any client that reaches it.
    #[arg(long, env = "FACEKEY_OPERATOR_WEBHOOK_CLIENT_CA")]
    webhook_client_ca: Option<std::path::PathBuf>,
}

#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing the flags buys nothing"
)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller (leader-elected).
    Run {
        /// Address of the /metrics, /healthz and /readyz server.
        #[arg(long, env = "FACEKEY_OPERATOR_LISTEN", default_value = "[::]:8080")]
        listen: SocketAddr,
        /// Operator image, run by scan Jobs to summarise Trivy reports.
        #[arg(long, env = "FACEKEY_OPERATOR_IMAGE", default_value = DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "facekey-system")]
        lease_namespace: String,
        /// Name of the leader-election Lease.
        #[arg(long, default_value = "facekey-operator-leader")]
        lease_name: String,
        /// Identity in the Lease (defaults to the pod name, else the host name).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Lease duration in seconds.
        #[arg(long, default_value_t = 15)]
        lease_seconds: u64,
        /// Only watch this namespace (default: all namespaces).
        #[arg(long, env = "FACEKEY_WATCH_NAMESPACE")]
        namespace: Option<String>,
        #[command(flatten)]
        scan_policy: ScanPolicyArgs,
        #[command(flatten)]
        webhook: WebhookArgs,
    },
    /// Print the objects the operator would apply for the FaceKeyDeployments in a file, as YAML.
    Render {
        /// YAML file with one or more FaceKeyDeployments (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Render as if prometheus-operator's CRDs were absent.
        #[arg(long)]
        without_monitoring_crds: bool,
        /// Also print the Trivy scan Job the gate would start.
        #[arg(long)]
        include_scan_job: bool,
        /// Operator image for the scan Job.
        #[arg(long, default_value = DEFAULT_OPERATOR_IMAGE)]
        operator_image: String,
        /// Instead: print the pods (or workloads' pod templates) of the file as the sidecar
        /// injection webhook would admit them; FaceKeyDeployments come from the file itself and
        /// `--resources`. Exits non-zero when admission would refuse one.
        #[arg(long)]
        inject: bool,
        /// With `--inject`: a YAML file with the FaceKeyDeployments the pods name.
        #[arg(long, requires = "inject")]
        resources: Option<PathBuf>,
        /// With `--inject`: what admission does with a pod naming an unknown resource.
        #[arg(long, default_value = "Fail", value_parser = parse_failure_policy)]
        sidecar_unknown_resource: SidecarFailurePolicy,
        #[command(flatten)]
        scan_policy: ScanPolicyArgs,
    },
    /// Print the FaceKeyDeployment CustomResourceDefinition as YAML.
    Crdgen,
    /// Condense a Trivy JSON report into the gate's summary (runs inside scan Jobs).
    ScanSummary {
        /// Trivy JSON report.
        #[arg(long)]
        report: PathBuf,
        /// The scanned image reference.
        #[arg(long)]
        image: String,
        /// Where to write the summary (the scan Job uses /dev/termination-log).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Merge pull-secret volumes into one Docker config.json for Trivy (runs inside scan Jobs).
    MergeDockerConfig {
        /// A mounted pull secret: a directory with `dockerconfigjson` and/or `dockercfg` (either
        /// may be missing). Repeat in `imagePullSecrets` order: the first login of a registry wins.
        #[arg(long, required = true)]
        input: Vec<PathBuf>,
        /// The merged config.json to write.
        #[arg(long)]
        output: PathBuf,
        /// On failure, also write the error there (the scan Job uses /dev/termination-log).
        #[arg(long)]
        termination_log: Option<PathBuf>,
    },
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The pull-secret files of the `inputs` directories, in order (`.dockerconfigjson` before
/// `.dockercfg` within one); a missing file is a Secret without that key.
fn read_pull_secrets(inputs: &[PathBuf]) -> anyhow::Result<Vec<docker_config::Input>> {
    let mut files = Vec::new();
    for dir in inputs {
        if !dir.is_dir() {
            bail!("pull-secret directory {} does not exist", dir.display());
        }
        for format in Format::ALL {
            let path = dir.join(format.file_name());
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push(docker_config::Input {
                    origin: format!("{} (key {})", path.display(), format.secret_key()),
                    format,
                    text,
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            }
        }
    }
    Ok(files)
}

/// `merge-docker-config`: read, merge, write the config readable by the pod's user only.
fn merge_docker_config(inputs: &[PathBuf], output: &PathBuf) -> anyhow::Result<()> {
    use std::io::Write as _;
    let files = read_pull_secrets(inputs)?;
    let merged = docker_config::merge(&files)?;
    for (registry, origin) in &merged.sources {
        eprintln!("registry {registry}: login from {origin}");
    }
    for s in &merged.shadowed {
        eprintln!(
            "registry {}: login from {} ignored, {} comes first",
            s.registry, s.origin, s.winner
        );
    }
    if merged.sources.is_empty() {
        eprintln!("no registry logins found: Trivy pulls anonymously");
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o640);
    let mut file = options
        .open(output)
        .with_context(|| format!("creating {}", output.display()))?;
    file.write_all(merged.to_json().as_bytes())
        .with_context(|| format!("writing {}", output.display()))?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli.log_format);
    match cli.command {
        Command::Run {
            listen,
            operator_image,
            lease_namespace,
            lease_name,
            identity,
            lease_seconds,
            namespace,
            scan_policy,
            webhook,
        } => {
            let identity = match identity {
                Some(id) => id,
                None => std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| format!("facekey-operator-{}", std::process::id())),
            };
            // One registry for the controller's and the webhook's metrics, served on `listen`.
            let metrics = facekey_operator::metrics::Metrics::new()
                .context("registering the operator's metrics")?;
            let mut webhook_serving = None;
            if !webhook.enabled && webhook.webhook_client_ca.is_some() {
                tracing::warn!(
                    "--webhook-client-ca is ignored: the webhook is off (--webhook false)"
                );
            }
            if webhook.enabled {
                let client = facekey_operator::client::infer()
                    .await
                    .context("kubeconfig / in-cluster configuration for the webhook")?;
                let mode = if webhook.webhook_certs == "cert-manager" {
                    CertMode::CertManager
                } else {
                    CertMode::SelfSigned
                };
                let client_cas = match &webhook.webhook_client_ca {
                    Some(path) => {
                        let pem = std::fs::read(path).with_context(|| {
                            format!("reading the webhook client CA {}", path.display())
                        })?;
                        Some(
                            facekey_operator::webhook::server::client_cas_from_pem(&pem)
                                .with_context(|| format!("{}", path.display()))?,
                        )
                    }
                    None => None,
                };
                let serving = facekey_operator::webhook::start(
                    client,
                    WebhookConfig {
                        listen: webhook.webhook_listen,
                        targets: CertTargets {
                            namespace: lease_namespace.clone(),
                            secret: webhook.webhook_secret,
                            webhook_config: webhook.webhook_config,
                            settings: CertSettings::new(&webhook.webhook_service, &lease_namespace),
                            mode,
                        },
                        options: InjectOptions {
                            unknown_resource: webhook.sidecar_unknown_resource,
                        },
                        watch_namespace: namespace.clone(),
                        identity: identity.clone(),
                        lease: (lease_namespace.clone(), lease_name.clone()),
                        every: facekey_operator::webhook::CERT_CHECK_EVERY,
                        metrics: metrics.clone(),
                        client_cas,
                    },
                )
                .await
                .context("starting the sidecar injection webhook")?;
                webhook_serving = Some(serving);
            }
            let exit = controller::run(RunConfig {
                listen,
                operator_image,
                lease_namespace,
                lease_name,
                identity,
                lease_duration: Duration::from_secs(lease_seconds.max(3)),
                watch_namespace: namespace,
                policy: scan_policy.policy(),
                metrics,
                drain: if webhook_serving.is_some() {
                    controller::DRAIN_DELAY
                } else {
                    Duration::ZERO
                },
                webhook: webhook_serving,
                undecodable_grace: controller::UNDECODABLE_GRACE,
            })
            .await?;
            if exit == Exit::LostLeadership {
                bail!("lost leadership; exiting so the pod restarts as a standby");
            }
            Ok(())
        }
        Command::Render {
            file,
            without_monitoring_crds,
            include_scan_job,
            operator_image,
            inject,
            resources,
            sidecar_unknown_resource,
            scan_policy,
        } => {
            let input = read_input(&file)?;
            if inject {
                let resources = match &resources {
                    Some(path) => read_input(path)?,
                    None => String::new(),
                };
                let out = render::render_inject(
                    &input,
                    &resources,
                    InjectOptions {
                        unknown_resource: sidecar_unknown_resource,
                    },
                )?;
                print!("{}", out.yaml);
                if !out.refused.is_empty() {
                    bail!("admission would refuse: {}", out.refused.join("; "));
                }
                return Ok(());
            }
            let mut capabilities = Capabilities::all();
            if without_monitoring_crds {
                capabilities.installed.retain(|c| {
                    !matches!(
                        c,
                        OptionalCrd::ServiceMonitor
                            | OptionalCrd::PodMonitor
                            | OptionalCrd::PrometheusRule
                            | OptionalCrd::AlertmanagerConfig
                    )
                });
            }
            let out = render::render(
                &input,
                &RenderOptions {
                    capabilities,
                    include_scan_job,
                    operator_image,
                    policy: scan_policy.policy(),
                },
            )?;
            print!("{out}");
            Ok(())
        }
        Command::Crdgen => {
            print!("{}", facekey_crds::crd_yaml()?);
            Ok(())
        }
        Command::ScanSummary {
            report,
            image,
            output,
        } => {
            let text = read_input(&report)?;
            let parsed = trivy::parse(&text).context("parsing the Trivy report")?;
            if parsed.schema_version != 2 {
                bail!(
                    "unsupported Trivy report SchemaVersion {}",
                    parsed.schema_version
                );
            }
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let summary = ScanSummary::from_trivy(&parsed, &image, &now);
            let json = summary.encode_bounded(MAX_SUMMARY_BYTES)?;
            if let Some(path) = output {
                std::fs::write(&path, &json)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!("{json}");
            Ok(())
        }
        Command::MergeDockerConfig {
            input,
            output,
            termination_log,
        } => {
            let result = merge_docker_config(&input, &output);
            if let (Err(e), Some(path)) = (&result, termination_log) {
                // Kubernetes keeps at most 4 KiB of a termination message.
                let mut message = format!("merge-docker-config: {e:#}");
                if message.len() > 3800 {
                    let mut end = 3800;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                }
                if let Err(write) = std::fs::write(&path, message) {
                    eprintln!("writing {}: {write}", path.display());
                }
            }
            result
        }
    }
}
