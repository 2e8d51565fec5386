//! Operator state: one packed atomic word per operator, changed only by compare-and-swap.
//!
//! The word holds the status, the contacts in hand per channel, the login generation and an epoch
//! bumped on every status change (so a stale read can never win a CAS: no ABA). Claiming capacity
//! for a contact is a single CAS that succeeds only if the operator is available, not in wrap-up or
//! paused, and has room on that channel — so two voice contacts can never land on one operator,
//! whatever the interleaving.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::model::{Channel, OperatorStatus};
use crate::time::Millis;

const STATUS_BITS: u64 = 0b11;
const LOAD_SHIFT: u32 = 8;
const LOAD_MASK: u64 = 0xF;
const CAP_SHIFT: u32 = 24; // 4 x 4 bits of capacity
const GEN_SHIFT: u32 = 40; // 8 bits of login generation
const GEN_MASK: u64 = 0xFF;
const EPOCH_SHIFT: u32 = 48; // 16 bits of epoch

/// A decoded operator word.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word(u64);

impl std::fmt::Debug for Word {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} load={:?} cap={:?} gen={}",
            self.status(),
            Channel::ALL.map(|c| self.load(c)),
            Channel::ALL.map(|c| self.cap(c)),
            self.generation()
        )
    }
}

impl Word {
    pub(crate) fn status(self) -> OperatorStatus {
        match self.0 & STATUS_BITS {
            0 => OperatorStatus::LoggedOut,
            1 => OperatorStatus::Available,
            2 => OperatorStatus::Paused,
            _ => OperatorStatus::WrapUp,
        }
    }
    pub(crate) fn load(self, ch: Channel) -> u8 {
        ((self.0 >> (LOAD_SHIFT + 4 * ch.index() as u32)) & LOAD_MASK) as u8
    }
    pub(crate) fn cap(self, ch: Channel) -> u8 {
        ((self.0 >> (CAP_SHIFT + 4 * ch.index() as u32)) & LOAD_MASK) as u8
    }
    pub(crate) fn generation(self) -> u8 {
        ((self.0 >> GEN_SHIFT) & GEN_MASK) as u8
    }
    pub(crate) fn total_load(self) -> u8 {
        Channel::ALL.iter().map(|c| self.load(*c)).sum()
    }
    pub(crate) fn total_cap(self) -> u8 {
        Channel::ALL.iter().map(|c| self.cap(*c)).sum()
    }
    fn exclusive_busy(self) -> bool {
        Channel::ALL.iter().any(|c| c.is_exclusive() && self.load(*c) > 0)
    }
    /// Room for one more contact on `ch`, ignoring status.
    pub(crate) fn has_room(self, ch: Channel) -> bool {
        let cap = self.cap(ch);
        if cap == 0 || self.load(ch) >= cap {
            return false;
        }
        if ch.is_exclusive() {
            self.total_load() == 0
        } else {
            !self.exclusive_busy()
        }
    }
    fn with_status(self, s: OperatorStatus) -> Word {
        let code = match s {
            OperatorStatus::LoggedOut => 0,
            OperatorStatus::Available => 1,
            OperatorStatus::Paused => 2,
            OperatorStatus::WrapUp => 3,
        };
        let epoch = ((self.0 >> EPOCH_SHIFT) + 1) & 0xFFFF;
        Word((self.0 & !STATUS_BITS & !(0xFFFF << EPOCH_SHIFT)) | code | (epoch << EPOCH_SHIFT))
    }
    fn with_load(self, ch: Channel, load: u8) -> Word {
        let shift = LOAD_SHIFT + 4 * ch.index() as u32;
        Word((self.0 & !(LOAD_MASK << shift)) | ((u64::from(load) & LOAD_MASK) << shift))
    }
    fn fresh_session(self, caps: [u8; 4]) -> Word {
        let gen = (u64::from(self.generation()) + 1) & GEN_MASK;
        let epoch = self.0 & (0xFFFF << EPOCH_SHIFT);
        let mut w = epoch | (gen << GEN_SHIFT);
        for c in Channel::ALL {
            w |= (u64::from(caps[c.index()]) & LOAD_MASK) << (CAP_SHIFT + 4 * c.index() as u32);
        }
        Word(w).with_status(OperatorStatus::Available)
    }
}

