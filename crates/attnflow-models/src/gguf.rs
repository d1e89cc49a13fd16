//! GGUF files (llama.cpp's format): metadata and tensors, read with
//! candle-core's `quantized::gguf_file` reader, every fault named by its key
//! or tensor.
//!
//! Tensors of the types [`Packing`] knows (F32, F16, BF16, Q8_0, Q4_0,
//! Q4_1) stay in their blocks ([`attnflow_kernels::packed`]); other types candle can
//! dequantize (Q5_0, Q5_1, the K-quants) are dequantized to `f32` on load.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, TensorInfo, Value};
use candle_core::quantized::GgmlDType;

use crate::error::{ModelError, Result};
use attnflow_kernels::packed::{PackedMatrix, Packing};

/// The first four bytes of every GGUF file.
const MAGIC: &[u8; 4] = b"GGUF";

/// An open GGUF file: its metadata and where its tensors lie.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    file_size: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.content.tensor_infos.len())
            .finish()
    }
}

/// Whether `path` looks like a GGUF file: its name ends in `.gguf` or it
/// starts with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    if path.is_dir() {
        return false;
    }
    if path
        .extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok_and(|()| &magic == MAGIC)
}

impl GgufFile {
    /// Reads the header (metadata and tensor table) and checks that every
    /// tensor lies inside the file and has a type this crate reads.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound {
                ModelError::MissingFile {
                    path: path.to_path_buf(),
                    what: "a GGUF model file".to_string(),
                }
            } else {
                ModelError::Io {
                    path: path.to_path_buf(),
                    source: error,
                }
            }
        })?;
        let file_size = file
            .metadata()
            .map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != MAGIC {
            return Err(fault(
                path,
                "header",
                format!(
                    "not a GGUF file (it starts with {:?}, not \"GGUF\")",
                    String::from_utf8_lossy(&magic[..])
                ),
            ));
        }
        reader
            .seek(SeekFrom::Start(0))
            .map_err(|source| ModelError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let content = Content::read(&mut reader).map_err(|error| {
            let place = locate_header_fault(path).unwrap_or_else(|| "header".to_string());
            fault(path, &place, error.to_string())
        })?;
        let gguf = Self {
            path: path.to_path_buf(),
            content,
            file_size,
        };
        gguf.check_tensors()?;
        Ok(gguf)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_tensors(&self) -> Result<()> {
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort();
        for name in names {
            let info = &self.content.tensor_infos[name];
            let place = format!("tensor `{name}`");
            let elements = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elements % block != 0 {
                return Err(fault(
                    &self.path,
                    &place,
                    format!(
                        "{elements} values of type {:?} do not fill whole blocks of {block}",
                        info.ggml_dtype
                    ),
                ));
            }
            let bytes = (elements / block * info.ggml_dtype.type_size()) as u64;
            let start = self.content.tensor_data_offset.saturating_add(info.offset);
            let end = start.saturating_add(bytes);
            if end > self.file_size {
                return Err(fault(
                    &self.path,
                    &place,
                    format!(
                        "the file is truncated: the tensor's {bytes} bytes end at byte {end}, but the file has {}",
                        self.file_size
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Every tensor name, sorted.
    pub fn tensor_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.content.tensor_infos.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether the file holds tensor `name`.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The metadata value of `key`, if present.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A fault at metadata key `key`.
    pub fn key_fault(&self, key: &str, message: impl Into<String>) -> ModelError {
        fault(&self.path, &format!("key `{key}`"), message.into())
    }

    /// A fault at tensor `name`.
    pub fn tensor_fault(&self, name: &str, message: impl Into<String>) -> ModelError {
        fault(&self.path, &format!("tensor `{name}`"), message.into())
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<String> {
        self.optional_string(key)?
            .ok_or_else(|| self.key_fault(key, "required, but absent"))
    }

    /// An optional string.
    pub fn optional_string(&self, key: &str) -> Result<Option<String>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => {
                Err(self.key_fault(key, format!("expected a string, got {}", describe(other))))
            }
        }
    }

    /// An optional whole number (any integer type).
    pub fn optional_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.value(key) {
            None => Ok(None),
            Some(value) => whole(value).map(Some).ok_or_else(|| {
                self.key_fault(
                    key,
                    format!("expected a whole number, got {}", describe(value)),
                )
            }),
        }
    }

    /// A required positive whole number.
    pub fn positive(&self, key: &str) -> Result<usize> {
        match self.optional_u64(key)? {
            None => Err(self.key_fault(key, "required, but absent")),
            Some(0) => Err(self.key_fault(key, "must be at least 1, got 0")),
            Some(value) => usize::try_from(value)
                .map_err(|_| self.key_fault(key, format!("{value} is too large"))),
        }
    }

    /// An optional number (float or integer).
    pub fn optional_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::F32(value)) => Ok(Some(*value as f64)),
            Some(Value::F64(value)) => Ok(Some(*value)),
            Some(value) => whole(value).map(|value| Some(value as f64)).ok_or_else(|| {
                self.key_fault(key, format!("expected a number, got {}", describe(value)))
            }),
        }
    }

    /// An optional boolean.
    pub fn optional_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(value)) => Ok(Some(*value)),
            Some(other) => Err(self.key_fault(
                key,
                format!("expected true or false, got {}", describe(other)),
            )),
        }
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::String(text) => Ok(text.clone()),
                    other => Err(self.key_fault(
                        key,
                        format!("item {index}: expected a string, got {}", describe(other)),
                    )),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.key_fault(
                key,
                format!("expected an array of strings, got {}", describe(other)),
            )),
        }
    }

    /// An array of whole numbers.
    pub fn integers(&self, key: &str) -> Result<Option<Vec<i64>>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    signed(item).ok_or_else(|| {
                        self.key_fault(
                            key,
                            format!(
                                "item {index}: expected a whole number, got {}",
                                describe(item)
                            ),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(self.key_fault(
                key,
                format!("expected an array of numbers, got {}", describe(other)),
            )),
        }
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.content
            .tensor_infos
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }

    /// The shape of tensor `name` in row-major order (outermost first, as
    /// candle and PyTorch write it), if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|info| info.shape.dims().to_vec())
    }

    fn check_shape(&self, name: &str, info: &TensorInfo, expected: &[usize]) -> Result<()> {
        if info.shape.dims() != expected {
            return Err(ModelError::TensorShape {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.dims().to_vec(),
            });
        }
        Ok(())
    }

    /// A `rows × columns` matrix, kept in its blocks when [`Packing`] knows
    /// its type and dequantized to `f32` otherwise.
    pub fn matrix(&self, name: &str, rows: usize, columns: usize) -> Result<PackedMatrix> {
        let info = self.info(name)?;
        self.check_shape(name, info, &[rows, columns])?;
        let packing = match info.ggml_dtype {
            GgmlDType::F32 => Some(Packing::F32),
            GgmlDType::F16 => Some(Packing::F16),
            GgmlDType::BF16 => Some(Packing::Bf16),
            GgmlDType::Q8_0 => Some(Packing::Q8_0),
            GgmlDType::Q4_0 => Some(Packing::Q4_0),
            GgmlDType::Q4_1 => Some(Packing::Q4_1),
            _ => None,
        };
        let matrix = match packing {
            Some(packing) => {
                PackedMatrix::from_bytes(rows, columns, packing, self.raw(name, info)?)
            }
            None => PackedMatrix::from_f32(rows, columns, self.dequantized(name)?),
        };
        matrix.map_err(|message| self.tensor_fault(name, message))
    }

    /// A vector of `length` values as `f32`.
    pub fn vector(&self, name: &str, length: usize) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        self.check_shape(name, info, &[length])?;
        self.dequantized(name)
    }

    fn raw(&self, name: &str, info: &TensorInfo) -> Result<Vec<u8>> {
        let elements = info.shape.elem_count();
        let bytes = elements / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let mut file = File::open(&self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?;
        let mut data = vec![0u8; bytes];
        file.seek(SeekFrom::Start(
            self.content.tensor_data_offset + info.offset,
        ))
        .and_then(|_| file.read_exact(&mut data))
        .map_err(|error| {
            self.tensor_fault(name, format!("cannot read its {bytes} bytes: {error}"))
        })?;
        Ok(data)
    }

    fn dequantized(&self, name: &str) -> Result<Vec<f32>> {
        let mut file = BufReader::new(File::open(&self.path).map_err(|source| ModelError::Io {
            path: self.path.clone(),
            source,
        })?);
        let device = candle_core::Device::Cpu;
        self.content
            .tensor(&mut file, name, &device)
            .and_then(|tensor| tensor.dequantize(&device))
            .and_then(|tensor| tensor.flatten_all())
            .and_then(|tensor| tensor.to_vec1::<f32>())
            .map_err(|error| self.tensor_fault(name, error.to_string()))
    }
}

