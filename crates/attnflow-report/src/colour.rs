//! The colour scale of heatmaps: viridis, perceptually uniform and readable
//! by people with the common colour-vision deficiencies.

/// Viridis at nine evenly spaced stops (from matplotlib's table); values in
/// between are interpolated linearly.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
];

/// The colour of `fraction` in `[0, 1]` (clamped) on the viridis scale.
pub fn viridis(fraction: f64) -> (u8, u8, u8) {
    let fraction = if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    };
    let position = fraction * (VIRIDIS.len() - 1) as f64;
    let index = (position.floor() as usize).min(VIRIDIS.len() - 2);
    let weight = position - index as f64;
    let (low, high) = (VIRIDIS[index], VIRIDIS[index + 1]);
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * weight).round() as u8;
    (mix(low.0, high.0), mix(low.1, high.1), mix(low.2, high.2))
}

/// The nine viridis stops as CSS hex colours, for the HTML report's script
/// (which interpolates the same way).
pub(crate) fn viridis_stops_css() -> String {
    let stops: Vec<String> = VIRIDIS
        .iter()
        .map(|(r, g, b)| format!("[{r},{g},{b}]"))
        .collect();
    format!("[{}]", stops.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_and_clamping() {
        assert_eq!(viridis(0.0), VIRIDIS[0]);
        assert_eq!(viridis(1.0), VIRIDIS[8]);
        assert_eq!(viridis(-3.0), VIRIDIS[0]);
        assert_eq!(viridis(7.0), VIRIDIS[8]);
        assert_eq!(viridis(0.5), VIRIDIS[4]);
        assert_eq!(viridis(f64::NAN), VIRIDIS[0]);
    }
}