/// Static facts of one login session, read when building events and snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) id: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) budget: Option<Arc<str>>,
    pub(crate) session_id: String,
    pub(crate) gen: u8,
    /// Queues served, with this operator's skill margin on each.
    pub(crate) queues: Vec<(u32, i8)>,
    /// Skill name -> level, sorted by name.
    pub(crate) skills: Vec<(String, u8)>,
    /// Capacity per channel (`Channel::index`).
    pub(crate) caps: [u8; 4],
}

/// Contacts an operator holds (offered or in service), for logout and invariant checks.
#[derive(Debug, Default)]
pub(crate) struct Held {
    pub(crate) contacts: Vec<Arc<str>>,
}

/// One operator's slot. A new login of the same id bumps the generation so late events of an
/// earlier session cannot touch the new one. Once every slot has been handed out, the slot of an
/// operator who logged out is reused for a new id (`owner` changes under its lock).
///
/// Aligned to 128 bytes (two cache lines, the unit the adjacent-line prefetcher pulls in): the
/// slots sit side by side in one array, and unaligned, two operators' words shared a line, so
/// two cores serving different operators wrote to the same line.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Slot {
    word: AtomicU64,
    /// When the operator last became free (longest-idle ordering).
    free_since: AtomicU64,
    /// When the current wrap-up ends.
    wrap_until: AtomicU64,
    /// When the status last changed (snapshots).
    status_since: AtomicU64,
    pub(crate) session: Mutex<Option<Arc<Session>>>,
    /// The operator id the slot belongs to (`None`: free). Held while a session starts.
    pub(crate) owner: Mutex<Option<Arc<str>>>,
    pub(crate) pause_reason: Mutex<String>,
    pub(crate) held: Mutex<Held>,
    /// Until when (engine ms) the operator is kept for an appointment: no ordinary offers, only
    /// contacts pinned to them.
    pub(crate) reserved_until: AtomicU64,
    /// Contacts completed in this session (the fewest-contacts strategy).
    completed: AtomicU64,
    /// Talk time of the contacts completed in this session, ms (the least-talk-time strategy).
    talk_ms: AtomicU64,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            word: AtomicU64::new(0),
            free_since: AtomicU64::new(0),
            wrap_until: AtomicU64::new(0),
            status_since: AtomicU64::new(0),
            session: Mutex::new(None),
            owner: Mutex::new(None),
            pause_reason: Mutex::new(String::new()),
            held: Mutex::new(Held::default()),
            reserved_until: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            talk_ms: AtomicU64::new(0),
        }
    }
}

/// Result of a status change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: OperatorStatus,
    pub(crate) to: OperatorStatus,
}

impl Slot {
    pub(crate) fn word(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    pub(crate) fn free_since(&self) -> u64 {
        self.free_since.load(Ordering::Relaxed)
    }

    /// Counts a contact completed in this session after `talk_ms` of conversation.
    pub(crate) fn count_completed(&self, talk_ms: u64) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.talk_ms.fetch_add(talk_ms, Ordering::Relaxed);
    }

    /// Contacts completed and their talk time (ms) in this session.
    pub(crate) fn completed(&self) -> (u64, u64) {
        (self.completed.load(Ordering::Relaxed), self.talk_ms.load(Ordering::Relaxed))
    }

    pub(crate) fn status_since(&self) -> u64 {
        self.status_since.load(Ordering::Relaxed)
    }

    pub(crate) fn wrap_until(&self) -> Millis {
        Millis(self.wrap_until.load(Ordering::Acquire))
    }

