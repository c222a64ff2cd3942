//! The per-subject lockout ledger in a real PostgreSQL server, as replicas share it: two
//! `Lockouts` on one database count one subject's failures together, concurrent failures through
//! both lock exactly once at exactly the threshold and every decision past it is refused (so
//! attempts sent at once reveal no more decisions than the threshold), locks expire on the
//! database's clock, expired
//! rows are purged, and an unreachable database refuses (fails closed) instead of skipping the
//! count. Needs Debian's `postgresql` (tests/setup.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::postgres::{PgServer, key_file};
use facekey_runtime::lockout::{Ledger, LockoutError, Lockouts, PgLedger, Policy};
use facekey_runtime::metrics::Metrics;
use facekey_runtime::store::postgres::PgStore;
use facekey_runtime::store::{StoreError, TemplateKeys};

const SUBJECT: &str = "6f1b8c4e-0a4d-4a8e-9f57-3c2a1d0e9b11";

/// A runtime's view of the shared database: the template store (which runs the migrations) and a
/// `Lockouts` on its pool, with its own metrics as a replica has.
struct Replica {
    lockouts: Lockouts,
    metrics: Metrics,
    _store: PgStore,
}

async fn replica(pg: &PgServer, policy: Policy) -> Replica {
    let keys = key_file(pg.dir.path(), &format!("k1:{}", "ab".repeat(32)));
    let keys = TemplateKeys::from_file(&keys).unwrap();
    let store = PgStore::connect(&pg.url(), None, keys, 10, "FACEKEY_DATABASE_URL")
        .await
        .unwrap();
    let metrics = Metrics::new().unwrap();
    let lockouts = Lockouts::new(
        policy,
        Arc::new(PgLedger::new(store.ledger_pool().clone()).remembering(policy.max_lock)),
        metrics.clone(),
        None,
    );
    Replica {
        lockouts,
        metrics,
        _store: store,
    }
}

fn policy(attempts: u32, lock: Duration) -> Policy {
    Policy {
        attempts,
        window: Duration::from_secs(900),
        lock,
        max_lock: Duration::ZERO,
    }
}

fn is_locked(r: &Result<(), LockoutError>) -> bool {
    matches!(r, Err(LockoutError::Locked(_)))
}

#[tokio::test]
async fn replicas_count_together_and_locks_expire_on_the_database_clock() {
    let pg = PgServer::start();
    let p = policy(5, Duration::from_secs(2));
    let a = replica(&pg, p).await;
    let b = replica(&pg, p).await;

    // Failures alternate between the replicas: the fifth locks, wherever it lands.
    for i in 0..4 {
        let r = if i % 2 == 0 { &a } else { &b };
        assert_eq!(r.lockouts.record_failure(SUBJECT).await.unwrap(), None);
    }
    a.lockouts.check(SUBJECT).await.unwrap();
    b.lockouts.check(SUBJECT).await.unwrap();
    let locked = b.lockouts.record_failure(SUBJECT).await.unwrap().unwrap();
    assert_eq!(locked.subject, SUBJECT);
    assert_eq!(locked.retry_after, Duration::from_secs(2));
    assert_eq!(b.metrics.subject_lockouts.get(), 1);
    assert_eq!(a.metrics.subject_lockouts.get(), 0);

    // Both replicas see the lock, including through another spelling of the id.
    match a.lockouts.check(&SUBJECT.to_uppercase()).await {
        Err(LockoutError::Locked(l)) => {
            assert_eq!(l.subject, SUBJECT);
            assert!(l.retry_after <= Duration::from_secs(2), "{l:?}");
            assert_eq!(l.retry_after_secs(), 2);
        }
        other => panic!("expected locked, got {other:?}"),
    }
    assert!(is_locked(&b.lockouts.check(SUBJECT).await));
    // Failures and a success decided while locked change nothing and are refused.
    assert!(is_locked(
        &a.lockouts.record_failure(SUBJECT).await.map(|_| ())
    ));
    assert!(is_locked(&a.lockouts.record_success(SUBJECT).await));
    assert!(is_locked(&b.lockouts.check(SUBJECT).await));

    // The lock ends; the count starts from zero again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    a.lockouts.check(SUBJECT).await.unwrap();
    b.lockouts.check(SUBJECT).await.unwrap();
    for _ in 0..4 {
        assert_eq!(a.lockouts.record_failure(SUBJECT).await.unwrap(), None);
    }
    // A success through either replica clears the failures counted through both.
    b.lockouts.record_success(SUBJECT).await.unwrap();
    for _ in 0..4 {
        assert_eq!(b.lockouts.record_failure(SUBJECT).await.unwrap(), None);
    }
    assert!(a.lockouts.record_failure(SUBJECT).await.unwrap().is_some());
    assert_eq!(
        pg.psql("SELECT count(*) FROM facekey_lockouts WHERE locked_until > now()"),
        "1"
    );
    // An administrator's release through one replica lifts it for both, once.
    let left = b.lockouts.release(SUBJECT).await.unwrap();
    assert!(
        left.is_some_and(|d| d <= Duration::from_secs(2)),
        "{left:?}"
    );
    a.lockouts.check(SUBJECT).await.unwrap();
    assert_eq!(b.lockouts.release(SUBJECT).await.unwrap(), None);
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_lockouts"), "0");
}

