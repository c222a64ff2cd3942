//! Which optional CRDs (prometheus-operator, trivy-operator) the cluster serves, cached briefly so
//! a thousand reconciles do not cost four thousand GETs.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::desired::{Capabilities, OptionalCrd};
use crate::error::ReadError;

/// How long a discovery result is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// Looks CRDs up by name (`get customresourcedefinitions/<name>`, a narrow RBAC grant).
pub struct CapabilityCache {
    client: Client,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Capabilities)>>,
}

impl CapabilityCache {
    /// A cache over `client` with [`CACHE_TTL`].
    pub fn new(client: Client) -> Self {
        Self::with_ttl(client, CACHE_TTL)
    }

    /// A cache with a custom TTL (zero disables caching; tests use it).
    pub fn with_ttl(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The current capabilities, from cache when fresh.
    pub async fn get(&self) -> Result<Capabilities, ReadError> {
        let mut cached = self.cached.lock().await;
        if let Some((at, caps)) = cached.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(caps.clone());
        }
        let caps = discover(&self.client).await?;
        *cached = Some((Instant::now(), caps.clone()));
        Ok(caps)
    }
}

/// Query the API server for every optional CRD.
pub async fn discover(client: &Client) -> Result<Capabilities, ReadError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut caps = Capabilities::none();
    for crd in OptionalCrd::ALL {
        let found = crds
            .get_opt(crd.crd_name())
            .await
            .map_err(ReadError::of(format!(
                "CustomResourceDefinition {}",
                crd.crd_name()
            )))?;
        if found.is_some() {
            caps.installed.insert(crd);
        }
    }
    Ok(caps)
}
