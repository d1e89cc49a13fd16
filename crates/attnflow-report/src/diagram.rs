//! State diagrams of Markov chains, drawn as SVG without Graphviz: the
//! pipeline report's workflow section and the web app's workflow page.

use std::collections::BTreeMap;

use crate::html::escape_html;

/// A Markov chain's state diagram (§5.2): states laid out in rows by their
/// distance from the first state, every transition with a positive
/// probability drawn as an arrow labelled with it, absorbing states shaded.
/// `probabilities` is `states.len()` square; state names are escaped.
pub fn state_diagram_svg(
    states: &[String],
    probabilities: &[Vec<f64>],
    absorbing: &[String],
) -> String {
    let n = states.len();
    let mut depth = vec![usize::MAX; n];
    if n > 0 {
        depth[0] = 0;
        let mut frontier = vec![0];
        while let Some(from) = frontier.pop() {
            for to in 0..n {
                if probabilities[from][to] > 0.0 && depth[to] == usize::MAX {
                    depth[to] = depth[from] + 1;
                    frontier.insert(0, to);
                }
            }
        }
    }
    let mut columns: BTreeMap<usize, usize> = BTreeMap::new();
    let mut position = vec![(0.0, 0.0); n];
    for index in 0..n {
        let row = if depth[index] == usize::MAX {
            n
        } else {
            depth[index]
        };
        let column = columns.entry(row).or_insert(0);
        position[index] = (90.0 + 170.0 * *column as f64, 40.0 + 80.0 * row as f64);
        *column += 1;
    }
    let width = 90.0 + 170.0 * columns.values().max().copied().unwrap_or(1) as f64;
    let height = 40.0 + 80.0 * (columns.keys().max().copied().unwrap_or(0) + 1) as f64;
    let escape = escape_html;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>"
    );
    for from in 0..n {
        for to in 0..n {
            let probability = probabilities[from][to];
            if probability <= 0.0 {
                continue;
            }
            let (x1, y1) = position[from];
            let (x2, y2) = position[to];
            let (mx, my) = (
                (x1 + x2) / 2.0 + (y2 - y1) * 0.15,
                (y1 + y2) / 2.0 - (x2 - x1) * 0.15,
            );
            svg.push_str(&format!(
                "<path d=\"M{x1:.0},{:.0} Q{mx:.0},{my:.0} {x2:.0},{:.0}\" fill=\"none\" stroke=\"#777\" marker-end=\"url(#arrow)\"/>\
                 <text x=\"{mx:.0}\" y=\"{my:.0}\" fill=\"#26215c\">{probability:.2}</text>",
                y1 + 12.0,
                y2 - 14.0
            ));
        }
    }
    for (index, state) in states.iter().enumerate() {
        let (x, y) = position[index];
        let fill = if absorbing.contains(state) {
            "#d9d4ff"
        } else {
            "#ffffff"
        };
        svg.push_str(&format!(
            "<rect x=\"{:.0}\" y=\"{:.0}\" width=\"140\" height=\"26\" rx=\"6\" fill=\"{fill}\" stroke=\"#26215c\"/>\
             <text x=\"{x:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
            x - 70.0,
            y - 13.0,
            y + 4.0,
            escape(state)
        ));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_every_positive_transition_and_escapes_state_names() {
        let states = vec!["Start".to_string(), "<Done & \"x\">".to_string()];
        let svg = state_diagram_svg(&states, &[vec![0.25, 0.75], vec![0.0, 1.0]], &states[1..]);
        assert_eq!(
            svg.matches("marker-end=").count(),
            3,
            "one arrow per positive transition"
        );
        assert!(svg.contains("0.75") && svg.contains("0.25"));
        assert!(svg.contains("&lt;Done &amp; &quot;x&quot;&gt;"));
        assert!(!svg.contains("<Done"));
        assert_eq!(
            svg.matches("#d9d4ff").count(),
            1,
            "one absorbing state shaded"
        );
    }
}
