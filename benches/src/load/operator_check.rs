//! Pauses and `--check-operators`: virtual desks pause with reason codes for random spells
//! (`--pause-every`, `--pause-mean`, `--pause-codes`), and the run keeps its own record of each
//! desk's time — logged in, available, on contacts, paused per code — from the replies it got
//! (the same precedence as the server: a contact in service counts as on contacts, also while
//! paused). After the run and the desks' logouts, that record per group is compared with the
//! server's operator report (`GetOperatorReport`) for the run's period. The server dates a change
//! when its handler runs, somewhere between the moment the run's request left and the moment its
//! reply came back; so from its own two timestamps of every change the run knows bounds within
//! which each of the server's figures must lie, and the check is that every figure lies within
//! them, give or take one tick of the server (`--tick-ms`). The run's own estimate (each change
//! dated when its request left) is printed beside, with the largest difference.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use smista_proto::v1 as pb;

use super::config::LoadConfig;
use super::connect::Pool;
use super::error::{rpc, LoadError};
use super::random::{draw_exp, stream_seed};

/// Now on the wall clock, Unix ms (the server stamps its records with its own; both run on one
/// machine in the checks).
pub(super) fn unix_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One group's time as a run or the server counts it, ms.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GroupTimes {
    /// The group.
    pub group: String,
    /// Logged in.
    pub logged_in_ms: i64,
    /// Available (with wrap-up: a run cannot see when the server's wrap-up ends).
    pub available_ms: i64,
    /// On contacts, every channel.
    pub on_contact_ms: i64,
    /// Paused, per reason code.
    pub paused_ms: BTreeMap<String, i64>,
}

/// `--check-operators`: this run's own record per group and the server's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct OperatorCheck {
    /// Per group, as this run recorded.
    pub mine: Vec<GroupTimes>,
    /// Per group, as the server's report says.
    pub report: Vec<GroupTimes>,
    /// Per group, the least each figure can be given the run's timestamps.
    pub low: Vec<GroupTimes>,
    /// Per group, the most each figure can be.
    pub high: Vec<GroupTimes>,
    /// The largest difference of any figure between `mine` and `report`, ms.
    pub max_difference_ms: i64,
    /// How far the report's figure furthest outside its bounds lies outside them, ms (0: all
    /// within).
    pub outside_ms: i64,
    /// The tolerance: one tick of the server (`--tick-ms`).
    pub tolerance_ms: u64,
    /// Whether every figure is within it.
    pub agrees: bool,
    /// Pauses the desks took.
    pub pauses: u64,
}

#[derive(Debug, Clone, Default)]
struct Desk {
    group: String,
    logged_in: bool,
    paused: Option<String>,
    in_service: u32,
    /// When the request of the last change left, and when its reply came.
    since: (i64, i64),
}