#[tokio::test]
async fn concurrent_failures_through_two_replicas_lock_exactly_once_at_the_threshold() {
    let pg = PgServer::start();
    let p = policy(10, Duration::from_secs(60));
    let a = replica(&pg, p).await;
    let b = replica(&pg, p).await;

    // Nine at once, split across the replicas: none may be lost, none may lock.
    let burst = |n: usize, subject: &'static str| {
        let futures = (0..n).map(|i| {
            let l = if i % 2 == 0 {
                a.lockouts.clone()
            } else {
                b.lockouts.clone()
            };
            tokio::spawn(async move { l.record_failure(subject).await })
        });
        futures::future::join_all(futures)
    };
    let results = burst(9, SUBJECT).await;
    assert!(results.into_iter().all(|r| r.unwrap().unwrap().is_none()));
    a.lockouts.check(SUBJECT).await.unwrap();
    assert_eq!(
        pg.psql(&format!(
            "SELECT cardinality(failures) FROM facekey_lockouts WHERE subject = '{SUBJECT}'"
        )),
        "9",
        "a concurrent failure was lost"
    );
    // The tenth locks.
    assert!(b.lockouts.record_failure(SUBJECT).await.unwrap().is_some());

    // Forty at once on a fresh subject (as forty verifications that all passed the check before
    // the work): exactly one of them is the locking one, nine more are counted, and the other
    // thirty are refused, so no more than the threshold of decisions are revealed.
    const OTHER: &str = "a7d3e2f1-5b6c-4d8e-9f0a-1b2c3d4e5f60";
    let results: Vec<_> = burst(40, OTHER)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let locks = results.iter().filter(|r| matches!(r, Ok(Some(_)))).count();
    let counted = results.iter().filter(|r| matches!(r, Ok(None))).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(LockoutError::Locked(_))))
        .count();
    assert_eq!(locks, 1, "concurrent failures locked {locks} times");
    assert_eq!((counted, refused), (9, 30), "{results:?}");
    assert!(is_locked(&a.lockouts.check(OTHER).await));
    // A match decided after the lock, through either replica, is refused too.
    assert!(is_locked(&a.lockouts.record_success(OTHER).await));
    assert!(is_locked(&b.lockouts.record_success(OTHER).await));
    assert_eq!(
        a.metrics.subject_lockouts.get() + b.metrics.subject_lockouts.get(),
        2
    );
}

#[tokio::test]
async fn expired_rows_are_purged_and_an_unreachable_database_fails_closed() {
    let pg = PgServer::start();
    let p = Policy {
        attempts: 3,
        window: Duration::from_secs(1),
        lock: Duration::from_secs(1),
        max_lock: Duration::ZERO,
    };
    let a = replica(&pg, p).await;
    // One subject locked, one with a failure: both expire within a second.
    for _ in 0..3 {
        a.lockouts.record_failure(SUBJECT).await.unwrap();
    }
    a.lockouts.record_failure("other").await.unwrap();
    assert_eq!(pg.psql("SELECT count(*) FROM facekey_lockouts"), "2");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The window slid past the failure: it no longer counts.
    for _ in 0..2 {
        assert_eq!(a.lockouts.record_failure("other").await.unwrap(), None);
    }
    let ledger = PgLedger::new(a._store.pool().clone());
    assert_eq!(ledger.purge_expired().await.unwrap(), 1, "the expired lock");
    assert_eq!(
        pg.psql("SELECT subject FROM facekey_lockouts"),
        "other",
        "a row with failures inside the window was purged"
    );

    // The database goes away: checks and counts are refused, never skipped.
    pg.stop();
    for r in [
        a.lockouts.check(SUBJECT).await,
        a.lockouts.record_failure(SUBJECT).await.map(|_| ()),
        a.lockouts.record_success(SUBJECT).await,
    ] {
        match r {
            Err(LockoutError::Store(StoreError::Unavailable(_))) => {}
            other => panic!("expected the ledger to be unavailable, got {other:?}"),
        }
    }
    let e =
        facekey_runtime::api::error::ApiError::from(a.lockouts.check(SUBJECT).await.unwrap_err());
    assert_eq!((e.status.as_u16(), e.code), (503, "store_unavailable"));
}

