//! The embedded font: figures render identically on a machine with no
//! fonts installed.
//!
//! DejaVu Sans (Bitstream Vera licence, see `assets/DejaVu-LICENSE.txt`) is
//! compiled into the binary and registered with plotters' `ab_glyph` text
//! renderer under the family names plotters asks for.

use std::sync::OnceLock;

use plotters::style::FontStyle;

/// DejaVu Sans, from Debian's `fonts-dejavu-core` 2.37.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// The family name figures use.
pub(crate) const FAMILY: &str = "sans-serif";

/// Registers the embedded font once per process; later calls return the
/// first outcome.
pub(crate) fn ensure_registered() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                plotters::style::register_font(FAMILY, style, DEJAVU_SANS)
                    .map_err(|_| "the embedded DejaVu Sans font does not parse".to_string())?;
            }
            Ok(())
        })
        .clone()
}