impl Desk {
    /// What the desk is doing, as the server's accounting would say: `None` logged out.
    fn activity(&self) -> Option<Activity> {
        if !self.logged_in {
            None
        } else if self.in_service > 0 {
            Some(Activity::OnContact)
        } else if let Some(code) = &self.paused {
            Some(Activity::Paused(code.clone()))
        } else {
            Some(Activity::Available)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Activity {
    Available,
    OnContact,
    Paused(String),
}

/// A change of a desk, as the run saw it.
#[derive(Debug, Clone)]
enum Step {
    Login(String),
    Logout,
    Pause(String),
    Available,
    Accepted,
    Ended,
}

/// A change with when its request left and when its reply came, Unix ms.
type Timed = (i64, i64, Step);

/// The run's own record of its desks' time: each desk's changes, dated when their requests
/// left. They are recorded when their replies arrive, which is not always in the order they
/// were made (a completion's reply may come after the next contact's acceptance, which the
/// server offered at the completion), so they are put in order of their dates before they are
/// counted.
#[derive(Debug, Default)]
pub(super) struct DeskClock {
    /// Per desk: its changes.
    steps: Mutex<BTreeMap<String, Vec<Timed>>>,
    pauses: std::sync::atomic::AtomicU64,
}

impl DeskClock {
    fn record(&self, op: &str, sent: i64, replied: i64, step: Step) {
        self.steps.lock().entry(op.to_owned()).or_default().push((sent, replied.max(sent), step));
    }

    pub(super) fn login(&self, op: &str, group: &str, sent: i64, replied: i64) {
        self.record(op, sent, replied, Step::Login(group.to_owned()));
    }

    pub(super) fn logout(&self, op: &str, sent: i64, replied: i64) {
        self.record(op, sent, replied, Step::Logout);
    }

    pub(super) fn pause(&self, op: &str, code: &str, sent: i64, replied: i64) {
        self.pauses.fetch_add(1, Ordering::Relaxed);
        self.record(op, sent, replied, Step::Pause(code.to_owned()));
    }

    pub(super) fn available(&self, op: &str, sent: i64, replied: i64) {
        self.record(op, sent, replied, Step::Available);
    }

    pub(super) fn accepted(&self, op: &str, sent: i64, replied: i64) {
        self.record(op, sent, replied, Step::Accepted);
    }

    pub(super) fn ended(&self, op: &str, sent: i64, replied: i64) {
        self.record(op, sent, replied, Step::Ended);
    }

    /// Each group's time: the run's estimate (each change when its request left), and the least
    /// and the most it can be (a spell from one change to the next lasts at least from the
    /// first's reply to the second's request, at most from the first's request to the second's
    /// reply).
    fn totals(&self) -> [BTreeMap<String, GroupTimes>; 3] {
        let mut out: [BTreeMap<String, GroupTimes>; 3] = Default::default();
        for steps in self.steps.lock().values() {
            let mut steps = steps.clone();
            // By date; a stable sort keeps the order of arrival among equal dates.
            steps.sort_by_key(|(sent, _, _)| *sent);
            let mut d = Desk::default();
            for (sent, replied, step) in steps {
                if let Some(a) = d.activity() {
                    let (s0, r0) = d.since;
                    let spans = [(sent - s0).max(0), (sent - r0).max(0), (replied - s0).max(0)];
                    for (totals, ms) in out.iter_mut().zip(spans) {
                        let g = totals
                            .entry(d.group.clone())
                            .or_insert_with(|| GroupTimes { group: d.group.clone(), ..GroupTimes::default() });
                        g.logged_in_ms += ms;
                        match &a {
                            Activity::Available => g.available_ms += ms,
                            Activity::OnContact => g.on_contact_ms += ms,
                            Activity::Paused(code) => *g.paused_ms.entry(code.clone()).or_default() += ms,
                        }
                    }
                }
                d.since = (sent, replied);
                match step {
                    Step::Login(group) => {
                        d = Desk { group, logged_in: true, since: (sent, replied), ..Desk::default() };
                    }
                    Step::Logout => {
                        d.logged_in = false;
                        d.in_service = 0;
                    }
                    Step::Pause(code) => d.paused = Some(code),
                    Step::Available => d.paused = None,
                    Step::Accepted => d.in_service += 1,
                    Step::Ended => d.in_service = d.in_service.saturating_sub(1),
                }
            }
        }
        out
    }
}

/// A desk's pauses until `stop`: after a drawn wait it pauses with a drawn code for a drawn
/// spell, then asks to be available again; each change recorded with when its request left and
/// when its reply came.
pub(super) async fn pauser(
    cfg: LoadConfig,
    pool: Pool,
    op: String,
    i: u64,
    tracker: Arc<super::tracker::Tracker>,
    stop: Arc<AtomicBool>,
) {
    let clock = &tracker.desks;
    let codes: Vec<String> =
        cfg.pause_codes.split(',').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect();
    if cfg.pause_every <= 0.0 || codes.is_empty() {
        return;
    }
    let mut rng = SmallRng::seed_from_u64(stream_seed(cfg.seed, 1_000_000 + i));
    let mut ops = pool.desk(&op);
    // Sleeps in short steps, so that the run's end never waits for a long spell.
    async fn sleep(secs: f64, stop: &AtomicBool) {
        let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
        while tokio::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(20).min(until - tokio::time::Instant::now())).await;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        sleep(draw_exp(&mut rng, cfg.pause_every), &stop).await;
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let code = codes[rng.random_range(0..codes.len())].clone();
        // Recorded as the request leaves, when the server makes the change (its reply waits for
        // the ledger's commit).
        let sent = unix_now_ms();
        let r = ops
            .set_state(pb::SetStateRequest {
                operator_id: op.clone(),
                status: pb::OperatorStatus::Paused as i32,
                reason: code.clone(),
            })
            .await;
        if r.is_err() {
            continue;
        }
        clock.pause(&op, &code, sent, unix_now_ms());
        sleep(draw_exp(&mut rng, cfg.pause_mean), &stop).await;
        let sent = unix_now_ms();
        let r = ops
            .set_state(pb::SetStateRequest {
                operator_id: op.clone(),
                status: pb::OperatorStatus::Available as i32,
                reason: String::new(),
            })
            .await;
        if r.is_ok() {
            clock.available(&op, sent, unix_now_ms());
        }
    }
}

/// Reads the server's operator report for `[from, to)` (every page) and compares it with the
/// run's own record, group by group.
pub(super) async fn check_operators(
    pool: &Pool,
    clock: &DeskClock,
    from: i64,
    to: i64,
    tolerance_ms: u64,
) -> Result<OperatorCheck, LoadError> {
    let mut admin = pool.admin();
    let mut report: BTreeMap<String, GroupTimes> = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = admin
            .get_operator_report(pb::GetOperatorReportRequest {
                from_unix_ms: u64::try_from(from).unwrap_or(0),
                to_unix_ms: u64::try_from(to).unwrap_or(0),
                interval_minutes: 60,
                page_size: 5000,
                page_token: token,
                ..Default::default()
            })
            .await
            .map_err(rpc("operator report"))?
            .into_inner();
        for r in page.groups {
            let g = report
                .entry(r.group.clone())
                .or_insert_with(|| GroupTimes { group: r.group.clone(), ..GroupTimes::default() });
            let ms = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
            g.logged_in_ms += ms(r.logged_in_ms);
            g.available_ms += ms(r.available_ms + r.wrap_up_ms);
            g.on_contact_ms += ms(r.on_contact_ms.values().sum());
            for (code, t) in r.paused_ms {
                *g.paused_ms.entry(code).or_default() += ms(t);
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let [mine, low, high] = clock.totals();
    let (mut max_difference_ms, mut outside_ms) = (0i64, 0i64);
    let groups: std::collections::BTreeSet<&String> = mine.keys().chain(report.keys()).collect();
    let empty = GroupTimes::default();
    // Every figure of a group: (name, value) in a fixed order.
    fn figures(g: &GroupTimes, codes: &std::collections::BTreeSet<&String>) -> Vec<i64> {
        let mut v = vec![g.logged_in_ms, g.available_ms, g.on_contact_ms];
        v.extend(codes.iter().map(|c| g.paused_ms.get(*c).copied().unwrap_or(0)));
        v
    }
    for g in groups {
        let [m, l, h, r] = [&mine, &low, &high, &report].map(|x| x.get(g).unwrap_or(&empty));
        let codes: std::collections::BTreeSet<&String> = m.paused_ms.keys().chain(r.paused_ms.keys()).collect();
        let (m, l, h, r) = (figures(m, &codes), figures(l, &codes), figures(h, &codes), figures(r, &codes));
        for i in 0..r.len() {
            max_difference_ms = max_difference_ms.max((m[i] - r[i]).abs());
            outside_ms = outside_ms.max(l[i] - r[i]).max(r[i] - h[i]);
        }
    }
    Ok(OperatorCheck {
        agrees: outside_ms <= i64::try_from(tolerance_ms).unwrap_or(i64::MAX),
        mine: mine.into_values().collect(),
        report: report.into_values().collect(),
        low: low.into_values().collect(),
        high: high.into_values().collect(),
        max_difference_ms,
        outside_ms,
        tolerance_ms,
        pauses: clock.pauses.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_in_service_counts_as_on_contacts_also_while_paused() {
        let c = DeskClock::default();
        c.login("d", "internal", 0, 0);
        c.accepted("d", 100, 100);
        c.pause("d", "break", 150, 150);
        c.ended("d", 300, 300);
        c.available("d", 1_000, 1_000);
        c.logout("d", 1_200, 1_200);
        let t = c.totals()[0]["internal"].clone();
        assert_eq!((t.logged_in_ms, t.available_ms, t.on_contact_ms), (1_200, 300, 200));
        assert_eq!(t.paused_ms["break"], 700);
    }

    #[test]
    fn changes_count_in_the_order_they_were_made_not_as_their_replies_came() {
        let c = DeskClock::default();
        c.login("d", "supplier", 0, 2);
        c.accepted("d", 100, 102);
        // The next contact, offered at the completion, is accepted before the completion's
        // reply arrives.
        c.accepted("d", 305, 306);
        c.ended("d", 300, 308);
        c.ended("d", 500, 503);
        c.logout("d", 600, 601);
        let [t, low, high] = c.totals();
        let t = &t["supplier"];
        assert_eq!((t.logged_in_ms, t.available_ms, t.on_contact_ms), (600, 205, 395));
        // At least from each reply to the next request, at most from each request to the next reply.
        assert_eq!((low["supplier"].on_contact_ms, high["supplier"].on_contact_ms), (198 + 194, 208 + 198));
        assert_eq!((low["supplier"].logged_in_ms, high["supplier"].logged_in_ms), (587, 615));
    }
}
