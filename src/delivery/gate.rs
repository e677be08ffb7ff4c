//! The gate each delivery passes before it is sent to a puppet, per (corp,
//! kfId):
//!
//! - **turns**: wake-ups (events that coalesce) go one at a time, since each
//!   tells the puppet to pull everything up to its token and a second one in
//!   flight only races the first; messages get `per_puppet` turns;
//! - **the wake-up gap**: two wake-ups are at least `gap` apart (each makes
//!   the puppet call WeCom's rate-limited `sync_msg`);
//! - **newest wins**: a fresh wake-up still waiting steps aside as soon as a
//!   newer one of its kfId is handed over; the newest always goes.
//!
//! Keys are (corp, kfId): another corp's events for the same kfId never
//! displace these. Entries nobody uses are pruned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

type Key = (String, String);

struct KfState {
    wake_up_turn: Arc<Semaphore>,
    message_turns: Arc<Semaphore>,
    last_wake_up: Option<Instant>,
    /// Id of the newest fresh wake-up handed over. It stays after that one
    /// went: an older one that reaches the gate later (its route lookup was
    /// slower) must still step aside, not go after it.
    newest: watch::Sender<Option<String>>,
}

/// What waiting at the gate came to.
#[derive(Debug)]
pub enum Passage {
    /// Send now; the turn is held until this is dropped.
    Go(Turn),
    /// A newer wake-up of the kfId arrived meanwhile and goes instead.
    SteppedAside { by: String },
    /// The gate is closing (never in normal operation): nothing was sent.
    Closed,
}

/// A held turn.
#[derive(Debug)]
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

pub struct KfGate {
    per_puppet: usize,
    gap: Duration,
    kfs: Mutex<HashMap<Key, KfState>>,
}

impl KfGate {
    pub fn new(per_puppet: usize, gap: Duration) -> Self {
        Self {
            per_puppet,
            gap,
            kfs: Mutex::new(HashMap::new()),
        }
    }

    fn with_state<T>(&self, corp: &str, kf: &str, f: impl FnOnce(&mut KfState) -> T) -> T {
        let mut kfs = self.kfs.lock().unwrap_or_else(|p| p.into_inner());
        let state = kfs
            .entry((corp.to_owned(), kf.to_owned()))
            .or_insert_with(|| KfState {
                wake_up_turn: Arc::new(Semaphore::new(1)),
                message_turns: Arc::new(Semaphore::new(self.per_puppet)),
                last_wake_up: None,
                newest: watch::channel(None).0,
            });
        f(state)
    }

    /// A fresh wake-up was handed over: from now on it is the one that goes.
    pub fn note_newest(&self, corp: &str, kf: &str, id: &str) {
        self.with_state(corp, kf, |s| s.newest.send_replace(Some(id.to_owned())));
    }

