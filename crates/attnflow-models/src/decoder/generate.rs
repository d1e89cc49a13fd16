//! Text generation with a key/value cache: the prompt in one forward pass
//! (prefill), then one position per new token (decode), greedy or sampled
//! with temperature and nucleus (top-p) filtering.

use std::time::Instant;

use serde::Serialize;

use crate::decoder::model::{ForwardOptions, LogitRows};
use crate::decoder::tokenizer::TokenizedText;
use crate::decoder::PretrainedDecoder;
use crate::error::{ModelError, Result};

/// How to generate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenerateOptions {
    /// Most new tokens.
    pub max_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f64,
    /// Nucleus sampling: sample among the most likely tokens whose
    /// probabilities first reach this sum (1 keeps every token).
    pub top_p: f64,
    /// Seed of the sampler.
    pub seed: u64,
    /// Stop at the model's end-of-sequence token.
    pub stop_at_eos: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_at_eos: true,
        }
    }
}

impl GenerateOptions {
    /// Refuses settings that cannot sample, naming the flag.
    pub fn check(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::input(
                "temperature",
                format!("must be 0 (greedy) or positive, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ModelError::input(
                "top-p",
                format!("must lie in (0, 1], got {}", self.top_p),
            ));
        }
        Ok(())
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-sequence token.
    EndOfSequence,
    /// `max_tokens` new tokens were produced.
    MaxTokens,
    /// The model's context is full.
    ContextFull,
}

/// A finished generation with its timings.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    /// The prompt's tokens.
    pub prompt: TokenizedText,
    /// The new token ids (an end-of-sequence token left out).
    pub generated: Vec<u32>,
    /// The new text.
    pub text: String,
    /// Why it stopped.
    pub stop: StopReason,
    /// Seconds of the prompt's forward pass.
    pub prefill_seconds: f64,
    /// Prompt tokens per second.
    pub prefill_tokens_per_second: f64,
    /// Forward passes after the prompt's (one per new token but the first).
    pub decode_steps: usize,
    /// Seconds of those passes.
    pub decode_seconds: f64,
    /// Decode steps per second.
    pub decode_tokens_per_second: f64,
}

/// SplitMix64 (Steele et al. 2014): a small, well-mixed generator, so a
/// seed gives the same samples on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the largest logit (the first on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (index, &value) in logits.iter().enumerate() {
        if value > logits[best] {
            best = index;
        }
    }
    best as u32
}

/// Picks the next token from `logits` under `options`.
fn pick(logits: &[f32], options: &GenerateOptions, random: &mut SplitMix) -> u32 {
    if options.temperature == 0.0 {
        return argmax(logits);
    }
    let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut weighted: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(index, &logit)| {
            (
                index as u32,
                ((logit as f64 - maximum) / options.temperature).exp(),
            )
        })
        .collect();
    let total: f64 = weighted.iter().map(|(_, weight)| weight).sum();
    weighted.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if options.top_p < 1.0 {
        let mut kept = 0;
        let mut mass = 0.0;
        for (_, weight) in &weighted {
            kept += 1;
            mass += weight / total;
            if mass >= options.top_p {
                break;
            }
        }
        weighted.truncate(kept.max(1));
    }
    let kept_total: f64 = weighted.iter().map(|(_, weight)| weight).sum();
    let mut target = random.next_f64() * kept_total;
    for (index, weight) in &weighted {
        target -= weight;
        if target <= 0.0 {
            return *index;
        }
    }
    weighted.last().map_or(0, |(index, _)| *index)
}

/// Generates up to `options.max_tokens` tokens after `prompt`. `on_text`
/// receives the new text as it is produced (whole characters only).
pub fn generate(
    decoder: &PretrainedDecoder,
    prompt: &str,
    options: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    options.check()?;
    let mut tokens = decoder.tokenizer.encode(prompt)?;
    if tokens.ids.is_empty() {
        match decoder.config.bos_token_id {
            Some(bos) => tokens = decoder.tokens_of(&[bos]),
            None => {
                return Err(ModelError::input(
                    "prompt",
                    "is empty and the model has no beginning-of-sequence token to start from",
                ))
            }
        }
    }
    generate_from(decoder, tokens, options, &mut on_text)
}

