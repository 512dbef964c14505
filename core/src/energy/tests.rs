//! Tests of the energy model.

use std::time::Duration;

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn wake_energy_matches_the_papers_single_packet_totals() {
    // Promotion plus tail. The paper reports 12.76 J for one packet on LTE and 0.04 J on
    // Wi-Fi.
    let lte = RadioParams::LTE.wake_joules();
    assert!(close(lte, 1.2107 * 0.2601 + 1.060 * 11.576));
    assert!((12.5..12.8).contains(&lte), "{lte}");
    let wifi = RadioParams::WIFI.wake_joules();
    assert!((0.035..0.045).contains(&wifi), "{wifi}");
    assert_eq!(RadioParams::WIRED.wake_joules(), 0.0);

    assert_eq!(Radio::Lte.params(), RadioParams::LTE);
    assert_eq!(Radio::Wifi.params(), RadioParams::WIFI);
    assert_eq!(Radio::Wired.params(), RadioParams::WIRED);

    // Nonsense is clamped: NaN counts as zero, a power as at most a megawatt, a phase as
    // at most an hour.
    let silly = RadioParams {
        promotion_mw: f64::NAN,
        tail_mw: f64::INFINITY,
        tail: Duration::MAX,
        ..RadioParams::LTE
    };
    assert!(close(silly.wake_joules(), 1e9 * 3600.0 / 1e3));
}