    fn cas(&self, old: Word, new: Word) -> bool {
        self.word.compare_exchange(old.0, new.0, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Starts a new session with these capacities; returns the new generation. Fails if logged in.
    pub(crate) fn start_session(&self, caps: [u8; 4], now: Millis) -> Option<u8> {
        loop {
            let w = self.word();
            if w.status() != OperatorStatus::LoggedOut || w.total_load() != 0 {
                return None;
            }
            let n = w.fresh_session(caps);
            // A new session starts without the previous one's wrap-up.
            self.wrap_until.store(0, Ordering::Release);
            if self.cas(w, n) {
                self.free_since.store(now.0, Ordering::Relaxed);
                self.status_since.store(now.0, Ordering::Relaxed);
                self.completed.store(0, Ordering::Relaxed);
                self.talk_ms.store(0, Ordering::Relaxed);
                return Some(n.generation());
            }
        }
    }

    /// Replaces the channel capacities of session `gen`, keeping status and load. `None` if the
    /// session ended; `Some(false)`, changing nothing, if a channel holds more contacts than its
    /// new capacity (or an exclusive channel would sit beside others).
    pub(crate) fn set_caps(&self, gen: u8, caps: [u8; 4]) -> Option<bool> {
        loop {
            let w = self.word();
            if w.generation() != gen || w.status() == OperatorStatus::LoggedOut {
                return None;
            }
            if Channel::ALL.iter().any(|c| w.load(*c) > caps[c.index()]) {
                return Some(false);
            }
            let mut n = w.0 & !(0xFFFF << CAP_SHIFT);
            for c in Channel::ALL {
                n |= (u64::from(caps[c.index()]) & LOAD_MASK) << (CAP_SHIFT + 4 * c.index() as u32);
            }
            if self.cas(w, Word(n)) {
                return Some(true);
            }
        }
    }

    /// Whether the operator can take a contact on `ch`: available with room. A wrap-up ends only
    /// through [`Slot::transition`] (the engine's tick), which then serves waiting contacts first;
    /// were it to end lazily here, a new arrival could take the operator ahead of them.
    pub(crate) fn can_take(&self, w: Word, ch: Channel) -> bool {
        w.status() == OperatorStatus::Available && w.has_room(ch)
    }

    /// Claims one unit of `ch` capacity for session `gen`. The single place where an operator gets
    /// work: fails unless available, same session, and room on the channel.
    pub(crate) fn try_claim(&self, gen: u8, ch: Channel) -> bool {
        loop {
            let w = self.word();
            if w.generation() != gen || !self.can_take(w, ch) {
                return false;
            }
            if self.cas(w, w.with_load(ch, w.load(ch) + 1)) {
                return true;
            }
        }
    }

    /// Gives back one unit of `ch` capacity of session `gen` (a claim that did not become an
    /// offer, or a contact that ended). Returns false when there was nothing to release.
    pub(crate) fn release(&self, gen: u8, ch: Channel, now: Millis) -> bool {
        loop {
            let w = self.word();
            if w.generation() != gen || w.load(ch) == 0 {
                return false;
            }
            let n = w.with_load(ch, w.load(ch) - 1);
            if self.cas(w, n) {
                if n.total_load() == 0 {
                    self.free_since.store(now.0, Ordering::Relaxed);
                }
                return true;
            }
        }
    }

    /// Moves session `gen` to `to` if the current status is one of `from`. For `WrapUp`, sets the
    /// wrap-up end first.
    pub(crate) fn transition(
        &self,
        gen: u8,
        from: &[OperatorStatus],
        to: OperatorStatus,
        wrap_until: Option<Millis>,
        now: Millis,
    ) -> Option<Transition> {
        loop {
            let w = self.word();
            if w.generation() != gen || !from.contains(&w.status()) {
                return None;
            }
            if let Some(u) = wrap_until {
                self.wrap_until.store(u.0, Ordering::Release);
            }
            let n = w.with_status(to);
            if self.cas(w, n) {
                self.status_since.store(now.0, Ordering::Relaxed);
                if to == OperatorStatus::Available && n.total_load() == 0 {
                    self.free_since.store(now.0, Ordering::Relaxed);
                }
                return Some(Transition { from: w.status(), to });
            }
        }
    }

    /// The status as seen by supervisors (a wrap-up lasts until the tick that ends it).
    pub(crate) fn visible_status(&self) -> OperatorStatus {
        self.word().status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(voice: u8, chat: u8) -> [u8; 4] {
        [voice, 0, 0, chat]
    }

    #[test]
    fn voice_is_exclusive_and_single() {
        let s = Slot::default();
        let g = s.start_session(caps(1, 3), Millis(0)).expect("login");
        assert!(s.try_claim(g, Channel::Voice));
        assert!(!s.try_claim(g, Channel::Voice), "second voice");
        assert!(!s.try_claim(g, Channel::Chat), "chat during voice");
        assert!(s.release(g, Channel::Voice, Millis(2)));
        assert!(s.try_claim(g, Channel::Chat));
        assert!(!s.try_claim(g, Channel::Voice), "voice during chat");
        assert!(s.try_claim(g, Channel::Chat));
        assert!(s.try_claim(g, Channel::Chat));
        assert!(!s.try_claim(g, Channel::Chat), "fourth chat");
    }

    #[test]
    fn paused_and_wrap_up_refuse_claims() {
        let s = Slot::default();
        let g = s.start_session(caps(1, 0), Millis(0)).expect("login");
        s.transition(g, &[OperatorStatus::Available], OperatorStatus::Paused, None, Millis(1)).expect("pause");
        assert!(!s.try_claim(g, Channel::Voice));
        s.transition(g, &[OperatorStatus::Paused], OperatorStatus::WrapUp, Some(Millis(10)), Millis(2)).expect("wrap");
        assert!(!s.try_claim(g, Channel::Voice), "during wrap-up");
        assert!(!s.try_claim(g, Channel::Voice), "a wrap-up ends by transition only");
        s.transition(g, &[OperatorStatus::WrapUp], OperatorStatus::Available, None, Millis(10)).expect("end");
        assert!(s.try_claim(g, Channel::Voice));
    }

    #[test]
    fn stale_generation_cannot_claim_or_release() {
        let s = Slot::default();
        let g = s.start_session(caps(1, 0), Millis(0)).expect("login");
        s.transition(g, &[OperatorStatus::Available], OperatorStatus::LoggedOut, None, Millis(1)).expect("logout");
        let g2 = s.start_session(caps(1, 0), Millis(2)).expect("relogin");
        assert_ne!(g, g2);
        assert!(!s.try_claim(g, Channel::Voice));
        assert!(s.try_claim(g2, Channel::Voice));
        assert!(!s.release(g, Channel::Voice, Millis(3)));
        assert_eq!(s.word().load(Channel::Voice), 1);
    }

    #[test]
    fn concurrent_claims_never_exceed_capacity() {
        let s = Arc::new(Slot::default());
        let g = s.start_session(caps(1, 0), Millis(0)).expect("login");
        let wins = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                let wins = wins.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if s.try_claim(g, Channel::Voice) {
                            wins.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(s.word().load(Channel::Voice), 1);
                            assert!(s.release(g, Channel::Voice, Millis(1)));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert!(wins.load(Ordering::SeqCst) > 0);
        assert_eq!(s.word().load(Channel::Voice), 0);
    }
}

/// One bit per operator slot, set and cleared with single atomic operations: the tick's list of
/// operators that may be able to work (available or in wrap-up, with room), so that it visits
/// those rather than every slot. Set whenever an operator frees up; cleared lazily by the tick
/// when it finds the operator busy, paused or gone (clearing first, then re-checking, so a
/// concurrent set is never lost).
#[derive(Debug)]
pub(crate) struct SlotBits {
    words: Box<[AtomicU64]>,
}

impl SlotBits {
    pub(crate) fn new(slots: usize) -> SlotBits {
        SlotBits { words: (0..slots.div_ceil(64)).map(|_| AtomicU64::new(0)).collect() }
    }

    pub(crate) fn set(&self, i: u32) {
        let (w, b) = (i as usize / 64, i % 64);
        if let Some(word) = self.words.get(w) {
            // Most frees find the bit set already: a load first spares the cache line a write.
            if word.load(Ordering::Relaxed) & (1 << b) == 0 {
                word.fetch_or(1 << b, Ordering::AcqRel);
            }
        }
    }

    pub(crate) fn clear(&self, i: u32) {
        let (w, b) = (i as usize / 64, i % 64);
        if let Some(word) = self.words.get(w) {
            word.fetch_and(!(1 << b), Ordering::AcqRel);
        }
    }

    /// The slots whose bit is set now, among the first `n`.
    pub(crate) fn set_slots(&self, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        for (wi, word) in self.words.iter().enumerate().take(n.div_ceil(64)) {
            let mut v = word.load(Ordering::Acquire);
            while v != 0 {
                let b = v.trailing_zeros();
                v &= v - 1;
                let i = wi * 64 + b as usize;
                if i < n {
                    out.push(i as u32);
                }
            }
        }
        out
    }
}