fn fault(path: &Path, place: &str, message: String) -> ModelError {
    ModelError::Gguf {
        path: path.to_path_buf(),
        place: place.to_string(),
        message,
    }
}

fn whole(value: &Value) -> Option<u64> {
    match value {
        Value::U8(v) => Some(*v as u64),
        Value::U16(v) => Some(*v as u64),
        Value::U32(v) => Some(*v as u64),
        Value::U64(v) => Some(*v),
        Value::I8(v) => u64::try_from(*v).ok(),
        Value::I16(v) => u64::try_from(*v).ok(),
        Value::I32(v) => u64::try_from(*v).ok(),
        Value::I64(v) => u64::try_from(*v).ok(),
        _ => None,
    }
}

fn signed(value: &Value) -> Option<i64> {
    match value {
        Value::I8(v) => Some(*v as i64),
        Value::I16(v) => Some(*v as i64),
        Value::I32(v) => Some(*v as i64),
        Value::I64(v) => Some(*v),
        other => whole(other).and_then(|v| i64::try_from(v).ok()),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string {text:?}"),
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::Bool(flag) => format!("the boolean {flag}"),
        other => format!("{other:?}"),
    }
}

/// Where a header that candle refused goes wrong: walks the header to the
/// first key or tensor entry that cannot be read, so the message names it.
/// `None` when the walk finds nothing (the fault is elsewhere).
fn locate_header_fault(path: &Path) -> Option<String> {
    let mut reader = BufReader::new(File::open(path).ok()?);
    let mut walker = HeaderWalker {
        reader: &mut reader,
        wide: true,
    };
    walker.walk().err()
}

