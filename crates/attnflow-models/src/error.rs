//! Errors of the model loaders, each naming the file (and the field or
//! tensor) at fault so a user can fix the checkpoint or the command.

use std::path::PathBuf;

use attnflow_core::CoreError;

/// What went wrong while loading or running a pretrained model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model directory does not exist or is not a directory.
    #[error("{path}: not a model directory ({reason})", path = path.display())]
    NotADirectory {
        /// The path given as the model directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A file the model needs is absent from the directory.
    #[error("{path}: missing; {what}", path = path.display())]
    MissingFile {
        /// The file that was looked for.
        path: PathBuf,
        /// What the file holds and why it is needed.
        what: String,
    },
    /// A file exists but cannot be read.
    #[error("{path}: cannot read: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}:{line}:{column}: invalid JSON: {message}", path = path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the fault.
        line: usize,
        /// 1-based column of the fault.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// A configuration field is missing or holds a value this loader cannot use.
    #[error("{path}: field `{field}`: {message}", path = path.display())]
    Config {
        /// The configuration file.
        path: PathBuf,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The checkpoint is of an architecture this crate does not run.
    #[error("{path}: unsupported architecture {found}; attnflow loads BERT encoders (model_type \"bert\") and the decoders llama, mistral, qwen2 and gpt2", path = path.display())]
    UnknownArchitecture {
        /// The configuration file.
        path: PathBuf,
        /// What the file declares (model type and architectures).
        found: String,
    },
    /// The weights file is not a valid safetensors file.
    #[error("{path}: not a valid safetensors file: {message}", path = path.display())]
    Safetensors {
        /// The weights file.
        path: PathBuf,
        /// The decoder's reason.
        message: String,
    },
    /// A tensor the architecture needs is not in the weights file.
    #[error("{path}: missing tensor `{tensor}`", path = path.display())]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's full name as it was looked for.
        tensor: String,
    },
    /// A tensor has a shape that does not fit the configuration.
    #[error("{path}: tensor `{tensor}` has shape {found:?}, but config.json implies {expected:?}", path = path.display())]
    TensorShape {
        /// The weights file.
        path: PathBuf,
        /// The tensor's full name.
        tensor: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a number type the loader cannot convert to floats.
    #[error("{path}: tensor `{tensor}` has dtype {dtype}; expected f32, f16, bf16 or f64", path = path.display())]
    TensorDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor's full name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A GGUF file is broken: not GGUF, truncated, or a metadata key is
    /// missing or holds the wrong type. `place` names the key or tensor.
    #[error("{path}: {place}: {message}", path = path.display())]
    Gguf {
        /// The GGUF file.
        path: PathBuf,
        /// Where in the file: `key \`llama.block_count\``, `tensor \`blk.0.attn_q.weight\``,
        /// or `header`.
        place: String,
        /// What is wrong.
        message: String,
    },
    /// The tokenizer file cannot be loaded or configured.
    #[error("{path}: tokenizer: {message}", path = path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizers library's reason.
        message: String,
    },
    /// Input the model cannot take (too long, token ids out of range,
    /// mismatched shapes), with the input named.
    #[error("input `{input}`: {message}")]
    Input {
        /// Which input is at fault (`input_ids`, `text 3`, ...).
        input: String,
        /// What is wrong.
        message: String,
    },
    /// The derived blueprint does not check (an override the user gave
    /// does not fit, say).
    #[error(transparent)]
    Blueprint(attnflow_blueprint::Error),
    /// A failure in the attention engine.
    #[error(transparent)]
    Core(#[from] CoreError),
    /// A failure inside candle (allocation, an unsupported operation).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A user's text file is unreadable or malformed, at `location`
    /// (`file`, or `file:line:column`).
    #[error("{location}: {message}")]
    TextFile {
        /// The file, with line and column where there is one.
        location: String,
        /// What is wrong.
        message: String,
    },
}

impl attnflow_base::Classified for ModelError {
    fn fault(&self) -> attnflow_base::Fault {
        if self.is_input_fault() {
            attnflow_base::Fault::BadInput
        } else {
            attnflow_base::Fault::Failed
        }
    }
}

impl ModelError {
    /// Whether the fault lies in what the user supplied (a model directory,
    /// a file, a text) rather than in the work itself. The CLI exits with 2
    /// for these and 1 for the rest.
    pub fn is_input_fault(&self) -> bool {
        !matches!(
            self,
            Self::Io { .. } | Self::Candle(_) | Self::Core(CoreError::Candle(_))
        )
    }

    pub(crate) fn config(path: &std::path::Path, field: &str, message: impl Into<String>) -> Self {
        Self::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// A bad input value, named.
    pub fn input(input: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Input {
            input: input.into(),
            message: message.into(),
        }
    }

    /// Wraps a `serde_json` parse failure with the file and position.
    pub(crate) fn json(path: &std::path::Path, error: &serde_json::Error) -> Self {
        Self::Json {
            path: path.to_path_buf(),
            line: error.line(),
            column: error.column(),
            // serde_json appends " at line L column C"; the position is
            // already in the message's prefix.
            message: match error.to_string().split_once(" at line ") {
                Some((message, _)) => message.to_string(),
                None => error.to_string(),
            },
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Reads a whole file, naming it when it is absent or unreadable.
pub(crate) fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(ModelError::MissingFile {
                path: path.to_path_buf(),
                what: what.to_string(),
            })
        }
        Err(source) => Err(ModelError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads and parses a JSON file, naming the file and position of a fault.
pub(crate) fn read_json(path: &std::path::Path, what: &str) -> Result<serde_json::Value> {
    let bytes = read_file(path, what)?;
    serde_json::from_slice(&bytes).map_err(|error| ModelError::json(path, &error))
}