/// A key's writes can hold every connection of the store's pool (each waiting on its quota
/// lock); the lockout ledger has a pool of its own, so verifications still count on the shared
/// ledger and do not drop to the per-replica fallback (which lets an attacker through the
/// threshold once per replica).
#[tokio::test]
async fn writes_holding_every_store_connection_do_not_starve_the_ledger() {
    let pg = PgServer::start();
    let a = replica(&pg, policy(3, Duration::from_secs(60))).await;
    let store = &a._store;
    let mut held = Vec::new();
    let max = store.pool().options().get_max_connections();
    while store.pool().size() < max || store.pool().num_idle() > 0 {
        held.push(store.pool().acquire().await.unwrap());
    }
    assert_eq!(held.len() as u32, max, "the store's pool is exhausted");

    let metrics = Metrics::new().unwrap();
    let ledger = facekey_runtime::lockout::FallbackLedger::new(
        Arc::new(PgLedger::new(store.ledger_pool().clone())),
        metrics.clone(),
    );
    let lockouts = Lockouts::new(
        policy(3, Duration::from_secs(60)),
        Arc::new(ledger),
        metrics.clone(),
        None,
    );
    for _ in 0..2 {
        assert_eq!(lockouts.record_failure(SUBJECT).await.unwrap(), None);
    }
    assert!(lockouts.record_failure(SUBJECT).await.unwrap().is_some());
    assert_eq!(
        metrics.lockout_ledger_local.get(),
        0,
        "the ledger fell back to this replica's memory"
    );
    // Counted where every replica sees it.
    assert!(is_locked(&a.lockouts.check(SUBJECT).await));
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM facekey_lockouts WHERE subject = '{SUBJECT}' AND locked_until > now()"
        )),
        "1"
    );
    drop(held);
}

/// Locks in a row double on the shared ledger as in memory, whichever replica counts them, and a
/// success through either resets the streak.
#[tokio::test]
async fn locks_in_a_row_double_across_replicas() {
    let pg = PgServer::start();
    let p = Policy {
        attempts: 2,
        window: Duration::from_secs(60),
        lock: Duration::from_secs(1),
        max_lock: Duration::from_secs(30),
    };
    let a = replica(&pg, p).await;
    let b = replica(&pg, p).await;
    let lock_through = async |first: &Replica, second: &Replica| {
        assert_eq!(first.lockouts.record_failure(SUBJECT).await.unwrap(), None);
        let locked = second
            .lockouts
            .record_failure(SUBJECT)
            .await
            .unwrap()
            .expect("the second failure locks");
        tokio::time::sleep(locked.retry_after + Duration::from_millis(50)).await;
        locked.retry_after
    };
    let first = lock_through(&a, &b).await;
    let second = lock_through(&b, &a).await;
    let third = lock_through(&a, &a).await;
    assert!(first <= Duration::from_secs(1), "{first:?}");
    assert!(
        second > Duration::from_millis(1500) && second <= Duration::from_secs(2),
        "{second:?}"
    );
    assert!(
        third > Duration::from_millis(3500) && third <= Duration::from_secs(4),
        "{third:?}"
    );
    assert_eq!(
        pg.psql(&format!(
            "SELECT lock_streak FROM facekey_lockouts WHERE subject = '{SUBJECT}'"
        )),
        "3"
    );
    // A success through the other replica ends the streak.
    b.lockouts.record_success(SUBJECT).await.unwrap();
    let again = lock_through(&a, &b).await;
    assert!(again <= Duration::from_secs(1), "{again:?}");
    let _ = lock_through(&a, &b).await;
    // So does a quiet `max_lock` after the last lock, even while its row waits to be purged
    // (purges run at most once a minute, on a failure): moved into the past here.
    pg.psql(&format!(
        "UPDATE facekey_lockouts SET locked_until = now() - interval '31 s', \
           expires_at = now() - interval '1 s' WHERE subject = '{SUBJECT}'"
    ));
    let after_quiet = lock_through(&b, &a).await;
    assert!(after_quiet <= Duration::from_secs(1), "{after_quiet:?}");
}

