//! Perplexity of a text under a decoder, with a sliding window for texts
//! longer than the context (the procedure of the Hugging Face perplexity
//! guide): windows of `context` tokens advance by `stride`; each scores only
//! the tokens it adds, so every token but the first is predicted once, from
//! up to `context − 1` tokens before it.

use std::time::Instant;

use serde::Serialize;

use crate::decoder::model::{ForwardOptions, LogitRows};
use crate::decoder::PretrainedDecoder;
use crate::error::{ModelError, Result};

/// The window settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PerplexityOptions {
    /// Tokens per window (at most the model's context).
    pub context: usize,
    /// Tokens a window advances by (at most `context`).
    pub stride: usize,
}

/// Progress after each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerplexityProgress {
    /// Tokens scored so far.
    pub scored: usize,
    /// Tokens to score in all.
    pub total: usize,
}

/// The result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerplexityReport {
    /// Tokens in the text.
    pub tokens: usize,
    /// Tokens predicted (all but the first).
    pub scored: usize,
    /// Windows run.
    pub windows: usize,
    /// The settings.
    pub options: PerplexityOptions,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub perplexity: f64,
    /// Bits per UTF-8 byte of the text: total NLL / ln 2 / bytes.
    pub bits_per_byte: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Tokens run through the model per second (windows overlap, so more
    /// than `tokens`).
    pub tokens_per_second: f64,
}

/// `−log softmax(logits)[target]`, in f64.
fn negative_log_likelihood(logits: &[f32], target: u32) -> f64 {
    let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits
        .iter()
        .map(|&logit| (logit as f64 - maximum).exp())
        .sum();
    maximum + sum.ln() - logits[target as usize] as f64
}

/// The perplexity of `text` under `decoder`. `progress` is called after
/// every window.
pub fn perplexity(
    decoder: &PretrainedDecoder,
    text: &str,
    options: PerplexityOptions,
    mut progress: impl FnMut(PerplexityProgress),
) -> Result<PerplexityReport> {
    let limit = decoder.config.max_positions;
    if options.context < 2 || options.context > limit {
        return Err(ModelError::input(
            "context",
            format!(
                "must lie in 2..={limit} (the model's context), got {}",
                options.context
            ),
        ));
    }
    if options.stride == 0 || options.stride > options.context - 1 {
        return Err(ModelError::input(
            "stride",
            format!(
                "must lie in 1..={} (the context less one), got {}",
                options.context - 1,
                options.stride
            ),
        ));
    }
    let ids = decoder.tokenizer.encode(text)?.ids;
    if ids.len() < 2 {
        return Err(ModelError::input(
            "text",
            format!(
                "gives {} token(s); perplexity needs at least two",
                ids.len()
            ),
        ));
    }
    let started = Instant::now();
    let total_to_score = ids.len() - 1;
    let mut cache = decoder.model.cache(options.context);
    let mut total_nll = 0.0;
    let mut scored = 0;
    let mut windows = 0;
    let mut run = 0;
    // Token `t` (t ≥ 1) is predicted by the window that first contains it.
    let mut next_target = 1;
    let mut start = 0;
    while next_target < ids.len() {
        let end = (start + options.context).min(ids.len());
        let window = &ids[start..end];
        let new_targets = end - next_target;
        cache.clear();
        let output = decoder.model.forward(
            window,
            &mut cache,
            ForwardOptions {
                // Logits at positions predicting the new targets: the
                // position before each.
                logits: LogitRows::Tail(new_targets + 1),
                ..ForwardOptions::default()
            },
        )?;
        let vocab = decoder.config.vocab_size;
        // Rows cover window positions end − new_targets − 1 .. end; the last
        // predicts nothing inside the text.
        for (row, target) in (next_target..end).enumerate() {
            let logits = &output.logits[row * vocab..(row + 1) * vocab];
            total_nll += negative_log_likelihood(logits, ids[target]);
        }
        scored += new_targets;
        run += window.len();
        windows += 1;
        next_target = end;
        progress(PerplexityProgress {
            scored,
            total: total_to_score,
        });
        if end == ids.len() {
            break;
        }
        start += options.stride;
    }
    let seconds = started.elapsed().as_secs_f64();
    let mean_nll = total_nll / scored as f64;
    Ok(PerplexityReport {
        tokens: ids.len(),
        scored,
        windows,
        options,
        mean_nll,
        perplexity: mean_nll.exp(),
        bits_per_byte: total_nll / std::f64::consts::LN_2 / text.len().max(1) as f64,
        seconds,
        tokens_per_second: if seconds > 0.0 {
            run as f64 / seconds
        } else {
            0.0
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nll_of_uniform_logits_is_log_vocab() {
        let logits = vec![0.25f32; 8];
        assert!((negative_log_likelihood(&logits, 3) - 8f64.ln()).abs() < 1e-12);
    }
}
