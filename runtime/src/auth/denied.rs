//! How many refused requests of one client are logged and audited: at most [`PER_SECOND`] a
//! second each, the rest counted (`facekey_auth_failures_total` counts them all) and summed up
//! in one line when the client's next second starts. A client is an address (an IPv6 address's
//! /64, which one host holds whole) and the key it presented, if the key was recognised: a
//! refusal of a known key (a scope it lacks, its rate) is not crowded out by keyless noise from
//! the same address (a proxy, an ingress). A client without a key can send thousands
//! of refused requests a second on one kept-alive connection; one audit event and one log line
//! each would fill the audit disk or the log pipeline, and the events that matter would then be
//! lost.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Refused requests of one client logged and audited per second.
pub const PER_SECOND: u32 = 20;
/// Clients followed at once; past them, clients share one allowance.
pub const MAX_CLIENTS: usize = 4096;
const WINDOW: Duration = Duration::from_secs(1);
/// The shared allowance of clients past [`MAX_CLIENTS`] (and of requests without an address).
const OVERFLOW: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Whether a refused request is logged and audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log and audit it; `suppressed_before` of this client's refusals in its previous second
    /// were only counted (say so once).
    Record {
        /// Refusals only counted in the client's previous second.
        suppressed_before: u64,
    },
    /// Only count it.
    Suppress,
}

struct Window {
    start: Instant,
    seen: u32,
    suppressed: u64,
}

/// A client: its network (an IPv4 address, an IPv6 /64) and the key it presented, if known.
type Client = (IpAddr, Option<String>);

/// The per-client allowances of refused requests logged and audited.
#[derive(Default)]
pub struct DeniedLog {
    clients: Mutex<HashMap<Client, Window>>,
}

/// The network a refusal is counted under: the address, or an IPv6 address's /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl DeniedLog {
    /// Whether a refusal of `client` (presenting the known key `key_id`, if any) at `now` is
    /// logged and audited.
    pub fn check(&self, client: Option<IpAddr>, key_id: Option<&str>, now: Instant) -> Verdict {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let mut id: Client = (client.map_or(OVERFLOW, network), key_id.map(str::to_owned));
        if !clients.contains_key(&id) && clients.len() >= MAX_CLIENTS {
            clients.retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
            if clients.len() >= MAX_CLIENTS {
                id = (OVERFLOW, None);
            }
        }
        let w = clients.entry(id).or_insert(Window {
            start: now,
            seen: 0,
            suppressed: 0,
        });
        let mut suppressed_before = 0;
        if now.saturating_duration_since(w.start) >= WINDOW {
            suppressed_before = w.suppressed;
            *w = Window {
                start: now,
                seen: 0,
                suppressed: 0,
            };
        }
        if w.seen < PER_SECOND {
            w.seen += 1;
            Verdict::Record { suppressed_before }
        } else {
            w.suppressed += 1;
            Verdict::Suppress
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)))
    }

    #[test]
    fn a_client_gets_its_allowance_a_second_and_hears_of_the_rest_once() {
        let log = DeniedLog::default();
        let t0 = Instant::now();
        for _ in 0..PER_SECOND {
            assert_eq!(
                log.check(ip(1), None, t0),
                Verdict::Record {
                    suppressed_before: 0
                }
            );
        }
        for _ in 0..7 {
            assert_eq!(log.check(ip(1), None, t0), Verdict::Suppress);
        }
        // Another client has its own allowance.
        assert_eq!(
            log.check(ip(2), None, t0),
            Verdict::Record {
                suppressed_before: 0
            }
        );
        // The next second: the 7 only counted are told, once.
        let t1 = t0 + WINDOW;
        assert_eq!(
            log.check(ip(1), None, t1),
            Verdict::Record {
                suppressed_before: 7
            }
        );
        assert_eq!(
            log.check(ip(1), None, t1),
            Verdict::Record {
                suppressed_before: 0
            }
        );
    }

    /// A known key's refusals from an address have their own allowance beside that address's
    /// keyless ones; an IPv6 host's addresses (its /64) share one.
    #[test]
    fn known_keys_and_ipv6_hosts_are_clients_of_their_own() {
        let log = DeniedLog::default();
        let t0 = Instant::now();
        for _ in 0..PER_SECOND {
            assert!(matches!(log.check(ip(1), None, t0), Verdict::Record { .. }));
        }
        assert_eq!(log.check(ip(1), None, t0), Verdict::Suppress);
        assert!(matches!(
            log.check(ip(1), Some("app"), t0),
            Verdict::Record { .. }
        ));
        let host = |low: u64| Some(IpAddr::V6(Ipv6Addr::from((7u128 << 64) | u128::from(low))));
        let mut recorded = 0;
        for low in 0..(2 * u64::from(PER_SECOND)) {
            if matches!(log.check(host(low), None, t0), Verdict::Record { .. }) {
                recorded += 1;
            }
        }
        assert_eq!(recorded, PER_SECOND, "one /64, one allowance");
    }

    #[test]
    fn clients_past_the_bound_share_one_allowance() {
        let log = DeniedLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_CLIENTS {
            let a = IpAddr::V6(std::net::Ipv6Addr::from((i as u128 + 1) << 64));
            assert!(matches!(
                log.check(Some(a), None, t0),
                Verdict::Record { .. }
            ));
        }
        let mut recorded = 0;
        for i in 0..100u128 {
            let a = IpAddr::V6(std::net::Ipv6Addr::from((1_000_000 + i) << 64));
            if matches!(log.check(Some(a), None, t0), Verdict::Record { .. }) {
                recorded += 1;
            }
        }
        assert_eq!(recorded, PER_SECOND, "the overflow shares one allowance");
        assert!(log.clients.lock().unwrap().len() <= MAX_CLIENTS + 1);
        // A second later the stale clients make room again.
        let a = IpAddr::V6(std::net::Ipv6Addr::from(2_000_000u128 << 64));
        assert!(matches!(
            log.check(Some(a), None, t0 + WINDOW),
            Verdict::Record { .. }
        ));
        assert!(log.clients.lock().unwrap().len() <= 2);
    }
}