/// A minimal reader of GGUF's header layout, used only to name the entry
/// candle's reader stopped at.
struct HeaderWalker<'a, R> {
    reader: &'a mut R,
    /// Lengths and counts are u64 from version 2 on (u32 in version 1).
    wide: bool,
}

impl<R: Read> HeaderWalker<'_, R> {
    fn bytes<const N: usize>(&mut self) -> std::result::Result<[u8; N], ()> {
        let mut buffer = [0u8; N];
        self.reader.read_exact(&mut buffer).map_err(|_| ())?;
        Ok(buffer)
    }

    fn u32(&mut self) -> std::result::Result<u32, ()> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn length(&mut self) -> std::result::Result<u64, ()> {
        if self.wide {
            self.bytes::<8>().map(u64::from_le_bytes)
        } else {
            self.u32().map(u64::from)
        }
    }

    fn skip(&mut self, count: u64) -> std::result::Result<(), ()> {
        let copied =
            std::io::copy(&mut self.reader.take(count), &mut std::io::sink()).map_err(|_| ())?;
        if copied == count {
            Ok(())
        } else {
            Err(())
        }
    }

    fn string(&mut self) -> std::result::Result<String, ()> {
        let length = self.length()?;
        if length > 1 << 20 {
            return Err(());
        }
        let mut buffer = vec![0u8; length as usize];
        self.reader.read_exact(&mut buffer).map_err(|_| ())?;
        Ok(String::from_utf8_lossy(&buffer).into_owned())
    }

    /// Skips one value of type `kind`; `Err` names why it cannot.
    fn value(&mut self, kind: u32, depth: usize) -> std::result::Result<(), String> {
        let truncated = || "the file ends inside its value".to_string();
        let size = match kind {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => {
                let length = self.length().map_err(|_| truncated())?;
                return self.skip(length).map_err(|_| truncated());
            }
            9 => {
                if depth > 2 {
                    return Err("arrays nested too deeply".to_string());
                }
                let inner = self.u32().map_err(|_| truncated())?;
                let count = self.length().map_err(|_| truncated())?;
                for _ in 0..count {
                    self.value(inner, depth + 1)?;
                }
                return Ok(());
            }
            other => return Err(format!("unknown value type {other}")),
        };
        self.skip(size).map_err(|_| truncated())
    }

    fn walk(&mut self) -> std::result::Result<(), String> {
        let header = |message: &str| format!("header ({message})");
        let magic = self
            .bytes::<4>()
            .map_err(|_| header("shorter than the magic"))?;
        if &magic != MAGIC {
            return Err(header("bad magic"));
        }
        let version = self.u32().map_err(|_| header("no version"))?;
        self.wide = version >= 2;
        let tensors = self.length().map_err(|_| header("no tensor count"))?;
        let keys = self.length().map_err(|_| header("no key count"))?;
        for index in 0..keys {
            let key = self
                .string()
                .map_err(|_| format!("metadata entry {index} (its key cannot be read)"))?;
            let kind = self
                .u32()
                .map_err(|_| format!("key `{key}` (the file ends inside it)"))?;
            self.value(kind, 0)
                .map_err(|message| format!("key `{key}` ({message})"))?;
        }
        for index in 0..tensors {
            let name = self
                .string()
                .map_err(|_| format!("tensor entry {index} (its name cannot be read)"))?;
            let place = |message: String| format!("tensor `{name}` ({message})");
            let dims = self.u32().map_err(|_| place("truncated".to_string()))?;
            if dims > 4 {
                return Err(place(format!("{dims} dimensions")));
            }
            for _ in 0..dims {
                self.length().map_err(|_| place("truncated".to_string()))?;
            }
            let kind = self.u32().map_err(|_| place("truncated".to_string()))?;
            if ggml_type_name(kind).is_none() {
                return Err(place(format!(
                    "unknown quantisation type {kind}; attnflow reads F32, F16, BF16, Q8_0, Q4_0, Q4_1 and the types candle dequantizes (Q5_0, Q5_1, Q8_1, Q2_K…Q8_K)"
                )));
            }
            self.bytes::<8>()
                .map_err(|_| place("truncated".to_string()))?;
        }
        Ok(())
    }
}

/// The name of a ggml type id candle can read.
fn ggml_type_name(kind: u32) -> Option<&'static str> {
    Some(match kind {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        30 => "BF16",
        _ => return None,
    })
}

/// Every tensor name with its type name and shape, for reports.
pub fn tensor_table(gguf: &GgufFile) -> HashMap<String, (String, Vec<usize>)> {
    gguf.content
        .tensor_infos
        .iter()
        .map(|(name, info)| {
            (
                name.clone(),
                (format!("{:?}", info.ggml_dtype), info.shape.dims().to_vec()),
            )
        })
        .collect()
}