/// Moves `subject`'s row `secs` into the past (its failures, lock and expiry), as if the
/// database's clock had moved on that long.
fn move_into_the_past(pg: &PgServer, subject: &str, secs: u32) {
    pg.psql(&format!(
        "UPDATE facekey_lockouts SET \
           failures = ARRAY(SELECT f - interval '{secs} s' FROM unnest(failures) AS f ORDER BY f), \
           locked_until = locked_until - interval '{secs} s', \
           expires_at = expires_at - interval '{secs} s' \
         WHERE subject = '{subject}'"
    ));
}

/// Failures below the threshold after a lock count through their window on the shared ledger,
/// but do not keep the lock's streak alive: `max_lock` after the lock ended the next lock is the
/// first of a new streak. Before, each failure kept the row (and with it the streak) a window
/// longer, so one failure every window doubled every next lock forever.
#[tokio::test]
async fn failures_below_the_threshold_do_not_keep_a_streak_past_max_lock() {
    let pg = PgServer::start();
    let p = Policy {
        attempts: 2,
        window: Duration::from_secs(900),
        lock: Duration::from_secs(100),
        max_lock: Duration::from_secs(200),
    };
    let a = replica(&pg, p).await;
    let streak = || {
        pg.psql(&format!(
            "SELECT lock_streak FROM facekey_lockouts WHERE subject = '{SUBJECT}'"
        ))
    };
    assert_eq!(a.lockouts.record_failure(SUBJECT).await.unwrap(), None);
    let first = a.lockouts.record_failure(SUBJECT).await.unwrap().unwrap();
    assert_eq!(first.retry_after, Duration::from_secs(100));
    // The lock ends at 100 s; its streak is remembered until 300 s. At 250 s one failure,
    // below the threshold, is counted; the streak is still remembered.
    move_into_the_past(&pg, SUBJECT, 100);
    move_into_the_past(&pg, SUBJECT, 150);
    assert_eq!(a.lockouts.record_failure(SUBJECT).await.unwrap(), None);
    assert_eq!(streak(), "1");
    // 350 s: 250 s after the lock ended, past `max_lock`. The failure at 250 s still counts
    // (inside its window), so this one locks — for the base lock, not the 200 s of a second
    // lock in a row.
    move_into_the_past(&pg, SUBJECT, 100);
    // Nor does an outage's copy of the locks remember the streak (it read the row's expiry,
    // which the failure at 250 s extended).
    let ledger = PgLedger::new(a._store.ledger_pool().clone()).remembering(p.max_lock);
    let copied = ledger.active_locks(10).await.unwrap();
    assert!(copied.iter().all(|l| l.subject != SUBJECT), "{copied:?}");
    let next = a.lockouts.record_failure(SUBJECT).await.unwrap().unwrap();
    assert_eq!(next.retry_after, Duration::from_secs(100));
    assert_eq!(streak(), "1");
}

