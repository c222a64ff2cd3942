//! `facekey-operator`: reconciles FaceKeyDeployment resources into scanned, monitored runtime pods.
//!
//! Subcommands: `run` (the controller), `render` (print desired objects), `crdgen` (print the CRD),
//! `scan-summary` (the summary step inside scan Jobs).

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use facekey_operator::controller::{self, Exit, RunConfig};
use facekey_operator::desired::{Capabilities, OptionalCrd};
use facekey_operator::render::{self, RenderOptions};
use facekey_operator::scan::{MAX_SUMMARY_BYTES, ScanSummary, trivy};

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

#[derive(Subcommand)]
enum Command {
    /// Run the controller (leader-elected).
    Run {
        /// Address of the /metrics, /healthz and /readyz server.
        #[arg(long, env = "FACEKEY_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
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
        } => {
            let identity = match identity {
                Some(id) => id,
                None => std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| format!("facekey-operator-{}", std::process::id())),
            };
            let exit = controller::run(RunConfig {
                listen,
                operator_image,
                lease_namespace,
                lease_name,
                identity,
                lease_duration: Duration::from_secs(lease_seconds.max(3)),
                watch_namespace: namespace,
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
        } => {
            let input = read_input(&file)?;
            let mut capabilities = Capabilities::all();
            if without_monitoring_crds {
                capabilities.installed.retain(|c| {
                    !matches!(
                        c,
                        OptionalCrd::ServiceMonitor
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
    }
}
