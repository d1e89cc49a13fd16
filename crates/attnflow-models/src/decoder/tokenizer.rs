//! A decoder's tokenizer: `tokenizer.json` in a Hugging Face directory, or
//! the byte-level BPE a GGUF file describes in its metadata, built the way
//! transformers builds it from the same file so that the ids are equal.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;

/// Tokens and ids of one text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct TokenizedText {
    /// Token ids, special tokens the tokenizer adds (a BOS) included.
    pub ids: Vec<u32>,
    /// A readable label per token: its text (`" capital"`), or its
    /// byte-level spelling when it is part of a multi-byte character.
    pub labels: Vec<String>,
}

/// A decoder's tokenizer.
#[derive(Clone)]
pub struct DecoderTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for DecoderTokenizer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DecoderTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl DecoderTokenizer {
    /// Loads `tokenizer.json`; its own padding and truncation are dropped.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: "tokenizer.json holds the vocabulary and merges (save it with the Python tokenizer's `save_pretrained`)".to_string(),
            });
        }
        let mut inner =
            tokenizers::Tokenizer::from_file(path).map_err(|error| ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|error| ModelError::Tokenizer {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The tokenizer a GGUF file's metadata describes (`tokenizer.ggml.*`):
    /// byte-level BPE (`tokenizer.ggml.model = "gpt2"`) with the split
    /// `tokenizer.ggml.pre` names, control tokens kept whole, and a BOS
    /// token prepended when `tokenizer.ggml.add_bos_token` says so.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let kind = gguf.string("tokenizer.ggml.model")?;
        if kind != "gpt2" {
            return Err(gguf.key_fault(
                "tokenizer.ggml.model",
                format!(
                    "tokenizer \"{kind}\" is not supported; attnflow builds byte-level BPE tokenizers (\"gpt2\") from GGUF metadata"
                ),
            ));
        }
        let tokens = gguf
            .strings("tokenizer.ggml.tokens")?
            .ok_or_else(|| gguf.key_fault("tokenizer.ggml.tokens", "required, but absent"))?;
        let merges = gguf.strings("tokenizer.ggml.merges")?.ok_or_else(|| {
            gguf.key_fault(
                "tokenizer.ggml.merges",
                "required for a byte-level BPE tokenizer, but absent",
            )
        })?;
        let types = gguf
            .integers("tokenizer.ggml.token_type")?
            .unwrap_or_default();
        let special_id = |key: &str| -> Result<Option<usize>> {
            match gguf.optional_u64(key)? {
                None => Ok(None),
                Some(id) if (id as usize) < tokens.len() => Ok(Some(id as usize)),
                Some(id) => {
                    Err(gguf.key_fault(key, format!("{id} is outside the {} tokens", tokens.len())))
                }
            }
        };
        let bos = special_id("tokenizer.ggml.bos_token_id")?;
        let specials: Vec<usize> = [
            bos,
            special_id("tokenizer.ggml.eos_token_id")?,
            special_id("tokenizer.ggml.unknown_token_id")?,
            special_id("tokenizer.ggml.padding_token_id")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let add_bos = gguf
            .optional_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(false);
        let pre = gguf.optional_string("tokenizer.ggml.pre")?;
        let spec = byte_level_json(
            &tokens,
            &merges,
            &types,
            &specials,
            bos.filter(|_| add_bos),
            pre.as_deref(),
        );
        let inner = spec
            .to_string()
            .parse::<tokenizers::Tokenizer>()
            .map_err(|error| ModelError::Tokenizer {
                path: gguf.path().to_path_buf(),
                message: format!("the tokenizer in the metadata cannot be built: {error}"),
            })?;
        Ok(Self {
            inner,
            path: gguf.path().to_path_buf(),
        })
    }

    /// Tokenizes `text` as transformers does by default (special tokens
    /// such as a BOS added by the tokenizer's template).
    pub fn encode(&self, text: &str) -> Result<TokenizedText> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|error| ModelError::input("text", error.to_string()))?;
        let ids = encoding.get_ids().to_vec();
        let labels = ids
            .iter()
            .zip(encoding.get_tokens())
            .map(|(&id, token)| self.label(id, token))
            .collect();
        Ok(TokenizedText { ids, labels })
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|error| ModelError::input("token ids", error.to_string()))
    }

    /// A readable label for token `id`.
    pub fn token_label(&self, id: u32) -> String {
        let token = self.inner.id_to_token(id).unwrap_or_default();
        self.label(id, &token)
    }

    fn label(&self, id: u32, token: &str) -> String {
        match self.inner.decode(&[id], false) {
            Ok(text) if !text.contains('\u{FFFD}') && !text.is_empty() => text,
            _ => token.to_string(),
        }
    }

    /// Number of tokens the vocabulary holds, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// GPT-2's byte-to-character map: printable bytes stand for themselves,
