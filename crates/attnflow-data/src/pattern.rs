//! A compiled byte matcher for the common shape of `regex` constraints:
//! fixed-length patterns such as `[A-Z]{3}-[0-9]{4}` (a sequence of
//! literals, `\d` and bracket classes of ASCII letters and digits, each
//! optionally repeated `{n}` times). Matching is one table lookup per byte.
//! Patterns outside that subset are not compiled; the check then uses the
//! `regex` crate, as it always does for non-ASCII text.

/// A fixed-length, anchored pattern: byte `i` of a matching value is in
/// `classes[i]` (a 128-bit set of ASCII bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedPattern {
    classes: Vec<u128>,
}

/// Longest pattern compiled (longer ones are left to the regex crate).
const MAX_LENGTH: usize = 256;

impl FixedPattern {
    /// Compiles `pattern` (as written in the schema, matched against the
    /// whole value), or `None` when it is outside the supported subset.
    pub fn compile(pattern: &str) -> Option<Self> {
        let bytes = pattern.as_bytes();
        let mut classes = Vec::new();
        let mut index = 0;
        while index < bytes.len() {
            let (class, next) = match bytes[index] {
                b'[' => bracket(bytes, index + 1)?,
                b'\\' => match *bytes.get(index + 1)? {
                    // On ASCII text `\d` (Unicode digits) is [0-9].
                    b'd' => (range(b'0', b'9'), index + 2),
                    byte if is_escapable(byte) => (single(byte), index + 2),
                    _ => return None,
                },
                byte if is_plain_literal(byte) => (single(byte), index + 1),
                _ => return None,
            };
            index = next;
            let mut repeat = 1;
            if bytes.get(index) == Some(&b'{') {
                let close = index + bytes[index..].iter().position(|&byte| byte == b'}')?;
                let count = &pattern[index + 1..close];
                if count.is_empty() || !count.bytes().all(|byte| byte.is_ascii_digit()) {
                    return None;
                }
                repeat = count.parse::<usize>().ok()?;
                index = close + 1;
            }
            if classes.len() + repeat > MAX_LENGTH {
                return None;
            }
            classes.extend(std::iter::repeat_n(class, repeat));
        }
        Some(Self { classes })
    }

    /// Whether `text` is ASCII and matches as a whole. A non-ASCII text
    /// gives false even where the regex would match it (`\d` matches every
    /// Unicode digit), so a false answer on such text must be confirmed
    /// with the regex crate.
    #[inline]
    pub fn matches(&self, text: &[u8]) -> bool {
        text.len() == self.classes.len()
            && text
                .iter()
                .zip(&self.classes)
                .all(|(&byte, &class)| byte < 128 && class >> byte & 1 == 1)
    }
}

fn single(byte: u8) -> u128 {
    1u128 << byte
}

fn range(low: u8, high: u8) -> u128 {
    (low..=high).fold(0, |set, byte| set | single(byte))
}

/// Bytes that stand for themselves outside a class in the regex crate's
/// syntax (without the `x` flag, which needs `(?x)` and is not compiled).
fn is_plain_literal(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'_'
                | b':'
                | b'/'
                | b'@'
                | b','
                | b';'
                | b'='
                | b'<'
                | b'>'
                | b'!'
                | b'\''
                | b'"'
                | b'%'
                | b'~'
                | b'`'
                | b'#'
                | b' '
                | b'&'
        )
}

/// Escaped punctuation the regex crate reads as the literal byte.
fn is_escapable(byte: u8) -> bool {
    matches!(
        byte,
        b'.' | b'-'
            | b'+'
            | b'*'
            | b'?'
            | b'('
            | b')'
            | b'['
            | b']'
            | b'{'
            | b'}'
            | b'^'
            | b'$'
            | b'|'
            | b'\\'
    )
}

/// A bracket class of ASCII letters and digits and ranges of them, such as
/// `[A-Za-z0-9]`; starts after the `[`.
fn bracket(bytes: &[u8], mut index: usize) -> Option<(u128, usize)> {
    let mut class = 0u128;
    loop {
        let byte = *bytes.get(index)?;
        if byte == b']' && class != 0 {
            return Some((class, index + 1));
        }
        if !byte.is_ascii_alphanumeric() {
            return None;
        }
        if bytes.get(index + 1) == Some(&b'-') && bytes.get(index + 2) != Some(&b']') {
            let high = *bytes.get(index + 2)?;
            if !high.is_ascii_alphanumeric() || high < byte {
                return None;
            }
            class |= range(byte, high);
            index += 3;
        } else {
            class |= single(byte);
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use regex::Regex;

    fn anchored(pattern: &str) -> Regex {
        Regex::new(&format!("^(?:{pattern})$")).unwrap()
    }

    #[test]
    fn the_bench_pattern_compiles_and_matches_like_the_regex() {
        let pattern = FixedPattern::compile("[A-Z]{3}-[0-9]{4}").unwrap();
        let regex = anchored("[A-Z]{3}-[0-9]{4}");
        for text in [
            "ABC-1234",
            "abc-1234",
            "ABC-123",
            "ABC-12345",
            "AB-1234",
            "ABC1234",
            "",
            "ABC-12a4",
            "ZZZ-0000",
        ] {
            assert_eq!(
                pattern.matches(text.as_bytes()),
                regex.is_match(text),
                "{text}"
            );
        }
        assert!(!pattern.matches("ÄBC-1234".as_bytes()));
        let digits = FixedPattern::compile("\\d{2}").unwrap();
        assert!(
            !digits.matches("٣٣".as_bytes()),
            "non-ASCII is left to the regex"
        );
        assert!(anchored("\\d{2}").is_match("٣٣"));
    }

    #[test]
    fn patterns_outside_the_subset_are_not_compiled() {
        for pattern in [
            "[^@]+@[^@]+",
            "a*",
            "a+",
            "a?",
            "(ab)",
            "a|b",
            ".",
            "[a-z&&[^aeiou]]",
            "a{2,3}",
            "a{}",
            "(?i)abc",
            "\\w",
            "[]",
            "[a-]",
            "^a$",
        ] {
            assert_eq!(FixedPattern::compile(pattern), None, "{pattern}");
        }
    }

    fn atom() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-cA-C0-2]".prop_map(|text| text),
            Just("\\d".to_owned()),
            Just("\\.".to_owned()),
            Just("-".to_owned()),
            Just("[A-C]".to_owned()),
            Just("[a-b0-1X]".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn compiled_patterns_agree_with_the_regex_crate(
            atoms in proptest::collection::vec((atom(), 0usize..4), 0..5),
            texts in proptest::collection::vec("[a-cA-C0-3.\\-x٣]{0,8}", 1..20),
        ) {
            let pattern: String = atoms
                .iter()
                .map(|(atom, repeat)| if *repeat == 1 { atom.clone() } else { format!("{atom}{{{repeat}}}") })
                .collect();
            let compiled = FixedPattern::compile(&pattern).expect("in the subset");
            let regex = anchored(&pattern);
            for text in texts {
                if text.is_ascii() {
                    prop_assert_eq!(compiled.matches(text.as_bytes()), regex.is_match(&text), "{} on {}", pattern, text);
                } else {
                    prop_assert!(!compiled.matches(text.as_bytes()));
                }
            }
        }
    }
}
