//! Shutdown drain as a sans-IO state machine.
//!
//! SIGTERM starts the drain: the appliance stops admitting new consults and
//! reports not-ready (so a load balancer sends new work elsewhere), lets the
//! running consults finish, and exits once none is left or the timeout has
//! passed, whichever comes first. Legs of running consults keep being
//! admitted while draining: a patient rejoining after a network change is
//! care, not new work.

use std::time::{Duration, Instant};

/// Where the appliance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainState {
    /// Serving and admitting.
    Running,
    /// Not admitting new consults; waiting for running ones to end.
    Draining {
        /// When the drain started.
        since: Instant,
        /// When it gives up waiting.
        deadline: Instant,
    },
    /// Ready to exit.
    Done,
}

/// What the driver should do after [`Drain::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainAction {
    /// Keep serving; poll again at the given time (or on the next event).
    Wait(Option<Instant>),
    /// Every consult ended: exit.
    ExitIdle,
    /// The timeout passed with consults still open: exit anyway.
    ExitTimeout {
        /// Consults still open.
        remaining: usize,
    },
}

/// The drain state machine.
#[derive(Debug, Clone)]
pub struct Drain {
    state: DrainState,
    timeout: Duration,
}

impl Drain {
    /// Running, with `timeout` as the longest drain.
    pub fn new(timeout: Duration) -> Self {
        Self {
            state: DrainState::Running,
            timeout,
        }
    }

    /// The current state.
    pub fn state(&self) -> DrainState {
        self.state
    }

    /// Whether new consults may be created.
    pub fn admits_new_consults(&self) -> bool {
        self.state == DrainState::Running
    }

    /// Whether `/readyz` should answer 200.
    pub fn ready(&self) -> bool {
        self.state == DrainState::Running
    }

    /// Starts draining at `now`; a second call keeps the first deadline.
    pub fn begin(&mut self, now: Instant) {
        if self.state == DrainState::Running {
            self.state = DrainState::Draining {
                since: now,
                deadline: now + self.timeout,
            };
        }
    }

    /// Decides, at `now` with `open_consults` still running.
    pub fn poll(&mut self, now: Instant, open_consults: usize) -> DrainAction {
        match self.state {
            DrainState::Running => DrainAction::Wait(None),
            DrainState::Done => DrainAction::ExitIdle,
            DrainState::Draining { deadline, .. } => {
                if open_consults == 0 {
                    self.state = DrainState::Done;
                    DrainAction::ExitIdle
                } else if now >= deadline {
                    self.state = DrainState::Done;
                    DrainAction::ExitTimeout {
                        remaining: open_consults,
                    }
                } else {
                    DrainAction::Wait(Some(deadline))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_admits_and_waits() {
        let mut d = Drain::new(Duration::from_secs(10));
        assert!(d.admits_new_consults() && d.ready());
        assert_eq!(d.poll(Instant::now(), 3), DrainAction::Wait(None));
    }

    #[test]
    fn drain_exits_when_consults_end() {
        let t0 = Instant::now();
        let mut d = Drain::new(Duration::from_secs(10));
        d.begin(t0);
        assert!(!d.admits_new_consults() && !d.ready());
        let deadline = t0 + Duration::from_secs(10);
        assert_eq!(d.poll(t0, 2), DrainAction::Wait(Some(deadline)));
        assert_eq!(
            d.poll(t0 + Duration::from_secs(3), 1),
            DrainAction::Wait(Some(deadline))
        );
        assert_eq!(
            d.poll(t0 + Duration::from_secs(4), 0),
            DrainAction::ExitIdle
        );
        assert_eq!(d.state(), DrainState::Done);
    }

    #[test]
    fn drain_exits_at_timeout_with_consults_open() {
        let t0 = Instant::now();
        let mut d = Drain::new(Duration::from_secs(10));
        d.begin(t0);
        assert_eq!(
            d.poll(t0 + Duration::from_secs(9), 2),
            DrainAction::Wait(Some(t0 + Duration::from_secs(10)))
        );
        assert_eq!(
            d.poll(t0 + Duration::from_secs(10), 2),
            DrainAction::ExitTimeout { remaining: 2 }
        );
    }

    #[test]
    fn second_sigterm_keeps_the_deadline() {
        let t0 = Instant::now();
        let mut d = Drain::new(Duration::from_secs(10));
        d.begin(t0);
        d.begin(t0 + Duration::from_secs(5));
        assert_eq!(
            d.poll(t0 + Duration::from_secs(10), 1),
            DrainAction::ExitTimeout { remaining: 1 }
        );
    }

    #[test]
    fn idle_drain_exits_at_once() {
        let t0 = Instant::now();
        let mut d = Drain::new(Duration::from_secs(10));
        d.begin(t0);
        assert_eq!(d.poll(t0, 0), DrainAction::ExitIdle);
    }
}
