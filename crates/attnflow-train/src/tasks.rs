//! Training data: seeded synthetic tasks and next-token prediction on a
//! text file, with a reproducible split, batching and shuffling.
//!
//! Every synthetic example is a pure function of `(seed, stream, index)`
//! ([`Rng::derive`]), so the data position of a checkpoint is just a
//! counter and a resumed run sees exactly the examples an uninterrupted run
//! would have seen. Text windows are visited in a fresh seeded permutation
//! each epoch; the position is `(epoch, index)`.
//!
//! A task example is a prompt and an answer. How it becomes model input
//! depends on the model ([`Format`]): a causal model reads
//! `prompt SEP answer` and is scored on predicting the answer tokens; a
//! bidirectional model would see the answer that way, so it reads the prompt
//! and predicts the answer position by position instead.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;
use crate::{Result, TrainError};

/// What the model learns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// Repeat the sequence.
    Copy,
    /// The sequence back to front.
    Reverse,
    /// The sequence in ascending order.
    Sort,
    /// Associative recall (induction): after key/value pairs `k1 v1 … kp vp`
    /// and a query key, answer that key's value.
    Recall,
    /// Next-token prediction on a text file, one token per character.
    Text {
        /// The text file (UTF-8).
        path: PathBuf,
    },
    /// Sequence-to-sequence pairs from a JSON Lines file, one
    /// `{"input": [...], "target": [...]}` object a line (tokens as strings
    /// or numbers, or one space-separated string): the records a quality
    /// check accepted. All inputs share one length, all targets another.
    Pairs {
        /// The JSON Lines file.
        path: PathBuf,
    },
}

impl Task {
    /// The names `parse` accepts, for messages.
    pub const NAMES: &'static str =
        "copy, reverse, sort, recall (alias induction), text:PATH, pairs:PATH";

    /// Parses `copy`, `reverse`, `sort`, `recall` (or `induction`) and
    /// `text:PATH`.
    pub fn parse(text: &str) -> Result<Task> {
        Ok(match text {
            "copy" => Task::Copy,
            "reverse" => Task::Reverse,
            "sort" => Task::Sort,
            "recall" | "induction" | "associative-recall" => Task::Recall,
            _ => match (text.strip_prefix("text:"), text.strip_prefix("pairs:")) {
                (Some(path), _) if !path.is_empty() => Task::Text {
                    path: PathBuf::from(path),
                },
                (_, Some(path)) if !path.is_empty() => Task::Pairs {
                    path: PathBuf::from(path),
                },
                _ => {
                    return Err(TrainError::config(
                        "task",
                        format!("`{text}` is not a task; known: {}", Self::NAMES),
                    ))
                }
            },
        })
    }

    /// The task's name as `parse` reads it.
    pub fn name(&self) -> String {
        match self {
            Task::Copy => "copy".into(),
            Task::Reverse => "reverse".into(),
            Task::Sort => "sort".into(),
            Task::Recall => "recall".into(),
            Task::Text { path } => format!("text:{}", path.display()),
            Task::Pairs { path } => format!("pairs:{}", path.display()),
        }
    }
}

/// How examples are laid out for the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Causal models: input `prompt SEP answer[..-1]`, each position predicts
    /// the next token, scored on the answer only.
    Autoregressive,
    /// Bidirectional models: input the prompt (plus one `SLOT` token per
    /// answer token when lengths differ), targets aligned position by
    /// position.
    Aligned,
}

/// One example: the input tokens, the target at each position and whether
/// that target counts (weight 1) or is ignored (weight 0).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// Input token ids.
    pub input: Vec<u32>,
    /// Target token id at each position (0 where ignored).
    pub target: Vec<u32>,
    /// 1 where the target is scored, 0 where ignored.
    pub weight: Vec<f32>,
}

/// Where a run is in its training data; stored in checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Passes over the text windows completed (always 0 for synthetic tasks).
    pub epoch: u64,
    /// Examples consumed in this epoch (synthetic: in total).
    pub index: u64,
}

/// Examples stacked into tensors.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `(batch, n)` token ids, `u32`.
    pub tokens: Tensor,
    /// `(batch, n)` target ids, `u32`.
    pub targets: Tensor,
    /// `(batch, n)` target weights, `f32`.
    pub weights: Tensor,
    /// The scored targets in the batch.
    pub target_count: usize,
    /// The examples, for per-example scoring.
    pub examples: Vec<Example>,
}