/// [`generate`] from given prompt tokens.
pub fn generate_from(
    decoder: &PretrainedDecoder,
    prompt: TokenizedText,
    options: &GenerateOptions,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation> {
    options.check()?;
    let model = &decoder.model;
    let limit = decoder.config.max_positions;
    if prompt.ids.len() >= limit {
        return Err(ModelError::input(
            "prompt",
            format!(
                "{} tokens leave no room in the model's context of {limit}",
                prompt.ids.len()
            ),
        ));
    }
    let mut cache = model.cache((prompt.ids.len() + options.max_tokens).min(limit));
    let mut random = SplitMix(options.seed);
    let started = Instant::now();
    let output = model.forward(&prompt.ids, &mut cache, ForwardOptions::default())?;
    let prefill_seconds = started.elapsed().as_secs_f64();
    let mut logits = output.logits;
    let mut generated = Vec::new();
    let mut shown = 0;
    let mut decode_steps = 0;
    let decode_started = Instant::now();
    let stop = loop {
        if generated.len() == options.max_tokens {
            break StopReason::MaxTokens;
        }
        let next = pick(&logits, options, &mut random);
        if options.stop_at_eos && decoder.config.eos_token_ids.contains(&next) {
            break StopReason::EndOfSequence;
        }
        generated.push(next);
        let text = decoder.tokenizer.decode(&generated)?;
        if !text.ends_with('\u{FFFD}') && text.len() > shown && text.is_char_boundary(shown) {
            on_text(&text[shown..]);
            shown = text.len();
        }
        if generated.len() == options.max_tokens {
            break StopReason::MaxTokens;
        }
        if cache.len() >= limit {
            break StopReason::ContextFull;
        }
        let output = model.forward(
            &[next],
            &mut cache,
            ForwardOptions {
                logits: LogitRows::Last,
                ..ForwardOptions::default()
            },
        )?;
        decode_steps += 1;
        logits = output.logits;
    };
    let decode_seconds = decode_started.elapsed().as_secs_f64();
    let text = decoder.tokenizer.decode(&generated)?;
    if text.len() > shown && text.is_char_boundary(shown) {
        on_text(&text[shown..]);
    }
    let rate = |count: usize, seconds: f64| {
        if seconds > 0.0 {
            count as f64 / seconds
        } else {
            0.0
        }
    };
    Ok(Generation {
        prefill_tokens_per_second: rate(prompt.ids.len(), prefill_seconds),
        prompt,
        generated,
        text,
        stop,
        prefill_seconds,
        decode_steps,
        decode_seconds,
        decode_tokens_per_second: rate(decode_steps, decode_seconds),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.7, 0.7, -1.0]), 1);
    }

    #[test]
    fn top_p_keeps_the_nucleus_and_seeds_repeat() {
        let logits = [5.0f32, 4.0, -10.0, -10.0];
        let options = GenerateOptions {
            temperature: 1.0,
            top_p: 0.5,
            ..GenerateOptions::default()
        };
        let mut random = SplitMix(3);
        // The first token alone holds over half the mass.
        assert!((0..50).all(|_| pick(&logits, &options, &mut random) == 0));
        let wide = GenerateOptions {
            temperature: 1.0,
            top_p: 1.0,
            seed: 9,
            ..GenerateOptions::default()
        };
        let draw = |seed| {
            let mut random = SplitMix(seed);
            (0..40)
                .map(|_| pick(&logits, &wide, &mut random))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        assert!(draw(9).contains(&1) && draw(9).contains(&0));
    }

    #[test]
    fn refuses_bad_settings() {
        for options in [
            GenerateOptions {
                temperature: -1.0,
                ..GenerateOptions::default()
            },
            GenerateOptions {
                top_p: 0.0,
                ..GenerateOptions::default()
            },
        ] {
            assert!(options.check().is_err());
        }
    }
}