/// A peer that dies inside a transaction (its node lost) keeps its row locks until PostgreSQL
/// notices, which takes hours by default. Failures of that subject wait `lock_timeout` (5 s),
/// not forever, and are then counted in this replica's memory; the waits give their connections
/// back, so other subjects still count on the shared ledger.
#[tokio::test]
async fn a_row_lock_held_by_a_stuck_peer_neither_hangs_nor_drains_the_ledger() {
    const OTHER: &str = "0b7e8d2a-5c1f-4e3b-8a9d-6f2e1c0b7a35";
    let pg = PgServer::start();
    let a = replica(&pg, policy(100, Duration::from_secs(60))).await;
    let metrics = Metrics::new().unwrap();
    let lockouts = Lockouts::new(
        policy(100, Duration::from_secs(60)),
        Arc::new(facekey_runtime::lockout::FallbackLedger::new(
            Arc::new(PgLedger::new(a._store.ledger_pool().clone())),
            metrics.clone(),
        )),
        metrics.clone(),
        None,
    );
    assert_eq!(lockouts.record_failure(SUBJECT).await.unwrap(), None);
    let mut stuck = pg.psql_spawn(&format!(
        "BEGIN; SELECT * FROM facekey_lockouts WHERE subject = '{SUBJECT}' FOR UPDATE; \
         SELECT pg_sleep(120);"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pg.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(120)%' AND state = 'active' AND pid <> pg_backend_pid()") != "1" {
        assert!(std::time::Instant::now() < deadline, "the lock holder never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More failures at once than the ledger has connections.
    let started = std::time::Instant::now();
    let results = futures::future::join_all((0..6).map(|_| lockouts.record_failure(SUBJECT))).await;
    let took = started.elapsed();
    for r in results {
        assert_eq!(r.unwrap(), None, "counted (in memory)");
    }
    assert!(
        took < Duration::from_secs(20),
        "failures waited {took:?} on a lock held by a stuck peer"
    );
    assert_eq!(
        metrics.lockout_ledger_local.get(),
        1,
        "counted locally meanwhile"
    );
    // Connections came back: another subject's failure reaches the shared ledger.
    assert_eq!(a.lockouts.record_failure(OTHER).await.unwrap(), None);
    assert_eq!(
        pg.psql(&format!(
            "SELECT count(*) FROM facekey_lockouts WHERE subject = '{OTHER}'"
        )),
        "1"
    );
    stuck.kill().unwrap();
    stuck.wait().unwrap();
}

/// The SQL that takes over a lock a replica took in memory during an outage: the lock then holds
/// for every replica, a longer one already there stays, a shorter one is lengthened, and an
/// administrator's release through any replica lifts it.
#[tokio::test]
async fn a_lock_handed_over_to_the_shared_ledger_holds_everywhere_and_releases() {
    const OTHER: &str = "7c2d9e1f-3b4a-4c5d-8e6f-0a1b2c3d4e5f";
    let pg = PgServer::start();
    let a = replica(&pg, policy(3, Duration::from_secs(60))).await;
    let b = replica(&pg, policy(3, Duration::from_secs(60))).await;
    let ledger = PgLedger::new(a._store.ledger_pool().clone());
    assert!(
        ledger
            .adopt(SUBJECT, Duration::from_secs(600), 2, Duration::ZERO)
            .await
            .unwrap()
    );
    assert!(is_locked(&b.lockouts.check(SUBJECT).await), "every replica");
    let left = ledger.locked_for(SUBJECT).await.unwrap().unwrap();
    assert!(left > Duration::from_secs(590), "{left:?}");
    // A shorter lock handed over later (another replica's) does not shorten it.
    ledger
        .adopt(SUBJECT, Duration::from_secs(30), 1, Duration::ZERO)
        .await
        .unwrap();
    assert!(ledger.locked_for(SUBJECT).await.unwrap().unwrap() > Duration::from_secs(590));
    // A subject with failures counted on the shared ledger is locked by the hand-over.
    assert_eq!(b.lockouts.record_failure(OTHER).await.unwrap(), None);
    ledger
        .adopt(OTHER, Duration::from_secs(120), 1, Duration::ZERO)
        .await
        .unwrap();
    let left = ledger.locked_for(OTHER).await.unwrap().unwrap();
    assert!(
        left > Duration::from_secs(110) && left <= Duration::from_secs(120),
        "{left:?}"
    );
    // The administrator's release through the other replica.
    assert!(b.lockouts.release(SUBJECT).await.unwrap().is_some());
    a.lockouts.check(SUBJECT).await.unwrap();
}

/// A lock taken in a replica's memory during an outage and handed over keeps its streak on the
/// shared ledger as long as that replica would have remembered it: the next lock after it is the
/// one after it in the streak. Before, the row was kept only as long as the lock, and the next
/// lock was the base one again.
#[tokio::test]
async fn a_handed_over_lock_keeps_its_streak_remembered() {
    let pg = PgServer::start();
    let p = Policy {
        attempts: 2,
        window: Duration::from_secs(900),
        lock: Duration::from_secs(1),
        max_lock: Duration::from_secs(60),
    };
    let a = replica(&pg, p).await;
    let ledger = PgLedger::new(a._store.ledger_pool().clone());
    ledger
        .adopt(SUBJECT, Duration::from_secs(1), 2, Duration::from_secs(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(a.lockouts.record_failure(SUBJECT).await.unwrap(), None);
    let locked = a.lockouts.record_failure(SUBJECT).await.unwrap().unwrap();
    assert!(
        locked.retry_after > Duration::from_secs(3) && locked.retry_after <= p.lock_for(3),
        "{locked:?}: the third lock in a row lasts {:?}",
        p.lock_for(3)
    );
}

/// The locks in force, as a replica copies them to hold through a database outage: every
/// subject locked now with its time left and streak, longest first, and not one whose failures
/// are below the threshold or whose lock was released.
#[tokio::test]
async fn active_locks_lists_the_locks_in_force() {
    const SHORT: &str = "1a2b3c4d-5e6f-4a1b-8c2d-3e4f5a6b7c8d";
    const COUNTING: &str = "2b3c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e";
    const RELEASED: &str = "3c4d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f";
    let pg = PgServer::start();
    let a = replica(&pg, policy(2, Duration::from_secs(60))).await;
    let ledger = PgLedger::new(a._store.ledger_pool().clone());
    for subject in [SHORT, RELEASED] {
        a.lockouts.record_failure(subject).await.unwrap();
        a.lockouts.record_failure(subject).await.unwrap();
    }
    a.lockouts.record_failure(COUNTING).await.unwrap();
    ledger
        .adopt(SUBJECT, Duration::from_secs(600), 3, Duration::ZERO)
        .await
        .unwrap();
    a.lockouts.release(RELEASED).await.unwrap();
    let locks = ledger.active_locks(100).await.unwrap();
    let subjects: Vec<&str> = locks.iter().map(|l| l.subject.as_str()).collect();
    assert_eq!(subjects, vec![SUBJECT, SHORT], "{locks:?}");
    assert!(locks[0].left > Duration::from_secs(590), "{locks:?}");
    assert!(
        locks[1].left > Duration::from_secs(50) && locks[1].left <= Duration::from_secs(60),
        "{locks:?}"
    );
    // With their streaks, so a copy passes a streak on when its lock ends in an outage.
    assert_eq!((locks[0].streak, locks[1].streak), (3, 1), "{locks:?}");
    // An ended lock whose streak is still remembered comes after them, with nothing left.
    const ENDED: &str = "4d5e6f7a-8b9c-4d4e-9f5a-6b7c8d9e0f1a";
    ledger
        .adopt(
            ENDED,
            Duration::from_millis(200),
            2,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let locks = ledger.active_locks(100).await.unwrap();
    let ended = locks.last().unwrap();
    assert_eq!(locks.len(), 3, "{locks:?}");
    assert_eq!(
        (ended.subject.as_str(), ended.left, ended.streak),
        (ENDED, Duration::ZERO, 2),
        "{locks:?}"
    );
    assert!(ended.remembered > Duration::from_secs(590), "{locks:?}");
    assert_eq!(ledger.active_locks(1).await.unwrap().len(), 1, "bounded");
}

/// An identification asks the shared ledger about all its candidates at once: the answer is
/// each candidate's lock in their order, whichever replica took it and however the id is
/// spelled, and no lock for a candidate below the threshold, released, or unknown.
#[tokio::test]
async fn the_locks_among_candidates_are_read_in_one_answer() {
    const COUNTING: &str = "2b3c4d5e-6f7a-4b2c-9d3e-4f5a6b7c8d9e";
    const RELEASED: &str = "3c4d5e6f-7a8b-4c3d-8e4f-5a6b7c8d9e0f";
    const UNKNOWN: &str = "5e6f7a8b-9c0d-4e5f-8a6b-7c8d9e0f1a2b";
    let pg = PgServer::start();
    let a = replica(&pg, policy(2, Duration::from_secs(60))).await;
    let b = replica(&pg, policy(2, Duration::from_secs(60))).await;
    for subject in [SUBJECT, RELEASED] {
        b.lockouts.record_failure(subject).await.unwrap();
        b.lockouts.record_failure(subject).await.unwrap();
    }
    a.lockouts.record_failure(COUNTING).await.unwrap();
    b.lockouts.release(RELEASED).await.unwrap();
    let upper = SUBJECT.to_uppercase();
    let left = a
        .lockouts
        .locked_among(&[COUNTING, &upper, RELEASED, UNKNOWN])
        .await
        .unwrap();
    assert_eq!(left.len(), 4);
    assert!(
        left[1].is_some_and(|d| d > Duration::from_secs(50) && d <= Duration::from_secs(60)),
        "{left:?}"
    );
    assert_eq!((left[0], left[2], left[3]), (None, None, None), "{left:?}");
    // As many answers as candidates, for the largest identification too.
    let many: Vec<String> = (0..100)
        .map(|i| format!("00000000-0000-4000-8000-{i:012}"))
        .chain([SUBJECT.to_owned()])
        .collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let left = a.lockouts.locked_among(&many).await.unwrap();
    assert_eq!(left.iter().filter(|l| l.is_some()).count(), 1);
    assert!(left[100].is_some());
}