/// Pairs read from a file, as token ids, and how they are split.
struct PairData {
    pairs: Vec<(Vec<u32>, Vec<u32>)>,
    tokens: Vec<String>,
    train: Vec<usize>,
}

struct TextData {
    tokens: Vec<u32>,
    alphabet: Vec<char>,
    train_starts: Vec<usize>,
}

/// A task's training stream and its fixed validation set.
pub struct Dataset {
    task: Task,
    format: Format,
    seed: u64,
    length: usize,
    symbols: usize,
    text: Option<TextData>,
    pairs: Option<PairData>,
    validation: Vec<Example>,
}

impl Dataset {
    /// Builds the data for `task`: `length` is the prompt length of a
    /// synthetic task (for recall, twice the number of pairs) or the window
    /// length for text; `symbols` the content alphabet of synthetic tasks;
    /// `validation_size` the number of validation examples (text: at most).
    pub fn new(
        task: &Task,
        format: Format,
        length: usize,
        symbols: usize,
        seed: u64,
        validation_size: usize,
    ) -> Result<Self> {
        if length == 0 {
            return Err(TrainError::config("length", "must be at least 1"));
        }
        if validation_size == 0 {
            return Err(TrainError::config("validation_size", "must be at least 1"));
        }
        let mut dataset = Self {
            task: task.clone(),
            format,
            seed,
            length,
            symbols,
            text: None,
            pairs: None,
            validation: Vec::new(),
        };
        match task {
            Task::Text { path } => {
                if format != Format::Autoregressive {
                    return Err(TrainError::config(
                        "task",
                        "next-token prediction needs a causal model (every attention node with mask = \"causal\" or \"window\"); a bidirectional model would see the token it is asked to predict",
                    ));
                }
                let (text, validation) = read_text(path, length, validation_size)?;
                dataset.text = Some(text);
                dataset.validation = validation;
            }
            Task::Pairs { path } => {
                let (pairs, tokens) = read_pairs(path)?;
                if pairs.len() < 2 {
                    return Err(TrainError::config(
                        "task",
                        format!("{}: needs at least 2 pairs (one to train on, one to validate), found {}", path.display(), pairs.len()),
                    ));
                }
                let mut order: Vec<usize> = (0..pairs.len()).collect();
                Rng::derive(seed, "pairs-split", 0).shuffle(&mut order);
                // At most half the pairs are held out, so training keeps data.
                let held_out = validation_size.min(pairs.len() / 2).max(1);
                let train = order.split_off(held_out);
                dataset.symbols = tokens.len();
                dataset.length = pairs[0].0.len();
                dataset.validation = order
                    .iter()
                    .map(|&index| dataset.layout(&pairs[index].0, &pairs[index].1))
                    .collect();
                dataset.pairs = Some(PairData {
                    pairs,
                    tokens,
                    train,
                });
            }
            _ => {
                if symbols < 2 {
                    return Err(TrainError::config(
                        "symbols",
                        "synthetic tasks need at least 2 symbols",
                    ));
                }
                if *task == Task::Recall && (length < 2 || length / 2 > symbols) {
                    return Err(TrainError::config(
                        "length",
                        format!(
                            "recall uses length/2 distinct keys out of {symbols} symbols; length {length} needs 2 <= length <= 2·symbols"
                        ),
                    ));
                }
                dataset.validation = (0..validation_size as u64)
                    .map(|index| dataset.synthetic(&mut Rng::derive(seed, "validation", index)))
                    .collect();
            }
        }
        Ok(dataset)
    }

    /// The task.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// The layout of examples.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Token ids the task uses: `0..vocab_size`. Synthetic tasks use the
    /// symbols, then `SEP`, then `SLOT`; text uses one id per distinct
    /// character.
    pub fn vocab_size(&self) -> usize {
        match &self.text {
            Some(text) => text.alphabet.len(),
            None => self.symbols + 2,
        }
    }

    /// The tokens of a pairs task, by token id (`SEP` and `SLOT` follow).
    pub fn pair_tokens(&self) -> Option<&[String]> {
        self.pairs.as_ref().map(|pairs| pairs.tokens.as_slice())
    }

