//! How a task's tokens are written: the one mapping between what a person
//! types and the token ids a trained model reads, used wherever a trained
//! model meets text (inspection, reports).

use crate::tasks::Dataset;

/// The name of the separator token of synthetic and pair tasks.
pub const SEP: &str = "SEP";
/// The name of the answer-slot token of synthetic and pair tasks.
pub const SLOT: &str = "SLOT";

/// The tokens of a task, by id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Vocabulary {
    /// Text tasks: one token per character, ids in the order of the
    /// alphabet.
    Characters(Vec<char>),
    /// Pair tasks: the words of the data, then `SEP` and `SLOT`.
    Words(Vec<String>),
    /// Synthetic tasks: the symbols `0..count` written as numbers, then
    /// `SEP` and `SLOT`.
    Symbols(usize),
    /// A blueprint's own ids `0..size`, written as numbers.
    Numbers(usize),
}

/// A token that is not in the vocabulary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("token {position} `{token}`: {reason}")]
pub struct UnknownToken {
    /// Zero-based position in the input.
    pub position: usize,
    /// The token as given.
    pub token: String,
    /// Why it has no id.
    pub reason: String,
}

impl Vocabulary {
    /// The vocabulary of a task's data.
    pub fn of(dataset: &Dataset) -> Self {
        if let Some(alphabet) = dataset.alphabet() {
            Vocabulary::Characters(alphabet.to_vec())
        } else if let Some(words) = dataset.pair_tokens() {
            Vocabulary::Words(words.to_vec())
        } else {
            Vocabulary::Symbols(dataset.vocab_size() - 2)
        }
    }

    /// Token ids are `0..size()`.
    pub fn size(&self) -> usize {
        match self {
            Vocabulary::Characters(alphabet) => alphabet.len(),
            Vocabulary::Words(words) => words.len() + 2,
            Vocabulary::Symbols(count) => count + 2,
            Vocabulary::Numbers(size) => *size,
        }
    }

    /// Whether text is read one character per token (else tokens are
    /// separated by whitespace).
    pub fn reads_characters(&self) -> bool {
        matches!(self, Vocabulary::Characters(_))
    }

    /// The tokens of `text`: its characters, or its whitespace-separated
    /// words.
    pub fn split(&self, text: &str) -> Vec<String> {
        if self.reads_characters() {
            text.chars().map(String::from).collect()
        } else {
            text.split_whitespace().map(str::to_string).collect()
        }
    }

    /// The id of every token, or the first token without one.
    pub fn encode(&self, tokens: &[String]) -> Result<Vec<u32>, UnknownToken> {
        tokens
            .iter()
            .enumerate()
            .map(|(position, token)| {
                self.id(token).ok_or_else(|| UnknownToken {
                    position,
                    token: token.clone(),
                    reason: self.expected(),
                })
            })
            .collect()
    }

    /// The written form of every id; an id outside the vocabulary is
    /// written `#id`.
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        ids.iter().map(|&id| self.token(id as usize)).collect()
    }

    fn id(&self, token: &str) -> Option<u32> {
        let special = |base: usize| match token {
            SEP => Some(base as u32),
            SLOT => Some(base as u32 + 1),
            _ => None,
        };
        match self {
            Vocabulary::Characters(alphabet) => {
                let mut characters = token.chars();
                match (characters.next(), characters.next()) {
                    (Some(character), None) => {
                        alphabet.binary_search(&character).ok().map(|id| id as u32)
                    }
                    _ => None,
                }
            }
            Vocabulary::Words(words) => words
                .iter()
                .position(|word| word == token)
                .map(|id| id as u32)
                .or_else(|| special(words.len())),
            // The separators may be written by name or by id.
            Vocabulary::Symbols(count) => match token.parse::<u32>() {
                Ok(id) if (id as usize) < *count + 2 => Some(id),
                _ => special(*count),
            },
            Vocabulary::Numbers(size) => token
                .parse::<u32>()
                .ok()
                .filter(|&id| (id as usize) < *size),
        }
    }

    fn token(&self, id: usize) -> String {
        let special = |base: usize| match id.checked_sub(base) {
            Some(0) => Some(SEP.to_string()),
            Some(1) => Some(SLOT.to_string()),
            _ => None,
        };
        let known = match self {
            Vocabulary::Characters(alphabet) => alphabet.get(id).map(char::to_string),
            Vocabulary::Words(words) => words.get(id).cloned().or_else(|| special(words.len())),
            Vocabulary::Symbols(count) if id < *count => Some(id.to_string()),
            Vocabulary::Symbols(count) => special(*count),
            Vocabulary::Numbers(size) => (id < *size).then(|| id.to_string()),
        };
        known.unwrap_or_else(|| format!("#{id}"))
    }

    fn expected(&self) -> String {
        match self {
            Vocabulary::Characters(alphabet) => format!(
                "the model reads one character per token from an alphabet of {} characters",
                alphabet.len()
            ),
            Vocabulary::Words(words) => format!(
                "not one of the {} words the model was trained on (or {SEP}, {SLOT})",
                words.len()
            ),
            Vocabulary::Symbols(count) => format!(
                "the model takes token ids 0..{} as whole numbers (symbols 0..{}, then {SEP} and {SLOT})",
                count + 1,
                count.saturating_sub(1)
            ),
            Vocabulary::Numbers(size) => format!(
                "the model takes token ids 0..{} (whole numbers)",
                size.saturating_sub(1)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(tokens: &[&str]) -> Vec<String> {
        tokens.iter().map(|token| token.to_string()).collect()
    }

    #[test]
    fn every_vocabulary_round_trips_its_ids() {
        for vocabulary in [
            Vocabulary::Characters(vec!['a', 'b', 'é']),
            Vocabulary::Words(strings(&["red", "green"])),
            Vocabulary::Symbols(10),
            Vocabulary::Numbers(7),
        ] {
            let ids: Vec<u32> = (0..vocabulary.size() as u32).collect();
            let tokens = vocabulary.decode(&ids);
            assert_eq!(vocabulary.encode(&tokens).unwrap(), ids, "{vocabulary:?}");
        }
    }

    #[test]
    fn separators_follow_the_content_tokens() {
        let words = Vocabulary::Words(strings(&["red", "green"]));
        assert_eq!(
            words.decode(&[1, 2, 3, 9]),
            strings(&["green", SEP, SLOT, "#9"])
        );
        let symbols = Vocabulary::Symbols(10);
        assert_eq!(
            symbols.encode(&strings(&["3", "SEP", "SLOT"])).unwrap(),
            vec![3, 10, 11]
        );
    }

    #[test]
    fn unknown_tokens_are_named_with_their_position() {
        let characters = Vocabulary::Characters(vec!['a', 'b']);
        let error = characters.encode(&strings(&["a", "ab"])).unwrap_err();
        assert_eq!((error.position, error.token.as_str()), (1, "ab"));
        assert_eq!(
            Vocabulary::Symbols(4)
                .encode(&strings(&["4", "5"]))
                .unwrap(),
            [4, 5]
        );
        let error = Vocabulary::Symbols(4).encode(&strings(&["6"])).unwrap_err();
        assert!(error.reason.contains("0..5"), "{error}");
        assert!(Vocabulary::Numbers(4).encode(&strings(&["SEP"])).is_err());
        assert_eq!(characters.split("ab"), strings(&["a", "b"]));
        assert_eq!(
            Vocabulary::Numbers(9).split(" 3 1\t4 "),
            strings(&["3", "1", "4"])
        );
    }
}
