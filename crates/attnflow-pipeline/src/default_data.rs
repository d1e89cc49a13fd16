//! The built-in dataset of the default pipeline: reverse-task records, plus
//! a few deliberately broken ones so that the quality check has something to
//! quarantine (figure 3's "invalid -> error handling" path).

/// The symbols of the default task.
pub const SYMBOLS: [&str; 10] = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];

/// Tokens per sequence.
pub const LENGTH: usize = 8;

/// The broken records mixed into the default dataset, each with the reason
/// the quality check must give. Kept in one place so tests can assert that
/// exactly these land in quarantine.
pub const BROKEN: &[(&str, &str)] = &[
    (
        "7,a b c d e f g h,h g f e d c b a",
        "id 7 appears twice (unique)",
    ),
    (
        "x12,a b c d e f g h,h g f e d c b a",
        "id is not an integer",
    ),
    (
        "100001,a b c d e f g,g f e d c b a",
        "input has 7 tokens (min_length)",
    ),
    (
        "100002,a b c d e f g z,z g f e d c b a",
        "token z is outside the alphabet (one_of)",
    ),
    ("100003,a b c d e f g h,", "target is missing (required)"),
    ("100004,a b c d e f g h", "a column is missing"),
    (
        "100005,\"a b c d e f g h,h g f e d c b a",
        "unterminated quote",
    ),
];

/// Generates the default CSV: a header, `rows` valid records from a seeded
/// generator, and the [`BROKEN`] records spread through the file.
pub fn reverse_csv(rows: usize, seed: u64) -> String {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut csv = String::from("id,input,target\n");
    let spacing = rows / (BROKEN.len() - 1).max(1);
    let mut broken = BROKEN.iter();
    for id in 1..=rows {
        let input: Vec<&str> = (0..LENGTH)
            .map(|_| SYMBOLS[next() % SYMBOLS.len()])
            .collect();
        let target: Vec<&str> = input.iter().rev().copied().collect();
        csv.push_str(&format!("{id},{},{}\n", input.join(" "), target.join(" ")));
        // The unterminated quote swallows the rest of the file, so it goes last.
        if id % spacing == 0 && broken.len() > 1 {
            if let Some((line, _)) = broken.next() {
                csv.push_str(line);
                csv.push('\n');
            }
        }
    }
    for (line, _) in broken {
        csv.push_str(line);
        csv.push('\n');
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broken_record_is_in_the_file_once_and_valid_rows_reverse() {
        let csv = reverse_csv(600, 7);
        for (line, _) in BROKEN {
            assert_eq!(csv.lines().filter(|l| l == line).count(), 1, "{line}");
        }
        assert!(csv.trim_end().ends_with(BROKEN.last().unwrap().0));
        let valid = csv
            .lines()
            .skip(1)
            .filter(|line| !BROKEN.iter().any(|(b, _)| b == line))
            .collect::<Vec<_>>();
        assert_eq!(valid.len(), 600);
        for line in valid {
            let fields: Vec<&str> = line.split(',').collect();
            let reversed: Vec<&str> = fields[1].split(' ').rev().collect();
            assert_eq!(reversed.join(" "), fields[2]);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_file() {
        assert_eq!(reverse_csv(50, 3), reverse_csv(50, 3));
        assert_ne!(reverse_csv(50, 3), reverse_csv(50, 4));
    }
}