    /// The characters of a text task, by token id.
    pub fn alphabet(&self) -> Option<&[char]> {
        self.text.as_ref().map(|text| text.alphabet.as_slice())
    }

    /// Prompt and answer lengths in tokens (text: the window, twice).
    pub fn lengths(&self) -> (usize, usize) {
        if let Some(data) = &self.pairs {
            return (data.pairs[0].0.len(), data.pairs[0].1.len());
        }
        match self.task {
            Task::Recall => (2 * (self.length / 2) + 1, 1),
            _ => (self.length, self.length),
        }
    }

    /// The model input length of every example.
    pub fn sequence_length(&self) -> usize {
        self.validation
            .first()
            .map_or(self.length, |example| example.input.len())
    }

    /// The fixed validation examples.
    pub fn validation(&self) -> &[Example] {
        &self.validation
    }

    /// The next `count` training examples from `position`, advancing it.
    pub fn next_examples(&self, position: &mut DataPosition, count: usize) -> Vec<Example> {
        let mut examples = Vec::with_capacity(count);
        if let Some(data) = &self.pairs {
            let mut order = self.pair_order(data, position.epoch);
            for _ in 0..count {
                if position.index >= data.train.len() as u64 {
                    position.epoch += 1;
                    position.index = 0;
                    order = self.pair_order(data, position.epoch);
                }
                let (prompt, answer) = &data.pairs[order[position.index as usize]];
                examples.push(self.layout(prompt, answer));
                position.index += 1;
            }
            return examples;
        }
        match &self.text {
            None => {
                for _ in 0..count {
                    let mut rng = Rng::derive(self.seed, "train", position.index);
                    examples.push(self.synthetic(&mut rng));
                    position.index += 1;
                }
            }
            Some(text) => {
                let windows = text.train_starts.len() as u64;
                let mut order = self.epoch_order(text, position.epoch);
                for _ in 0..count {
                    if position.index >= windows {
                        position.epoch += 1;
                        position.index = 0;
                        order = self.epoch_order(text, position.epoch);
                    }
                    let start = text.train_starts[order[position.index as usize]];
                    examples.push(window(&text.tokens, start, self.length));
                    position.index += 1;
                }
            }
        }
        examples
    }

    fn pair_order(&self, data: &PairData, epoch: u64) -> Vec<usize> {
        let mut order = data.train.clone();
        Rng::derive(self.seed, "pairs-order", epoch).shuffle(&mut order);
        order
    }

    fn epoch_order(&self, text: &TextData, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..text.train_starts.len()).collect();
        Rng::derive(self.seed, "text-order", epoch).shuffle(&mut order);
        order
    }

    fn synthetic(&self, rng: &mut Rng) -> Example {
        let symbols = self.symbols as u64;
        let random = |rng: &mut Rng, count: usize| -> Vec<u32> {
            (0..count).map(|_| rng.below(symbols) as u32).collect()
        };
        let (prompt, answer) = match self.task {
            Task::Copy => {
                let prompt = random(rng, self.length);
                (prompt.clone(), prompt)
            }
            Task::Reverse => {
                let prompt = random(rng, self.length);
                let mut answer = prompt.clone();
                answer.reverse();
                (prompt, answer)
            }
            Task::Sort => {
                let prompt = random(rng, self.length);
                let mut answer = prompt.clone();
                answer.sort_unstable();
                (prompt, answer)
            }
            Task::Recall | Task::Text { .. } | Task::Pairs { .. } => {
                let pairs = self.length / 2;
                let mut keys: Vec<u32> = (0..self.symbols as u32).collect();
                rng.shuffle(&mut keys);
                keys.truncate(pairs);
                let values = random(rng, pairs);
                let asked = rng.below(pairs as u64) as usize;
                let mut prompt: Vec<u32> = keys
                    .iter()
                    .zip(&values)
                    .flat_map(|(key, value)| [*key, *value])
                    .collect();
                prompt.push(keys[asked]);
                (prompt, vec![values[asked]])
            }
        };
        self.layout(&prompt, &answer)
    }

    /// Lays a prompt and its answer out as the model reads them.
    fn layout(&self, prompt: &[u32], answer: &[u32]) -> Example {
        let (prompt, answer) = (prompt.to_vec(), answer.to_vec());
        let separator = self.symbols as u32;
        let slot = separator + 1;
        match self.format {
            Format::Autoregressive => {
                let mut sequence = prompt.clone();
                sequence.push(separator);
                sequence.extend(&answer);
                let input = sequence[..sequence.len() - 1].to_vec();
                let target = sequence[1..].to_vec();
                let weight = (0..input.len())
                    .map(|position| if position >= prompt.len() { 1.0 } else { 0.0 })
                    .collect();
                Example {
                    input,
                    target,
                    weight,
                }
            }
            Format::Aligned if prompt.len() == answer.len() => Example {
                weight: vec![1.0; prompt.len()],
                input: prompt,
                target: answer,
            },
            Format::Aligned => {
                let mut input = prompt.clone();
                input.extend(std::iter::repeat_n(slot, answer.len()));
                let mut target = vec![0; prompt.len()];
                target.extend(&answer);
                let mut weight = vec![0.0; prompt.len()];
                weight.extend(std::iter::repeat_n(1.0, answer.len()));
                Example {
                    input,
                    target,
                    weight,
                }
            }
        }
    }
}

