//! Aligned text tables for terminals and Markdown tables for documents:
//! the one table renderer of attnflow.

/// Text for terminals or Markdown for documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Aligned columns.
    Text,
    /// A Markdown table.
    Markdown,
}

/// Lays out `rows` under `headers`; columns after the first `left` are
/// right-aligned (numbers).
pub fn table(headers: &[&str], rows: &[Vec<String>], left: usize, style: Style) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (column, cell) in row.iter().enumerate() {
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let pad = |text: &str, column: usize| {
        let fill = widths[column].saturating_sub(text.chars().count());
        if column < left {
            format!("{text}{}", " ".repeat(fill))
        } else {
            format!("{}{text}", " ".repeat(fill))
        }
    };
    let mut out = String::new();
    match style {
        Style::Text => {
            let line = |cells: Vec<String>| cells.join("  ").trim_end().to_string();
            out.push_str(&line(
                headers.iter().enumerate().map(|(c, h)| pad(h, c)).collect(),
            ));
            out.push('\n');
            out.push_str(&line(
                widths.iter().map(|width| "-".repeat(*width)).collect(),
            ));
            out.push('\n');
            for row in rows {
                out.push_str(&line(
                    row.iter()
                        .enumerate()
                        .map(|(c, cell)| pad(cell, c))
                        .collect(),
                ));
                out.push('\n');
            }
        }
        Style::Markdown => {
            let escape = |text: &str| text.replace('|', "\\|").replace('*', "\\*");
            out.push_str(&format!(
                "| {} |\n",
                headers
                    .iter()
                    .map(|header| escape(header))
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
            out.push_str(&format!(
                "|{}|\n",
                (0..headers.len())
                    .map(|column| if column < left { "---" } else { "---:" })
                    .collect::<Vec<_>>()
                    .join("|")
            ));
            for row in rows {
                out.push_str(&format!(
                    "| {} |\n",
                    row.iter()
                        .map(|cell| escape(cell))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_aligns_left_then_right() {
        let rows = vec![
            vec!["alpha".to_string(), "1".to_string()],
            vec!["b".to_string(), "1234".to_string()],
        ];
        assert_eq!(
            table(&["name", "n"], &rows, 1, Style::Text),
            "name      n\n-----  ----\nalpha     1\nb      1234\n"
        );
    }

    #[test]
    fn markdown_escapes_pipes_and_marks_number_columns() {
        let rows = vec![vec!["a|b".to_string(), "2".to_string()]];
        assert_eq!(
            table(&["name", "n"], &rows, 1, Style::Markdown),
            "| name | n |\n|---|---:|\n| a\\|b | 2 |\n"
        );
    }

    #[test]
    fn wide_characters_count_once() {
        let rows = vec![vec!["“é”".to_string()]];
        assert_eq!(table(&["x"], &rows, 1, Style::Text), "x\n---\n“é”\n");
    }
}
