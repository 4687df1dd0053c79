//! RTP timestamp arithmetic for switches between input streams.

use std::time::Duration;

/// Largest advance a switch may add: a quarter of the 32-bit timestamp
/// space, so that after any pause the new timestamp still compares as newer
/// (RFC 1982 serial arithmetic) than the last one the subscriber saw.
pub(crate) const MAX_SWITCH_ADVANCE: u32 = 1 << 30;

/// Whether timestamp `a` is later than `b` in serial-number order.
pub(crate) fn newer(a: u32, b: u32) -> bool {
    let distance = a.wrapping_sub(b);
    distance != 0 && distance < 0x8000_0000
}

/// Whole ticks of a `clock_rate` Hz media clock in `elapsed`, at least one
/// (two frames must never share a timestamp) and at most
/// [`MAX_SWITCH_ADVANCE`].
pub(crate) fn switch_advance(elapsed: Duration, clock_rate: u32) -> u32 {
    let ticks = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
    let clamped = ticks.clamp(1, u128::from(MAX_SWITCH_ADVANCE));
    u32::try_from(clamped).unwrap_or(MAX_SWITCH_ADVANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_follows_serial_order_across_the_wrap() {
        assert!(newer(1, 0));
        assert!(newer(0, u32::MAX));
        assert!(!newer(0, 1));
        assert!(!newer(5, 5));
        assert!(!newer(0x8000_0000, 0));
    }

    #[test]
    fn advance_converts_wall_time_at_the_clock_rate() {
        assert_eq!(switch_advance(Duration::from_millis(100), 90_000), 9_000);
        assert_eq!(switch_advance(Duration::from_millis(20), 48_000), 960);
    }

    #[test]
    fn advance_is_at_least_one_tick() {
        assert_eq!(switch_advance(Duration::ZERO, 90_000), 1);
        assert_eq!(switch_advance(Duration::from_nanos(500), 90_000), 1);
    }

    #[test]
    fn advance_is_bounded_so_the_result_still_compares_newer() {
        let huge = Duration::from_secs(365 * 24 * 3600);
        assert_eq!(switch_advance(huge, 90_000), MAX_SWITCH_ADVANCE);
        assert!(newer(7u32.wrapping_add(MAX_SWITCH_ADVANCE), 7));
    }
}