    /// Wait for this kfId's turn (and, for a wake-up, the gap). A fresh
    /// wake-up (`may_step_aside`) gives way to a newer one noted meanwhile.
    pub async fn pass(
        &self,
        corp: &str,
        kf: &str,
        id: &str,
        wake_up: bool,
        may_step_aside: bool,
    ) -> Passage {
        let (turns, mut newest) = self.with_state(corp, kf, |s| {
            let turns = if wake_up {
                &s.wake_up_turn
            } else {
                &s.message_turns
            };
            (turns.clone(), s.newest.subscribe())
        });
        let newer = async {
            if may_step_aside {
                if let Ok(by) = newest
                    .wait_for(|n| n.as_deref().is_some_and(|n| n != id))
                    .await
                {
                    return by.clone().unwrap_or_default();
                }
            }
            std::future::pending().await
        };
        tokio::pin!(newer);
        // `biased`: one already displaced steps aside even when a turn is
        // free (an unbiased select picks a ready branch at random, and a
        // displaced wake-up could then go after the newer one).
        let permit = tokio::select! {
            biased;
            by = &mut newer => return Passage::SteppedAside { by },
            permit = turns.acquire_owned() => permit,
        };
        let Ok(permit) = permit else {
            return Passage::Closed;
        };
        if wake_up {
            while let Some(wait) = self.gap_left(corp, kf) {
                tokio::select! {
                    biased;
                    by = &mut newer => return Passage::SteppedAside { by },
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            self.with_state(corp, kf, |s| s.last_wake_up = Some(Instant::now()));
        }
        Passage::Go(Turn { _permit: permit })
    }

    fn gap_left(&self, corp: &str, kf: &str) -> Option<Duration> {
        let last = self.with_state(corp, kf, |s| s.last_wake_up)?;
        let next = last + self.gap;
        let now = Instant::now();
        (next > now).then(|| next - now)
    }

    /// Forget the kfIds nobody holds, waits for or must keep a gap for.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut kfs = self.kfs.lock().unwrap_or_else(|p| p.into_inner());
        kfs.retain(|_, s| {
            let in_use = Arc::strong_count(&s.wake_up_turn) > 1
                || Arc::strong_count(&s.message_turns) > 1
                || s.newest.receiver_count() > 0;
            let gap_running = s.last_wake_up.is_some_and(|at| now < at + self.gap);
            in_use || gap_running
        });
    }

    /// How many (corp, kfId) entries are kept.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.kfs.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    const GAP: Duration = Duration::from_millis(50);

    /// Whether `f` is still waiting after everything runnable ran.
    async fn still_waiting<F: Future>(f: &mut std::pin::Pin<Box<F>>) -> bool {
        tokio::select! {
            biased;
            _ = f.as_mut() => false,
            _ = tokio::task::yield_now() => true,
        }
    }

    fn go(p: Passage) -> Turn {
        match p {
            Passage::Go(turn) => turn,
            other => panic!("expected a turn, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wake_ups_of_one_kf_go_one_at_a_time_and_a_gap_apart() {
        let gate = KfGate::new(8, GAP);
        let first = go(gate.pass("ww", "wk", "W1", true, false).await);
        let started = Instant::now();
        let mut second = Box::pin(gate.pass("ww", "wk", "W2", true, false));
        assert!(still_waiting(&mut second).await, "one at a time");
        // Another kfId, and the same kfId of another corp, are not held up.
        let _other = go(gate.pass("ww", "wk-other", "X", true, false).await);
        let _other_corp = go(gate.pass("ww2", "wk", "Y", true, false).await);
        drop(first);
        let _second = go(second.await);
        assert!(
            started.elapsed() >= GAP,
            "the gap is kept: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn messages_get_several_turns_and_no_gap() {
        let gate = KfGate::new(2, GAP);
        let started = Instant::now();
        let a = go(gate.pass("ww", "wk", "M1", false, false).await);
        let _b = go(gate.pass("ww", "wk", "M2", false, false).await);
        assert_eq!(started.elapsed(), Duration::ZERO);
        let mut third = Box::pin(gate.pass("ww", "wk", "M3", false, false));
        assert!(still_waiting(&mut third).await);
        drop(a);
        go(third.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_fresh_wake_up_steps_aside_for_a_newer_one() {
        let gate = KfGate::new(8, GAP);
        let held = go(gate.pass("ww", "wk", "W0", true, true).await);
        gate.note_newest("ww", "wk", "W1");
        let mut w1 = Box::pin(gate.pass("ww", "wk", "W1", true, true));
        assert!(still_waiting(&mut w1).await);
        gate.note_newest("ww", "wk", "W2");
        match w1.await {
            Passage::SteppedAside { by } => assert_eq!(by, "W2"),
            other => panic!("{other:?}"),
        }
        // A claimed (not fresh) wake-up does not step aside; the newest goes.
        let mut claimed = Box::pin(gate.pass("ww", "wk", "OLD", true, false));
        assert!(still_waiting(&mut claimed).await);
        drop(held);
        drop(go(claimed.await));
        go(gate.pass("ww", "wk", "W2", true, true).await);
    }

    /// A wake-up that reaches the gate already displaced (it was slower to
    /// get here than the newer one) steps aside even with a turn free.
    #[tokio::test(start_paused = true)]
    async fn one_already_displaced_never_takes_a_free_turn() {
        for _ in 0..64 {
            let gate = KfGate::new(8, GAP);
            gate.note_newest("ww", "wk", "W1");
            gate.note_newest("ww", "wk", "W2");
            match gate.pass("ww", "wk", "W1", true, true).await {
                Passage::SteppedAside { by } => assert_eq!(by, "W2"),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A corp that signs wake-ups naming another corp's kfId (anyone can
    /// register a corp of their own) cannot make that kfId's wait give way.
    #[tokio::test(start_paused = true)]
    async fn another_corps_wake_up_for_the_same_kf_id_displaces_nothing() {
        let gate = KfGate::new(8, GAP);
        let held = go(gate.pass("ww", "wk", "W0", true, true).await);
        gate.note_newest("ww", "wk", "W1");
        let mut w1 = Box::pin(gate.pass("ww", "wk", "W1", true, true));
        assert!(still_waiting(&mut w1).await);
        gate.note_newest("ww-intruder", "wk", "EVIL");
        assert!(still_waiting(&mut w1).await, "not displaced");
        drop(held);
        go(w1.await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_one_reaching_the_gate_after_the_newest_went_steps_aside() {
        let gate = KfGate::new(8, GAP);
        gate.note_newest("ww", "wk", "W0");
        gate.note_newest("ww", "wk", "W1");
        drop(go(gate.pass("ww", "wk", "W1", true, true).await));
        match gate.pass("ww", "wk", "W0", true, true).await {
            Passage::SteppedAside { by } => assert_eq!(by, "W1"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unused_kf_ids_are_pruned_once_their_gap_ran_out() {
        let gate = KfGate::new(8, GAP);
        for i in 0..100 {
            drop(go(gate
                .pass("ww", &format!("wk{i}"), "W", true, false)
                .await));
        }
        let held = go(gate.pass("ww", "wk-held", "M", false, false).await);
        gate.prune();
        assert_eq!(gate.tracked(), 101, "gaps still running");
        tokio::time::advance(GAP).await;
        gate.prune();
        assert_eq!(gate.tracked(), 1, "only the one holding a turn");
        drop(held);
        gate.prune();
        assert_eq!(gate.tracked(), 0);
    }
}
