//! The capacity model: how many consults a link carries.
//!
//! The theoretical figure divides the link rate by the bitrate one consult
//! puts on the link. The practical ceiling keeps a fraction of it as
//! headroom for keyframe bursts, retransmissions, RTCP and signalling, and
//! the per-packet CPU costs the bitrate alone does not show.

/// Fraction of the theoretical capacity planned for by default.
pub const DEFAULT_PRACTICAL_FRACTION: f64 = 0.5;

/// Consults a link can carry at most: `link_bps` divided by
/// `bitrate_per_stream_bps × streams_per_consult`, where the streams are
/// the ones the appliance sends on this link for one consult.
///
/// Degenerate input (no link, a zero bitrate or no streams) gives `0.0`
/// rather than an unbounded figure, so a planner never reads it as room.
pub fn theoretical_capacity(
    link_bps: u64,
    bitrate_per_stream_bps: u64,
    streams_per_consult: u32,
) -> f64 {
    let per_consult = bitrate_per_stream_bps as f64 * f64::from(streams_per_consult);
    if link_bps == 0 || per_consult <= 0.0 {
        return 0.0;
    }
    link_bps as f64 / per_consult
}

/// The capacity to plan for: `theoretical × fraction`, with the fraction
/// clamped to `0..=1` (a NaN fraction counts as 0) and a negative or NaN
/// theoretical figure counting as 0.
pub fn practical_ceiling(theoretical: f64, fraction: f64) -> f64 {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    if theoretical.is_nan() || theoretical <= 0.0 {
        return 0.0;
    }
    theoretical * fraction
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_gigabit_of_two_and_a_half_megabit_streams() {
        // 10 Gb/s, 2.5 Mb/s video+audio per stream, 4 streams sent per consult.
        let theoretical = theoretical_capacity(10_000_000_000, 2_500_000, 4);
        assert!((theoretical - 1000.0).abs() < 1e-9);
        let practical = practical_ceiling(theoretical, DEFAULT_PRACTICAL_FRACTION);
        assert!((practical - 500.0).abs() < 1e-9);
        assert!((practical_ceiling(theoretical, 0.8) - 800.0).abs() < 1e-9);
    }

    #[test]
    fn degenerate_input_gives_no_capacity() {
        assert_eq!(theoretical_capacity(0, 2_500_000, 4), 0.0);
        assert_eq!(theoretical_capacity(10_000_000_000, 0, 4), 0.0);
        assert_eq!(theoretical_capacity(10_000_000_000, 2_500_000, 0), 0.0);
        assert_eq!(practical_ceiling(f64::NAN, 0.5), 0.0);
        assert_eq!(practical_ceiling(-3.0, 0.5), 0.0);
    }

    #[test]
    fn fraction_is_clamped() {
        assert_eq!(practical_ceiling(100.0, 1.5), 100.0);
        assert_eq!(practical_ceiling(100.0, -0.5), 0.0);
        assert_eq!(practical_ceiling(100.0, f64::NAN), 0.0);
    }
}