/// the rest are shifted above U+0100 (`bytes_to_unicode`).
fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut characters = printable.clone();
    let mut extra = 0;
    for byte in 0..256u32 {
        if !printable.contains(&byte) {
            printable.push(byte);
            characters.push(256 + extra);
            extra += 1;
        }
    }
    let mut alphabet = vec!['\0'; 256];
    for (byte, character) in printable.into_iter().zip(characters) {
        alphabet[byte as usize] = char::from_u32(character).expect("below U+0200");
    }
    alphabet
}

/// transformers' `GGUF_PRE_TOKENIZER_SPLITS`: the split regexes of the
/// `tokenizer.ggml.pre` values whose merges were learned on them.
fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

/// The `tokenizer.json` transformers builds from GGUF metadata: GPT-2's
/// byte-level BPE (tokens outside the byte alphabet respelled through it),
/// control tokens (type 3) and the BOS/EOS/UNK/PAD tokens as special added
/// tokens, user-defined ones (type 4) as plain added tokens.
fn byte_level_json(
    tokens: &[String],
    merges: &[String],
    types: &[i64],
    specials: &[usize],
    bos: Option<usize>,
    pre: Option<&str>,
) -> Value {
    let alphabet = byte_alphabet();
    let spelled: std::collections::HashSet<char> = alphabet.iter().copied().collect();
    let in_alphabet = |token: &str| token.chars().all(|c| spelled.contains(&c));
    let mut vocab = serde_json::Map::new();
    for (id, token) in tokens.iter().enumerate() {
        let spelling = if in_alphabet(token) {
            token.clone()
        } else {
            token.bytes().map(|byte| alphabet[byte as usize]).collect()
        };
        vocab.insert(spelling, id.into());
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|merge| match merge.split_once(' ') {
            Some((left, right)) => json!([left, right]),
            None => json!([merge, ""]),
        })
        .collect();
    let added = |id: usize, special: bool| {
        json!({"id": id, "content": tokens[id], "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": special})
    };
    let mut added_tokens = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (id, token) in tokens.iter().enumerate() {
        let kind = types.get(id).copied().unwrap_or(1);
        if kind == 3 && in_alphabet(token) || specials.contains(&id) && kind != 4 {
            added_tokens.push(added(id, true));
            seen.insert(id);
        }
    }
    for (id, _) in tokens.iter().enumerate() {
        if types.get(id).copied() == Some(4) && !seen.contains(&id) {
            added_tokens.push(added(id, false));
        }
    }
    let pre_tokenizer = match pre.and_then(split_regex) {
        Some(pattern) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]}),
        None => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
    };
    let post_processor = match bos {
        Some(id) => {
            let token = &tokens[id];
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": token, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {token.clone(): {"id": token, "ids": [id], "tokens": [token]}}})
        }
        None => json!({"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {}}),
    };
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let alphabet = byte_alphabet();
        assert_eq!(alphabet[b' ' as usize], 'Ġ');
        assert_eq!(alphabet[b'\n' as usize], 'Ċ');
        assert_eq!(alphabet[b'a' as usize], 'a');
        let distinct: std::collections::HashSet<char> = alphabet.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn builds_and_encodes_a_tiny_vocabulary() {
        let tokens: Vec<String> = ["<s>", "a", "b", "ab", "Ġ", "Ġab"]
            .iter()
            .map(|t| t.to_string())
            .collect();
        let merges = vec!["a b".to_string(), "Ġ ab".to_string()];
        let spec = byte_level_json(&tokens, &merges, &[3, 1, 1, 1, 1, 1], &[0], Some(0), None);
        let tokenizer: tokenizers::Tokenizer = spec.to_string().parse().unwrap();
        let encoding = tokenizer.encode("ab ab", true).unwrap();
        assert_eq!(encoding.get_ids(), &[0, 3, 5]);
    }
}
