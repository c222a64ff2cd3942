//! `facekey-runtime`: serve face verification over HTTP with the configuration from flags and
//! `FACEKEY_*` environment variables.

use anyhow::Context;
use clap::Parser;
use facekey_runtime::auth::keys::{key_line, new_key, parse_scopes};
use facekey_runtime::config::{Command, Config};
use facekey_runtime::server::{Server, shutdown_signal};
use facekey_runtime::telemetry;

/// mimalloc instead of glibc malloc: the serving layer's many small per-request allocations
/// cost less (bench/README.md, "Serving-layer cost").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    if let Some(id) = &config.new_template_key {
        println!("{}", facekey_runtime::store::cipher::new_key_line(id)?);
        return Ok(());
    }
    if let Some(Command::NewApiKey { id, scopes, rps }) = &config.command {
        let scopes = parse_scopes(&scopes.join(",")).map_err(anyhow::Error::msg)?;
        let key = new_key()?;
        let line = key_line(id, &scopes, &key, *rps)?;
        // Two lines on stdout, for scripts: the key (shown this once), then its keys-file line.
        eprintln!(
            "line 1: the key (shown this once; give it to the client, keep it secret)\n\
             line 2: its line for the API keys file (FACEKEY_API_KEYS_FILE)"
        );
        println!("{key}\n{line}");
        return Ok(());
    }
    let unknown = Config::unknown_settings(
        std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()),
    );
    if config.check_config {
        for name in &unknown {
            eprintln!("UNKNOWN SETTING (ignored by this runtime): {name}");
        }
        let allowed = config.check().map_err(anyhow::Error::msg)?;
        for problem in &allowed {
            eprintln!("INSECURE (allowed by --allow-insecure): {problem}");
        }
        println!("configuration OK (files and models are not read by --check-config)");
        return Ok(());
    }
    if config.check_health {
        return facekey_runtime::server::check_health(config.listen)
            .await
            .map_err(anyhow::Error::msg);
    }
    telemetry::init(config.log_format, &config.log).map_err(anyhow::Error::msg)?;
    for name in &unknown {
        tracing::warn!(
            setting = %name,
            "{name} is not a setting of this runtime and is ignored: a typo, a setting of another \
             release (the operator renders settings for the runtime of its own release), or \
             another program's variable"
        );
    }
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "facekey-runtime listening");
    server
        .serve(shutdown_signal())
        .await
        .context("facekey-runtime stopped")?;
    tracing::info!("stopped cleanly");
    Ok(())
}
