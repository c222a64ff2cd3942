//! The operator's API client: the in-cluster or kubeconfig configuration with a response
//! timeout. kube 4 leaves that timeout unset so that watches may idle, but then a request the
//! API server takes and never answers (a stalled apiserver, a half-open connection through a
//! load balancer) waits for ever: the webhook's certificate upkeep, the sidecar counter and the
//! reporter's status writes would stop without a word. Every watch asks the server to end it
//! after 290 s (`timeoutSeconds`, kube's watcher default), so a 295-second read timeout bounds
//! every other call without cutting a quiet watch. Reconciles have their own, shorter bound
//! (`reconcile::RECONCILE_TIMEOUT`).

use std::time::Duration;

use kube::Client;

/// The longest the client waits for the API server to send anything on a connection.
pub const READ_TIMEOUT: Duration = Duration::from_secs(295);

/// `config` with [`READ_TIMEOUT`] as its response timeout, unless one is set already.
pub fn configure(mut config: kube::Config) -> kube::Config {
    if config.read_timeout.is_none() {
        config.read_timeout = Some(READ_TIMEOUT);
    }
    config
}

/// The client for the in-cluster (or kubeconfig) configuration, [`configure`]d.
pub async fn infer() -> Result<Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Client::try_from(configure(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_timeout_is_set_and_outlasts_a_watch() {
        let config = configure(kube::Config::new(
            "https://127.0.0.1:6443".parse().unwrap_or_default(),
        ));
        assert_eq!(config.read_timeout, Some(READ_TIMEOUT));
        // The watcher asks for timeoutSeconds=290 when its config sets none (kube's default).
        let watch_ends_after = Duration::from_secs(u64::from(
            kube::runtime::watcher::Config::default()
                .timeout
                .unwrap_or(290),
        ));
        assert!(
            READ_TIMEOUT > watch_ends_after,
            "a quiet watch ends server-side before the client would cut it"
        );
        let mut own = kube::Config::new("https://127.0.0.1:6443".parse().unwrap_or_default());
        own.read_timeout = Some(Duration::from_secs(30));
        assert_eq!(
            configure(own).read_timeout,
            Some(Duration::from_secs(30)),
            "a timeout already set is kept"
        );
    }
}
