//! A streaming JSON Lines reader: one JSON object per line.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::{Body, Malformed, MalformedKind, Record, RecordSource};
use crate::error::{DataError, DataResult};

/// Streaming JSON Lines source. Lines longer than `max_record_bytes` are
/// quarantined with their head kept and the rest skipped, so memory stays
/// bounded.
pub struct JsonlSource<R> {
    input: BufReader<R>,
    path: PathBuf,
    line: u64,
    row: u64,
    consumed: u64,
    max_record_bytes: usize,
}

impl<R: Read + Send> JsonlSource<R> {
    /// Wraps a reader.
    pub fn new(input: R, path: &Path, max_record_bytes: usize) -> Self {
        Self {
            input: BufReader::with_capacity(256 * 1024, input),
            path: path.to_path_buf(),
            line: 0,
            row: 0,
            consumed: 0,
            max_record_bytes,
        }
    }

    /// Reads one physical line into `out` (without its newline), keeping at
    /// most `max_record_bytes`. Returns None at the end, else whether the
    /// line ended with a newline and whether it was cut.
    fn read_line(&mut self, out: &mut Vec<u8>) -> DataResult<Option<(bool, bool)>> {
        out.clear();
        let mut cut = false;
        let mut any = false;
        loop {
            let available = match self.input.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(DataError::io(&self.path, error)),
            };
            if available.is_empty() {
                return Ok(any.then_some((false, cut)));
            }
            any = true;
            let (chunk, used, done) = match available.iter().position(|&byte| byte == b'\n') {
                Some(offset) => (&available[..offset], offset + 1, true),
                None => (available, available.len(), false),
            };
            let room = self.max_record_bytes.saturating_sub(out.len());
            if chunk.len() > room {
                cut = true;
            }
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            self.input.consume(used);
            self.consumed += used as u64;
            if done {
                return Ok(Some((true, cut)));
            }
        }
    }
}

impl<R: Read + Send> RecordSource for JsonlSource<R> {
    fn next_record(&mut self, record: &mut Record) -> DataResult<bool> {
        let mut line = std::mem::take(&mut record.raw);
        loop {
            let Some((had_newline, cut)) = self.read_line(&mut line)? else {
                record.raw = line;
                return Ok(false);
            };
            self.line += 1;
            if line.last() == Some(&b'\r') && !cut {
                line.pop();
            }
            if !cut && line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.row += 1;
            record.row = self.row;
            record.line = self.line;
            record.raw_cut = cut;
            record.body = if cut {
                Body::Malformed(Malformed {
                    kind: MalformedKind::TooLong,
                    column: Some(self.max_record_bytes as u64 + 1),
                    message: format!("line longer than {} bytes", self.max_record_bytes),
                })
            } else {
                parse_line(&line, had_newline)
            };
            record.raw = line;
            return Ok(true);
        }
    }

    fn columns(&self) -> &[String] {
        &[]
    }

    fn bytes_read(&self) -> u64 {
        self.consumed
    }
}

fn parse_line(line: &[u8], had_newline: bool) -> Body {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text,
        Err(error) => {
            return Body::Malformed(Malformed {
                kind: MalformedKind::InvalidUtf8,
                column: Some(error.valid_up_to() as u64 + 1),
                message: format!("invalid UTF-8 at byte {}", error.valid_up_to() + 1),
            })
        }
    };
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Body::Json(map),
        Ok(other) => Body::Malformed(Malformed {
            kind: MalformedKind::NotAnObject,
            column: Some(1),
            message: format!(
                "expected a JSON object, found {}",
                match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a bool",
                    _ => "null",
                }
            ),
        }),
        Err(error) => {
            let truncated = error.is_eof() && !had_newline;
            Body::Malformed(Malformed {
                kind: if truncated {
                    MalformedKind::Truncated
                } else {
                    MalformedKind::InvalidJson
                },
                column: Some(error.column() as u64),
                message: if truncated {
                    format!("the file ends inside this JSON object ({error})")
                } else {
                    format!("invalid JSON: {error}")
                },
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_and_quarantines_the_rest() {
        let data = b"{\"a\":1}\r\n\n[1]\n{\"a\":\n{\"a\":\"\xff\"}\n{\"a\":2}\n{\"a\":";
        let mut source = JsonlSource::new(&data[..], Path::new("t.jsonl"), 1 << 20);
        let mut record = Record::default();
        let mut seen = Vec::new();
        while source.next_record(&mut record).unwrap() {
            seen.push((
                record.row,
                record.line,
                match &record.body {
                    Body::Json(map) => Ok(map["a"].clone()),
                    Body::Malformed(fault) => Err(fault.kind),
                    Body::Text { .. } => unreachable!(),
                },
            ));
        }
        assert_eq!(
            seen,
            [
                (1, 1, Ok(serde_json::json!(1))),
                (2, 3, Err(MalformedKind::NotAnObject)),
                (3, 4, Err(MalformedKind::InvalidJson)),
                (4, 5, Err(MalformedKind::InvalidUtf8)),
                (5, 6, Ok(serde_json::json!(2))),
                (6, 7, Err(MalformedKind::Truncated)),
            ]
        );
    }

    #[test]
    fn long_lines_are_cut() {
        let mut data = b"{\"a\":\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 5000));
        data.extend_from_slice(b"\"}\n{\"a\":1}\n");
        let mut source = JsonlSource::new(&data[..], Path::new("t.jsonl"), 64);
        let mut record = Record::default();
        assert!(source.next_record(&mut record).unwrap());
        assert!(record.raw_cut && record.raw.len() == 64);
        assert!(
            matches!(&record.body, Body::Malformed(fault) if fault.kind == MalformedKind::TooLong)
        );
        assert!(source.next_record(&mut record).unwrap());
        assert!(matches!(record.body, Body::Json(_)));
        assert_eq!(record.line, 2);
        assert!(!source.next_record(&mut record).unwrap());
    }
}
