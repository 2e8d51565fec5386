//! Every acknowledged reply is a promise, first try or retry, on SQLite and on PostgreSQL.
//!
//! A client whose call timed out does not know whether it took effect, so the proto tells it to
//! send the same request again. The engine answers such a retry from its idempotent path, which
//! changes nothing and reports nothing; the server once answered it OK at once, before the
//! first try's write was durable (an active cut off from PostgreSQL acknowledged retried accepts
//! and completions in a millisecond; after a takeover the accepted contact went to a second
//! operator, the completion was never recorded). Here the ledger's writes are held up by a lock
//! another connection holds on the database, and every reply is checked against it:
//! - an accept, its retry, a completion, its retry, a cancellation and a diversion at offer are
//!   not acknowledged while their records cannot be written; each is, once they can;
//! - what was acknowledged is in the ledger, exactly once, with the contact's real arrival;
//! - a contact in service across a restart keeps its arrival in its end record, and that record
//!   outlives the retention purge (it once had arrival 0, and the next start's purge deleted it).

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use smista_proto::v1 as pb;
use smista_server::config::Config;
use support::{assigned, backends, drop_backend, ledger_config, login, temp_dir, voice, Server};
use tonic::Code;

/// How long a client waits for one reply here before it calls the attempt a time-out.
const DEADLINE: Duration = Duration::from_millis(400);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A client attempt with [`DEADLINE`]: the reply, or DEADLINE_EXCEEDED when none came in time
/// (the client gives up and its stream is reset, as a real client's is).
async fn attempt<T>(
    call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, Code> {
    match tokio::time::timeout(DEADLINE, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(s.code()),
        Err(_) => Err(Code::DeadlineExceeded),
    }
}

/// Another connection to the server's database holding a lock that stops every ledger write
/// (SQLite: an exclusive transaction; PostgreSQL: the record tables locked against writes),
/// until [`WriteLock::release`]. Reads go on.
enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    async fn take(data: &std::path::Path, pg: Option<&str>) -> WriteLock {
        use sqlx::Connection;
        match pg {
            None => {
                let path = data.join("ledger.db");
                let opts =
                    sqlx::sqlite::SqliteConnectOptions::new().filename(&path).busy_timeout(Duration::from_secs(10));
                let mut c = sqlx::SqliteConnection::connect_with(&opts).await.expect("open the ledger file");
                sqlx::query("BEGIN EXCLUSIVE").execute(&mut c).await.expect("exclusive lock");
                WriteLock::Sqlite(c)
            }
            Some(schema) => {
                let url = std::env::var("SMISTA_TEST_PG_URL").expect("pg url");
                let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
                sqlx::query("BEGIN").execute(&mut c).await.expect("begin");
                sqlx::query(&format!(
                    "LOCK TABLE {schema}.holds, {schema}.cost_records, {schema}.contact_ends IN EXCLUSIVE MODE"
                ))
                .execute(&mut c)
                .await
                .expect("lock the record tables");
                WriteLock::Postgres(c)
            }
        }
    }

    async fn release(self) {
        match self {
            WriteLock::Sqlite(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.expect("commit");
            }
            WriteLock::Postgres(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.expect("commit");
            }
        }
    }
}

/// Retries `call` (a new attempt each time, as the proto tells clients) until it answers;
/// fails the test after 50 attempts.
macro_rules! until_answered {
    ($call:expr) => {{
        let mut n = 0;
        loop {
            match attempt($call).await {
                Err(Code::DeadlineExceeded | Code::Unavailable) if n < 50 => n += 1,
                other => break other,
            }
        }
    }};
}