fn window(tokens: &[u32], start: usize, length: usize) -> Example {
    Example {
        input: tokens[start..start + length].to_vec(),
        target: tokens[start + 1..start + length + 1].to_vec(),
        weight: vec![1.0; length],
    }
}

/// Reads sequence pairs from JSON Lines into token ids: the distinct tokens,
/// sorted, are the alphabet. Every fault names the file and line.
#[allow(clippy::type_complexity)]
fn read_pairs(path: &Path) -> Result<(Vec<(Vec<u32>, Vec<u32>)>, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::io(path, source))?;
    let fault = |line: usize, message: String| TrainError::Data {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    };
    let tokens_of =
        |value: Option<&serde_json::Value>, field: &str, line: usize| -> Result<Vec<String>> {
            match value {
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        serde_json::Value::String(token) => Ok(token.clone()),
                        serde_json::Value::Number(number) => Ok(number.to_string()),
                        other => Err(fault(line, format!("`{field}` holds {other}, not a token"))),
                    })
                    .collect(),
                Some(serde_json::Value::String(joined)) => {
                    Ok(joined.split_whitespace().map(str::to_string).collect())
                }
                _ => Err(fault(line, format!("no `{field}` token list"))),
            }
        };
    let mut raw = Vec::new();
    for (index, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let number = index + 1;
        let record: serde_json::Value = serde_json::from_str(line)
            .map_err(|error| fault(number, format!("not JSON: {error}")))?;
        let input = tokens_of(record.get("input"), "input", number)?;
        let target = tokens_of(record.get("target"), "target", number)?;
        if input.is_empty() || target.is_empty() {
            return Err(fault(number, "empty `input` or `target`".into()));
        }
        if let Some((first_input, first_target, first_line)) = raw
            .first()
            .map(|(i, t, l): &(Vec<String>, Vec<String>, usize)| (i.len(), t.len(), *l))
        {
            if input.len() != first_input || target.len() != first_target {
                return Err(fault(
                    number,
                    format!(
                        "{} input and {} target tokens, but line {first_line} has {first_input} and {first_target}; all pairs need the same lengths",
                        input.len(),
                        target.len()
                    ),
                ));
            }
        }
        raw.push((input, target, number));
    }
    let mut alphabet: Vec<String> = raw
        .iter()
        .flat_map(|(input, target, _)| input.iter().chain(target).cloned())
        .collect();
    alphabet.sort_unstable();
    alphabet.dedup();
    let id = |token: &String| alphabet.binary_search(token).unwrap_or(0) as u32;
    let pairs = raw
        .iter()
        .map(|(input, target, _)| {
            (
                input.iter().map(id).collect(),
                target.iter().map(id).collect(),
            )
        })
        .collect();
    Ok((pairs, alphabet))
}