/// How the ledger says `contact` ended, read with a connection of the test's own.
async fn end_of(cfg: &Config, contact: &str) -> Option<smista_ledger::ContactEnd> {
    let target = cfg.ledger.target(&cfg.server.data_dir).expect("a ledger");
    let l = smista_ledger::Ledger::connect(&target).await.expect("open the ledger");
    let e = l.end_of(contact).await.expect("read");
    l.close().await;
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_first_try_or_retry_says_more_than_the_ledger_holds() {
    for pg in backends("acked") {
        let data = temp_dir("acked");
        let cfg = ledger_config(&data, pg.as_deref());
        let srv = Server::start_in(cfg.clone()).await;
        let mut o = srv.operators().await;
        let mut c = srv.contacts().await;
        // A budgeted operator (accepting writes a hold) and internal staff (a service record).
        for (op, group) in [("op-201", "supplier-a"), ("op-101", "internal")] {
            o.login(login(op, group, &[("naspi", 6)])).await.expect("login");
            let id = format!("x-{op}");
            let arrived = unix_ms() - 40_000;
            let mut offer = voice(&id, "naspi");
            offer.arrived_unix_ms = arrived;
            let d = c.offer_contact(offer).await.expect("offer").into_inner();
            assert_eq!(assigned(&d).as_deref(), Some(op), "{d:?}");
            let accept = pb::AcceptOfferRequest { operator_id: op.into(), contact_id: id.clone() };

            let lock = WriteLock::take(&data, pg.as_deref()).await;
            assert_eq!(attempt(o.accept_offer(accept.clone())).await.err(), Some(Code::DeadlineExceeded));
            // The retry the proto prescribes: the engine has the contact in service already, but
            // the hold (or service record) is not durable, so no OK yet.
            for _ in 0..2 {
                let r = attempt(o.accept_offer(accept.clone())).await;
                assert_eq!(
                    r.err(),
                    Some(Code::DeadlineExceeded),
                    "{op}: a retried accept acknowledged before its record is durable"
                );
            }
            lock.release().await;
            until_answered!(o.accept_offer(accept.clone())).expect("acknowledged once durable");

            let complete = pb::CompleteContactRequest {
                operator_id: op.into(),
                contact_id: id.clone(),
                wrap_up_ms: 0,
                ended_unix_ms: 0,
            };
            let lock = WriteLock::take(&data, pg.as_deref()).await;
            assert_eq!(attempt(o.complete_contact(complete.clone())).await.err(), Some(Code::DeadlineExceeded));
            for _ in 0..2 {
                let r = attempt(o.complete_contact(complete.clone())).await;
                assert_eq!(
                    r.err(),
                    Some(Code::DeadlineExceeded),
                    "{op}: a retried completion acknowledged before its record is durable"
                );
            }
            lock.release().await;
            until_answered!(o.complete_contact(complete.clone())).expect("acknowledged once durable");
            let end = end_of(&cfg, &id).await.expect("the acknowledged completion is in the ledger");
            assert_eq!(end.outcome, smista_core::Outcome::Completed);
            assert_eq!(end.operator, op);
            assert_eq!(end.detail.arrived_unix_ms, i64::try_from(arrived).expect("ms"), "the real arrival");
            o.logout(pb::LogoutRequest { operator_id: op.into(), force: true }).await.expect("logout");
        }

        // A diversion ends the contact: the platform never offers it again, so "diverted" is
        // answered only once its end record is durable. Nobody serves `isee` now.
        let lock = WriteLock::take(&data, pg.as_deref()).await;
        assert_eq!(attempt(c.offer_contact(voice("d-1", "isee"))).await.err(), Some(Code::DeadlineExceeded));
        let r = attempt(c.offer_contact(voice("d-1", "isee"))).await;
        assert_eq!(
            r.err(),
            Some(Code::DeadlineExceeded),
            "a repeated offer answered DIVERTED before the end is durable"
        );
        lock.release().await;
        let d = until_answered!(c.offer_contact(voice("d-1", "isee"))).expect("answered");
        assert!(matches!(d.decision, Some(pb::offer_contact_response::Decision::Diverted(_))), "{d:?}");
        let end = end_of(&cfg, "d-1").await.expect("the diversion is in the ledger");
        assert_eq!(end.outcome, smista_core::Outcome::Diverted);

        // A cancellation (the caller hung up while queued) likewise.
        o.login(login("op-102", "internal", &[("isee", 5)])).await.expect("login");
        let d = c.offer_contact(voice("b-1", "isee")).await.expect("offer").into_inner();
        assert_eq!(assigned(&d).as_deref(), Some("op-102"), "{d:?}");
        let d = c.offer_contact(voice("q-1", "isee")).await.expect("offer").into_inner();
        assert!(matches!(d.decision, Some(pb::offer_contact_response::Decision::Queued(_))), "{d:?}");
        let cancel = pb::CancelContactRequest { contact_id: "q-1".into() };
        let lock = WriteLock::take(&data, pg.as_deref()).await;
        assert_eq!(attempt(c.cancel_contact(cancel.clone())).await.err(), Some(Code::DeadlineExceeded));
        let r = attempt(c.cancel_contact(cancel.clone())).await;
        assert_eq!(r.err(), Some(Code::DeadlineExceeded), "a retried cancel acknowledged before the end is durable");
        lock.release().await;
        let r = until_answered!(c.cancel_contact(cancel.clone())).expect("answered");
        assert_eq!(r.outcome, pb::Outcome::Abandoned as i32);
        assert_eq!(end_of(&cfg, "q-1").await.expect("in the ledger").outcome, smista_core::Outcome::Abandoned);

        srv.stop().await;
        drop_backend(pg.as_deref()).await;
    }
}

/// A contact in service across a restart once got an end record with arrival 0; the retention
/// purge each start runs (records older than 400 days) then deleted it, and a replayed
/// completion answered NOT_FOUND. Budgeted (a hold) and internal staff (a service record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_in_service_across_a_restart_keeps_its_arrival_and_its_record_outlives_the_purge() {
    for pg in backends("arrival") {
        let data = temp_dir("arrival");
        let cfg = ledger_config(&data, pg.as_deref());
        for (op, group) in [("op-201", "supplier-a"), ("op-101", "internal")] {
            let id = format!("rp-{op}");
            let arrived = unix_ms() - 65_000;
            let srv = Server::start_in(cfg.clone()).await;
            let mut o = srv.operators().await;
            o.login(login(op, group, &[("naspi", 6)])).await.expect("login");
            let mut offer = voice(&id, "naspi");
            offer.arrived_unix_ms = arrived;
            let d = srv.contacts().await.offer_contact(offer).await.expect("offer").into_inner();
            assert_eq!(assigned(&d).as_deref(), Some(op), "{d:?}");
            o.accept_offer(pb::AcceptOfferRequest { operator_id: op.into(), contact_id: id.clone() })
                .await
                .expect("accept");
            srv.stop().await;

            let srv = Server::start_in(cfg.clone()).await;
            let mut o = srv.operators().await;
            let l = o.login(login(op, group, &[("naspi", 6)])).await.expect("login again").into_inner();
            assert_eq!(l.in_service, vec![id.clone()]);
            let complete = pb::CompleteContactRequest {
                operator_id: op.into(),
                contact_id: id.clone(),
                wrap_up_ms: 0,
                ended_unix_ms: 0,
            };
            o.complete_contact(complete.clone()).await.expect("completed after the restart");
            srv.stop().await;

            let end = end_of(&cfg, &id).await.expect("recorded");
            assert_eq!(
                end.detail.arrived_unix_ms,
                i64::try_from(arrived).expect("ms"),
                "{op}: the arrival from before the restart"
            );
            // The retention purge as a start runs it: nothing that ended just now goes.
            let target = cfg.ledger.target(&data).expect("ledger");
            let l = smista_ledger::Ledger::connect(&target).await.expect("open");
            let cutoff = i64::try_from(unix_ms()).expect("ms") - 400 * 86_400_000;
            l.purge_history(cutoff, 10_000).await.expect("purge");
            l.close().await;
            assert!(end_of(&cfg, &id).await.is_some(), "{op}: the completion survived the purge");

            // And the replay the proto allows still reads back how it ended.
            let srv = Server::start_in(cfg.clone()).await;
            let mut o = srv.operators().await;
            let r = o.complete_contact(complete).await.expect("a replayed completion is answered from the record");
            assert!(r.into_inner().handle_ms > 0);
            srv.stop().await;
        }
        drop_backend(pg.as_deref()).await;
    }
}