/// Reads a text file into character tokens: the last tenth (at least one
/// window) is validation, the rest training, cut into non-overlapping
/// windows of `length + 1` characters (neighbours share their boundary
/// character); no training window reads a validation character.
fn read_text(
    path: &Path,
    length: usize,
    validation_size: usize,
) -> Result<(TextData, Vec<Example>)> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::io(path, source))?;
    let text = String::from_utf8(bytes).map_err(|error| TrainError::Data {
        path: path.to_path_buf(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            error.utf8_error().valid_up_to()
        ),
    })?;
    let characters: Vec<char> = text.chars().collect();
    let mut alphabet = characters.clone();
    alphabet.sort_unstable();
    alphabet.dedup();
    let tokens: Vec<u32> = characters
        .iter()
        .map(|character| alphabet.binary_search(character).unwrap_or(0) as u32)
        .collect();
    let needed = 2 * (length + 1);
    if tokens.len() < needed {
        return Err(TrainError::Data {
            path: path.to_path_buf(),
            message: format!(
                "has {} characters; windows of length {length} need at least {needed} (one for training, one for validation)",
                tokens.len()
            ),
        });
    }
    let validation_tokens = (tokens.len() / 10).max(length + 1);
    let split = tokens.len() - validation_tokens;
    let starts = |begin: usize, end: usize| -> Vec<usize> {
        (begin..)
            .step_by(length)
            .take_while(|start| start + length < end)
            .collect()
    };
    let train_starts = starts(0, split);
    let validation: Vec<Example> = starts(split, tokens.len())
        .into_iter()
        .take(validation_size)
        .map(|start| window(&tokens, start, length))
        .collect();
    Ok((
        TextData {
            tokens,
            alphabet,
            train_starts,
        },
        validation,
    ))
}

/// Stacks examples of equal length into a [`Batch`].
pub fn collate(examples: &[Example], device: &Device) -> Result<Batch> {
    let count = examples.len();
    let length = examples.first().map_or(0, |example| example.input.len());
    let mut tokens: Vec<u32> = Vec::with_capacity(count * length);
    let mut targets: Vec<u32> = Vec::with_capacity(count * length);
    let mut weights: Vec<f32> = Vec::with_capacity(count * length);
    for example in examples {
        if example.input.len() != length {
            return Err(TrainError::config(
                "batch",
                "examples in one batch must have equal length",
            ));
        }
        tokens.extend(&example.input);
        targets.extend(&example.target);
        weights.extend(&example.weight);
    }
    let target_count = weights.iter().filter(|weight| **weight > 0.0).count();
    Ok(Batch {
        tokens: Tensor::from_vec(tokens, (count, length), device)?,
        targets: Tensor::from_vec(targets, (count, length), device)?,
        weights: Tensor::from_vec(weights, (count, length), device)?,
        target_count,
        examples: examples.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_read_split_and_laid_out_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.jsonl");
        let mut lines = String::new();
        for index in 0..20 {
            let input: Vec<String> = (0..4)
                .map(|i| ["a", "b", "c"][(index + i) % 3].to_string())
                .collect();
            let target: Vec<String> = input.iter().rev().cloned().collect();
            lines.push_str(&serde_json::json!({ "input": input, "target": target }).to_string());
            lines.push('\n');
        }
        std::fs::write(&path, &lines).unwrap();
        let task = Task::parse(&format!("pairs:{}", path.display())).unwrap();
        let dataset = Dataset::new(&task, Format::Aligned, 99, 0, 5, 6).unwrap();
        assert_eq!(dataset.pair_tokens().unwrap(), ["a", "b", "c"]);
        assert_eq!(dataset.vocab_size(), 5);
        assert_eq!(dataset.sequence_length(), 4);
        assert_eq!(dataset.validation().len(), 6);
        // One epoch visits each of the 14 training pairs once.
        let mut position = DataPosition::default();
        let epoch = dataset.next_examples(&mut position, 14);
        assert_eq!(
            position,
            DataPosition {
                epoch: 0,
                index: 14
            }
        );
        for example in epoch.iter().chain(dataset.validation()) {
            let mut reversed = example.input.clone();
            reversed.reverse();
            assert_eq!(example.target, reversed);
        }
        dataset.next_examples(&mut position, 1);
        assert_eq!(position, DataPosition { epoch: 1, index: 1 });

        std::fs::write(&path, "{\"input\": [\"a\"], \"target\": [\"a\"]}\n{\"input\": [\"a\", \"b\"], \"target\": [\"a\"]}\n").unwrap();
        let error = Dataset::new(&task, Format::Aligned, 4, 0, 5, 6)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("pairs.jsonl") && error.contains("line 2"),
            "{error}"
        );
        std::fs::write(&path, "{\"input\": [\"a\"]}\n").unwrap();
        let error = Dataset::new(&task, Format::Aligned, 4, 0, 5, 6)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("line 1: no `target` token list"), "{error}");
    }

    #[test]
    fn synthetic_tasks_are_right_and_reproducible() {
        let reverse = Dataset::new(&Task::Reverse, Format::Aligned, 6, 10, 3, 4).unwrap();
        for example in reverse.validation() {
            let mut expected = example.input.clone();
            expected.reverse();
            assert_eq!(example.target, expected);
        }
        let again = Dataset::new(&Task::Reverse, Format::Aligned, 6, 10, 3, 4).unwrap();
        assert_eq!(reverse.validation(), again.validation());
        let mut a = DataPosition::default();
        let mut b = DataPosition::default();
        let first = reverse.next_examples(&mut a, 5);
        let mut second = reverse.next_examples(&mut b, 2);
        second.extend(reverse.next_examples(&mut b, 3));
        assert_eq!(first, second, "batching does not change the stream");
        assert_eq!(a, DataPosition { epoch: 0, index: 5 });
        assert_ne!(first[0], reverse.validation()[0]);

        let sort = Dataset::new(&Task::Sort, Format::Autoregressive, 5, 10, 1, 2).unwrap();
        let example = &sort.validation()[0];
        // prompt(5) SEP answer(5), shifted: 10 inputs, last 5 targets scored.
        assert_eq!(example.input.len(), 10);
        assert_eq!(example.input[5], 10, "separator");
        assert_eq!(example.weight, [0., 0., 0., 0., 0., 1., 1., 1., 1., 1.]);
        let answer = &example.target[5..];
        assert!(answer.windows(2).all(|pair| pair[0] <= pair[1]));
        let mut prompt = example.input[..5].to_vec();
        prompt.sort_unstable();
        assert_eq!(prompt, answer);
    }

    #[test]
    fn recall_asks_for_a_stored_value() {
        let recall = Dataset::new(&Task::Recall, Format::Aligned, 8, 10, 9, 20).unwrap();
        for example in recall.validation() {
            // 4 pairs, the query, one slot.
            assert_eq!(example.input.len(), 10);
            assert_eq!(example.input[9], 11, "slot token");
            let query = example.input[8];
            let pair = (0..4)
                .find(|pair| example.input[2 * pair] == query)
                .unwrap();
            assert_eq!(example.target[9], example.input[2 * pair + 1]);
            assert_eq!(example.weight.iter().sum::<f32>(), 1.0);
        }
        assert!(Dataset::new(&Task::Recall, Format::Aligned, 30, 10, 9, 2).is_err());
    }

    #[test]
    fn text_windows_split_and_shuffle_reproducibly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text.txt");
        let text: String = (0..400).map(|i| char::from(b'a' + (i % 7) as u8)).collect();
        std::fs::write(&path, &text).unwrap();
        let task = Task::Text { path: path.clone() };
        let data = Dataset::new(&task, Format::Autoregressive, 8, 0, 5, 100).unwrap();
        assert_eq!(data.vocab_size(), 7);
        assert_eq!(
            data.validation().len(),
            4,
            "last 40 characters, windows of 9"
        );
        let mut position = DataPosition::default();
        let epoch: Vec<Example> = data.next_examples(&mut position, 44);
        assert_eq!(
            position,
            DataPosition {
                epoch: 0,
                index: 44
            }
        );
        let mut starts: Vec<u32> = epoch.iter().map(|example| example.input[0]).collect();
        starts.dedup();
        assert!(starts.len() > 10, "shuffled");
        for example in &epoch {
            assert_eq!(&example.input[1..], &example.target[..7]);
        }
        data.next_examples(&mut position, 1);
        assert_eq!(position, DataPosition { epoch: 1, index: 1 });
        assert!(Dataset::new(&task, Format::Aligned, 8, 0, 5, 100).is_err());
        std::fs::write(&path, "short").unwrap();
        let error = Dataset::new(&task, Format::Autoregressive, 8, 0, 5, 100)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("text.txt") && error.contains("5 characters"),
            "{error}"
        );
    }
}
