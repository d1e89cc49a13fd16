//! A strict, streaming CSV reader (RFC 4180 plus a chosen delimiter).
//!
//! Why not the `csv` crate: it is lenient by design (a stray quote becomes
//! data), while a quality check must flag bad quoting and recover at the next
//! line without losing any byte. This reader keeps the raw bytes of every
//! record, reports the fault, and resynchronises at the end of the record's
//! first physical line, so one broken quote costs one line, not the file.

use std::io::{ErrorKind, Read};
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{BlockLayout, Body, Malformed, MalformedKind, Record, RecordSource};
use crate::bytes::{count_byte, find_byte, rfind_byte};
use crate::error::{DataError, DataResult};
use crate::schema::SourceOptions;

const INITIAL_BUFFER: usize = 256 * 1024;

/// Below this `max_record_bytes`, blocks would be too small to help.
const MIN_BLOCK: usize = 4096;

/// Longest block: blocks in flight stay small even when one long record
/// has grown the reader's buffer (and offsets inside them fit in `u32`).
const MAX_BLOCK: usize = 1 << 20;

/// Streaming CSV source with quarantine-friendly error recovery.
pub struct CsvSource<R> {
    input: R,
    path: PathBuf,
    buffer: Vec<u8>,
    position: usize,
    filled: usize,
    eof: bool,
    line: u64,
    row: u64,
    consumed: u64,
    delimiter: u8,
    quote: u8,
    max_record_bytes: usize,
    expected_columns: usize,
    columns: Vec<String>,
    scratch: Vec<u8>,
    ends: Vec<usize>,
}

enum Outcome {
    NeedMore,
    Record {
        end: usize,
    },
    Fault {
        kind: MalformedKind,
        at: usize,
        message: &'static str,
    },
}

/// Parses one record from `input` (which starts at a record boundary),
/// writing unescaped fields into `scratch` and their ends into `ends`.
fn parse(
    input: &[u8],
    eof: bool,
    delimiter: u8,
    quote: u8,
    scratch: &mut Vec<u8>,
    ends: &mut Vec<usize>,
) -> Outcome {
    scratch.clear();
    ends.clear();
    let mut index = 0;
    loop {
        // At the start of a field.
        if index == input.len() {
            if eof {
                ends.push(scratch.len());
                return Outcome::Record { end: index };
            }
            return Outcome::NeedMore;
        }
        if input[index] == quote {
            index += 1;
            loop {
                let Some(offset) = input[index..].iter().position(|&byte| byte == quote) else {
                    if eof {
                        return Outcome::Fault {
                            kind: MalformedKind::Truncated,
                            at: input.len(),
                            message: "the file ends inside a quoted field",
                        };
                    }
                    return Outcome::NeedMore;
                };
                scratch.extend_from_slice(&input[index..index + offset]);
                index += offset + 1;
                match input.get(index) {
                    None if !eof => return Outcome::NeedMore,
                    None => {
                        ends.push(scratch.len());
                        return Outcome::Record { end: index };
                    }
                    Some(&byte) if byte == quote => {
                        scratch.push(quote);
                        index += 1;
                    }
                    Some(&byte) if byte == delimiter => {
                        ends.push(scratch.len());
                        index += 1;
                        break;
                    }
                    Some(b'\n') => {
                        ends.push(scratch.len());
                        return Outcome::Record { end: index + 1 };
                    }
                    Some(b'\r') => match input.get(index + 1) {
                        Some(b'\n') => {
                            ends.push(scratch.len());
                            return Outcome::Record { end: index + 2 };
                        }
                        None if !eof => return Outcome::NeedMore,
                        _ => {
                            return Outcome::Fault {
                                kind: MalformedKind::BadQuoting,
                                at: index,
                                message: "text after a closing quote",
                            }
                        }
                    },
                    Some(_) => {
                        return Outcome::Fault {
                            kind: MalformedKind::BadQuoting,
                            at: index,
                            message: "text after a closing quote",
                        }
                    }
                }
            }
        } else {
            let start = index;
            while index < input.len() {
                let byte = input[index];
                if byte == delimiter || byte == b'\n' || byte == quote {
                    break;
                }
                index += 1;
            }
            if index == input.len() {
                if !eof {
                    return Outcome::NeedMore;
                }
                let field = &input[start..index];
                let field = field.strip_suffix(b"\r").unwrap_or(field);
                scratch.extend_from_slice(field);
                ends.push(scratch.len());
                return Outcome::Record { end: index };
            }
            let byte = input[index];
            if byte == quote {
                return Outcome::Fault {
                    kind: MalformedKind::BadQuoting,
                    at: index,
                    message: "a quote inside an unquoted field",
                };
            }
            let field = &input[start..index];
            if byte == delimiter {
                scratch.extend_from_slice(field);
                ends.push(scratch.len());
                index += 1;
            } else {
                scratch.extend_from_slice(field.strip_suffix(b"\r").unwrap_or(field));
                ends.push(scratch.len());
                return Outcome::Record { end: index + 1 };
            }
        }
    }
}

/// The body of a parsed record from its unescaped fields (`text`, with
/// the end of each field in `ends`): the text, or the invalid-UTF-8 or
/// column-count fault. The buffers come back when the body does not keep
/// them.
#[allow(clippy::type_complexity)]
fn text_body(
    text: Vec<u8>,
    ends: Vec<usize>,
    expected_columns: usize,
) -> (Body, Option<(Vec<u8>, Vec<usize>)>) {
    match String::from_utf8(text) {
        Ok(text) => {
            if expected_columns > 0 && ends.len() != expected_columns {
                let found = ends.len();
                (
                    Body::Malformed(Malformed {
                        kind: MalformedKind::ColumnCount,
                        column: None,
                        message: format!("expected {expected_columns} fields, found {found}"),
                    }),
                    Some((text.into_bytes(), ends)),
                )
            } else {
                (Body::Text { text, ends }, None)
            }
        }
        Err(error) => {
            let valid = error.utf8_error().valid_up_to();
            let field = ends
                .iter()
                .position(|&end| end > valid)
                .unwrap_or(ends.len().saturating_sub(1));
            (
                Body::Malformed(Malformed {
                    kind: MalformedKind::InvalidUtf8,
                    column: Some(field as u64 + 1),
                    message: format!("field {} is not valid UTF-8", field + 1),
                }),
                Some((error.into_bytes(), ends)),
            )
        }
    }
}

/// The record a reader makes of one whole, quote-free line (ending in a
/// newline) of a block from [`RecordSource::next_block`], starting at
/// `line`; its row is left 0 for the caller to number.
pub(crate) fn record_from_line(bytes: &[u8], line: u64, layout: &BlockLayout) -> Record {
    let mut text = Vec::new();
    let mut ends = Vec::new();
    let body = match parse(
        bytes,
        false,
        layout.delimiter,
        layout.quote,
        &mut text,
        &mut ends,
    ) {
        Outcome::Record { .. } => text_body(text, ends, layout.expected_columns).0,
        // Not reached: blocks hold whole lines without quotes.
        Outcome::NeedMore | Outcome::Fault { .. } => Body::Malformed(Malformed {
            kind: MalformedKind::Unreadable,
            column: None,
            message: "the line is not a whole record".to_owned(),
        }),
    };
    Record {
        row: 0,
        line,
        raw: bytes.to_vec(),
        raw_cut: false,
        body,
    }
}

impl<R: Read + Send> CsvSource<R> {
    /// Opens a CSV stream; reads the header when `options.header` is set,
    /// otherwise expects `field_count` columns in schema order.
    pub fn new(
        input: R,
        path: &Path,
        options: &SourceOptions,
        field_count: usize,
    ) -> DataResult<Self> {
        let mut source = Self::with_columns(input, path, options, Vec::new());
        // The header sets the column count; without one, the schema does.
        source.expected_columns = if options.header { 0 } else { field_count };
        if options.header {
            let mut header = Record::default();
            if !source.next_record(&mut header)? {
                return Err(DataError::Source {
                    path: path.to_path_buf(),
                    line: 1,
                    message: "the file is empty; expected a header row".to_owned(),
                });
            }
            source.row = 0;
            match header.body {
                Body::Text { text, ends } => {
                    let mut start = 0;
                    for end in ends {
                        source.columns.push(text[start..end].trim().to_owned());
                        start = end;
                    }
                }
                Body::Malformed(fault) => {
                    return Err(DataError::Source {
                        path: path.to_path_buf(),
                        line: header.line,
                        message: format!("unreadable header: {}", fault.message),
                    })
                }
                Body::Json(_) => unreachable!("the CSV reader yields text"),
            }
            source.expected_columns = source.columns.len();
            let mut seen = std::collections::HashSet::new();
            for name in &source.columns {
                if !seen.insert(name) {
                    return Err(DataError::Source {
                        path: path.to_path_buf(),
                        line: header.line,
                        message: format!("the header names column `{name}` twice"),
                    });
                }
            }
        }
        Ok(source)
    }

    /// A headerless stream whose columns are already known (used to
    /// re-parse quarantined raw bytes).
    pub fn with_columns(
        input: R,
        path: &Path,
        options: &SourceOptions,
        columns: Vec<String>,
    ) -> Self {
        Self {
            input,
            path: path.to_path_buf(),
            buffer: vec![0; INITIAL_BUFFER.min(options.max_record_bytes.saturating_mul(2).max(64))],
            position: 0,
            filled: 0,
            eof: false,
            line: 1,
            row: 0,
            consumed: 0,
            delimiter: options.delimiter,
            quote: options.quote,
            max_record_bytes: options.max_record_bytes,
            expected_columns: columns.len(),
            columns,
            scratch: Vec::new(),
            ends: Vec::new(),
        }
    }

    /// Moves unread bytes to the front and reads more; grows the buffer when
    /// one record fills it. Returns false when nothing more can be read.
    fn fill(&mut self) -> DataResult<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.position > 0 {
            self.buffer.copy_within(self.position..self.filled, 0);
            self.filled -= self.position;
            self.position = 0;
        }
        if self.filled == self.buffer.len() {
            let grown = (self.buffer.len() * 2).max(64);
            self.buffer.resize(grown, 0);
        }
        loop {
            match self.input.read(&mut self.buffer[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(true);
                }
                Ok(count) => {
                    self.filled += count;
                    return Ok(true);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => return Err(DataError::io(&self.path, error)),
            }
        }
    }

    fn advance(&mut self, count: usize) {
        let newlines = count_byte(&self.buffer[self.position..self.position + count], b'\n');
        self.line += newlines as u64;
        self.position += count;
        self.consumed += count as u64;
    }

    /// Quarantines the first physical line of the current record and moves
    /// past it, so that reading resumes at the next line.
    fn skip_first_line(&mut self, record: &mut Record, fault: Malformed) -> DataResult<()> {
        loop {
            let keep = self.max_record_bytes.saturating_sub(record.raw.len());
            let unread = &self.buffer[self.position..self.filled];
            match unread.iter().position(|&byte| byte == b'\n') {
                Some(offset) => {
                    let take = (offset + 1).min(keep);
                    record.raw.extend_from_slice(&unread[..take]);
                    record.raw_cut |= take < offset + 1;
                    self.advance(offset + 1);
                    break;
                }
                None => {
                    // Keep the head of an overlong line; drop the rest as it
                    // streams past so memory stays bounded.
                    let length = unread.len();
                    let take = length.min(keep);
                    record.raw.extend_from_slice(&unread[..take]);
                    record.raw_cut |= take < length;
                    self.advance(length);
                    if self.eof || !self.fill()? {
                        break;
                    }
                }
            }
        }
        record.body = Body::Malformed(fault);
        Ok(())
    }
}

impl<R: Read + Send> RecordSource for CsvSource<R> {
    fn next_record(&mut self, record: &mut Record) -> DataResult<bool> {
        // Skip blank lines: they hold no record.
        loop {
            if self.position == self.filled {
                if self.eof || !self.fill()? {
                    return Ok(false);
                }
                continue;
            }
            if self.consumed == 0
                && self.buffer[self.position..self.filled].starts_with(b"\xEF\xBB\xBF")
            {
                self.position += 3;
                self.consumed += 3;
                continue;
            }
            match self.buffer[self.position] {
                b'\n' => self.advance(1),
                b'\r' => match self
                    .buffer
                    .get(self.position + 1)
                    .filter(|_| self.position + 1 < self.filled)
                {
                    Some(b'\n') => self.advance(2),
                    None if !self.eof => {
                        self.fill()?;
                    }
                    _ => break,
                },
                _ => break,
            }
        }

        self.row += 1;
        record.row = self.row;
        record.line = self.line;
        record.raw.clear();
        record.raw_cut = false;
        loop {
            let outcome = parse(
                &self.buffer[self.position..self.filled],
                self.eof,
                self.delimiter,
                self.quote,
                &mut self.scratch,
                &mut self.ends,
            );
            // A record is too long whether or not its end happens to be in
            // the buffer already, so the verdict never depends on where a
            // read stopped.
            let too_long = match outcome {
                Outcome::NeedMore => self.filled - self.position >= self.max_record_bytes,
                Outcome::Record { end } => end > self.max_record_bytes,
                Outcome::Fault { .. } => false,
            };
            if too_long {
                let fault = Malformed {
                    kind: MalformedKind::TooLong,
                    column: Some(self.ends.len() as u64 + 1),
                    message: format!(
                        "record longer than {} bytes (an unclosed quote?); quarantined its first line",
                        self.max_record_bytes
                    ),
                };
                self.skip_first_line(record, fault)?;
                return Ok(true);
            }
            match outcome {
                Outcome::NeedMore => {
                    self.fill()?;
                }
                Outcome::Fault { kind, at, message } => {
                    let before = &self.buffer[self.position..self.position + at];
                    let line_offset = before.iter().filter(|&&byte| byte == b'\n').count() as u64;
                    let column = before.len()
                        - before
                            .iter()
                            .rposition(|&byte| byte == b'\n')
                            .map_or(0, |index| index + 1)
                        + 1;
                    let fault = Malformed {
                        kind,
                        column: Some(self.ends.len() as u64 + 1),
                        message: format!(
                            "{message} (line {}, byte {column}, field {})",
                            self.line + line_offset,
                            self.ends.len() + 1
                        ),
                    };
                    self.skip_first_line(record, fault)?;
                    return Ok(true);
                }
                Outcome::Record { end } => {
                    record
                        .raw
                        .extend_from_slice(&self.buffer[self.position..self.position + end]);
                    self.advance(end);
                    let scratch = std::mem::take(&mut self.scratch);
                    let ends = std::mem::take(&mut self.ends);
                    // Reuse the record's previous allocations for the next parse.
                    if let Body::Text {
                        text,
                        ends: old_ends,
                    } = std::mem::replace(&mut record.body, Body::Json(Default::default()))
                    {
                        self.scratch = text.into_bytes();
                        self.ends = old_ends;
                    }
                    let (body, spare) = text_body(scratch, ends, self.expected_columns);
                    if let Some((scratch, ends)) = spare {
                        self.scratch = scratch;
                        self.ends = ends;
                    }
                    record.body = body;
                    return Ok(true);
                }
            }
        }
    }

    fn block_layout(&self) -> Option<BlockLayout> {
        let plain = |byte: u8| byte.is_ascii() && byte != b'\n' && byte != b'\r';
        (plain(self.delimiter)
            && plain(self.quote)
            && self.delimiter != self.quote
            && self.max_record_bytes >= MIN_BLOCK)
            .then_some(BlockLayout {
                delimiter: self.delimiter,
                quote: self.quote,
                expected_columns: self.expected_columns,
            })
    }

    fn next_block(&mut self, block: &mut Vec<u8>) -> DataResult<Option<(u64, Range<usize>)>> {
        // The first record may start with a byte order mark: read it alone.
        if self.consumed == 0 || self.block_layout().is_none() {
            return Ok(None);
        }
        if self.filled - self.position < self.buffer.len() / 2 && !self.eof {
            self.fill()?;
        }
        // Whole lines, each no longer than `max_record_bytes` (so none can
        // be too long, whatever the buffer), before the first quote: there
        // every newline ends a record, as `next_record` would find.
        let limit = (self.filled - self.position)
            .min(self.max_record_bytes)
            .min(MAX_BLOCK);
        let unread = &self.buffer[self.position..self.position + limit];
        let clean = match find_byte(unread, self.quote) {
            Some(quote) => &unread[..quote],
            None => unread,
        };
        let Some(last) = rfind_byte(clean, b'\n') else {
            return Ok(None);
        };
        let length = last + 1;
        let first_line = self.line;
        let start = self.position;
        self.advance(length);
        // Buffers of the usual size are swapped with blocks of the same
        // size; a buffer grown by a long record is never handed out.
        let swappable = self.buffer.len() <= 4 * MAX_BLOCK;
        if swappable && block.len() < self.buffer.len() {
            block.resize(self.buffer.len(), 0);
        }
        if !swappable || block.len() != self.buffer.len() || length < self.buffer.len() / 4 {
            if block.len() < length {
                block.resize(length, 0);
            }
            block[..length].copy_from_slice(&self.buffer[start..start + length]);
            return Ok(Some((first_line, 0..length)));
        }
        // A large block: hand over the buffer itself and keep reading in
        // `block`'s memory, so the block's bytes are not copied; only the
        // unread tail (a partial line) moves.
        std::mem::swap(&mut self.buffer, block);
        let tail = self.filled - self.position;
        self.buffer[..tail].copy_from_slice(&block[self.position..self.filled]);
        self.position = 0;
        self.filled = tail;
        Ok(Some((first_line, start..start + length)))
    }

    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn bytes_read(&self) -> u64 {
        self.consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(data: &[u8], options: &SourceOptions, fields: usize) -> (Vec<String>, Vec<Record>) {
        let mut source = CsvSource::new(data, Path::new("t.csv"), options, fields).unwrap();
        let mut records = Vec::new();
        let mut record = Record::default();
        while source.next_record(&mut record).unwrap() {
            records.push(record.clone());
        }
        (source.columns().to_vec(), records)
    }

    fn fields(record: &Record) -> Vec<String> {
        match &record.body {
            Body::Text { ends, .. } => (0..ends.len())
                .map(|index| record.text_field(index).unwrap().to_owned())
                .collect(),
            other => panic!("not text: {other:?}"),
        }
    }

    fn fault(record: &Record) -> MalformedKind {
        match &record.body {
            Body::Malformed(fault) => fault.kind,
            other => panic!("not malformed: {other:?}"),
        }
    }

    #[test]
    fn quoted_fields_embedded_newlines_and_crlf() {
        let data = b"a,b,c\r\n1,\"x,\"\"y\"\"\nz\",3\r\n\r\n4,,\"\"\n5,6,7";
        let (columns, records) = read_all(data, &SourceOptions::default(), 0);
        assert_eq!(columns, ["a", "b", "c"]);
        assert_eq!(records.len(), 3);
        assert_eq!(fields(&records[0]), ["1", "x,\"y\"\nz", "3"]);
        assert_eq!((records[0].row, records[0].line), (1, 2));
        assert_eq!(fields(&records[1]), ["4", "", ""]);
        assert_eq!((records[1].row, records[1].line), (2, 5));
        assert_eq!(fields(&records[2]), ["5", "6", "7"]);
        assert_eq!(records[2].line, 6);
        let raw: Vec<u8> = records
            .iter()
            .flat_map(|record| record.raw.clone())
            .collect();
        assert_eq!(raw, b"1,\"x,\"\"y\"\"\nz\",3\r\n4,,\"\"\n5,6,7");
    }

    #[test]
    fn custom_delimiter_and_no_header() {
        let options = SourceOptions {
            delimiter: b';',
            header: false,
            ..SourceOptions::default()
        };
        let (columns, records) = read_all(b"1;a,b\n2;c\n", &options, 2);
        assert!(columns.is_empty());
        assert_eq!(fields(&records[0]), ["1", "a,b"]);
        assert_eq!(fields(&records[1]), ["2", "c"]);
    }

    #[test]
    fn faults_are_records_and_reading_resumes_at_the_next_line() {
        let data = b"a,b\n1,x\"y\n2,\"ok\"z\n3,\xff\n4,5,6\n5,good\n6,\"open";
        let (_, records) = read_all(data, &SourceOptions::default(), 0);
        let kinds: Vec<_> = records
            .iter()
            .map(|record| match &record.body {
                Body::Malformed(fault) => Some(fault.kind),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            [
                Some(MalformedKind::BadQuoting),
                Some(MalformedKind::BadQuoting),
                Some(MalformedKind::InvalidUtf8),
                Some(MalformedKind::ColumnCount),
                None,
                Some(MalformedKind::Truncated)
            ]
        );
        let lines: Vec<_> = records.iter().map(|record| record.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
        assert_eq!(records[0].raw, b"1,x\"y\n");
        assert_eq!(records[5].raw, b"6,\"open");
    }

    #[test]
    fn an_unclosed_quote_costs_one_line_and_bounded_memory() {
        let mut data = b"a,b\n1,\"never closed\n".to_vec();
        for index in 2..2000 {
            data.extend_from_slice(format!("{index},plain\n").as_bytes());
        }
        let options = SourceOptions {
            max_record_bytes: 1024,
            ..SourceOptions::default()
        };
        let (_, records) = read_all(&data, &options, 0);
        assert_eq!(fault(&records[0]), MalformedKind::TooLong);
        assert_eq!(records[0].raw, b"1,\"never closed\n");
        assert_eq!(records.len(), 1999);
        assert!(records[1..]
            .iter()
            .all(|record| matches!(record.body, Body::Text { .. })));
        assert_eq!(records[1].line, 3);
    }

    #[test]
    fn an_overlong_physical_line_is_cut_not_buffered() {
        let mut data = b"a\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 10_000));
        data.extend_from_slice(b"\nshort\n");
        let options = SourceOptions {
            max_record_bytes: 100,
            ..SourceOptions::default()
        };
        let (_, records) = read_all(&data, &options, 0);
        assert_eq!(records.len(), 2);
        assert_eq!(fault(&records[0]), MalformedKind::TooLong);
        assert!(records[0].raw_cut);
        assert!(records[0].raw.len() <= 100);
        assert_eq!(fields(&records[1]), ["short"]);
        assert_eq!(records[1].line, 3);
    }

    /// Hands out at most `step` bytes per read, as pipes and slow disks do.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let count = self.step.min(buf.len()).min(self.data.len());
            buf[..count].copy_from_slice(&self.data[..count]);
            self.data = &self.data[count..];
            Ok(count)
        }
    }

    #[test]
    fn an_overlong_complete_record_gets_one_verdict_however_it_is_read() {
        // A quoted field spanning two lines makes a 160-byte record; the
        // limit is 100 bytes. Whether its end is already in the buffer
        // depends on the read sizes; the verdict must not.
        let mut data = b"a,b\n1,\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 75));
        data.push(b'\n');
        data.extend(std::iter::repeat_n(b'y', 75));
        data.extend_from_slice(b"\"\n2,ok\n");
        let options = SourceOptions {
            max_record_bytes: 100,
            ..SourceOptions::default()
        };
        let mut verdicts = Vec::new();
        for step in [1, 7, 64, 100, 4096] {
            let reader = Trickle { data: &data, step };
            let mut source = CsvSource::new(reader, Path::new("t.csv"), &options, 0).unwrap();
            let mut records = Vec::new();
            let mut record = Record::default();
            while source.next_record(&mut record).unwrap() {
                records.push(record.clone());
            }
            assert_eq!(
                fault(&records[0]),
                MalformedKind::TooLong,
                "read step {step}"
            );
            assert_eq!(records[0].line, 2);
            verdicts.push(
                records
                    .iter()
                    .map(|record| (record.line, record.raw.clone()))
                    .collect::<Vec<_>>(),
            );
        }
        assert!(verdicts.windows(2).all(|pair| pair[0] == pair[1]));
    }

    #[test]
    fn header_faults_are_errors() {
        assert!(
            CsvSource::new(&b""[..], Path::new("t.csv"), &SourceOptions::default(), 1).is_err()
        );
        assert!(CsvSource::new(
            &b"a,a\n"[..],
            Path::new("t.csv"),
            &SourceOptions::default(),
            1
        )
        .is_err());
        assert!(CsvSource::new(
            &b"a,\"b\n"[..],
            Path::new("t.csv"),
            &SourceOptions::default(),
            1
        )
        .is_err());
    }

    #[test]
    fn blocks_and_records_together_read_what_records_alone_read() {
        // A long record first grows the buffer past the size blocks are
        // swapped at; blocks must stay small and, mixed with records read
        // one by one around quotes, give the same lines and bytes.
        let options = SourceOptions {
            max_record_bytes: 16 << 20,
            ..SourceOptions::default()
        };
        let mut data = b"a,b\n".to_vec();
        data.extend(format!("1,{}\n", "x".repeat(5 << 20)).into_bytes());
        for index in 0..100_000 {
            data.extend(format!("{index},y\n").into_bytes());
            if index % 20_000 == 7 {
                data.extend_from_slice(b"q,\"quoted\nfield\"\r\n\n9,z\r\n");
            }
        }
        let mut source = CsvSource::new(&data[..], Path::new("t.csv"), &options, 0).unwrap();
        let mut block = Vec::new();
        let mut read = Vec::new();
        let mut blocks = 0;
        loop {
            if let Some((first_line, range)) = source.next_block(&mut block).unwrap() {
                assert!(range.len() <= MAX_BLOCK && block.len() <= 4 * MAX_BLOCK);
                blocks += 1;
                let lines = block[range].split_inclusive(|&byte| byte == b'\n');
                for (line, raw) in (first_line..).zip(lines) {
                    if raw != b"\n" && raw != b"\r\n" {
                        read.push((line, raw.to_vec()));
                    }
                }
                continue;
            }
            let mut record = Record::default();
            if !source.next_record(&mut record).unwrap() {
                break;
            }
            read.push((record.line, record.raw.clone()));
        }
        assert!(blocks > 3, "{blocks}");
        let (_, expected) = read_all(&data, &options, 0);
        let expected: Vec<(u64, Vec<u8>)> = expected
            .iter()
            .map(|record| (record.line, record.raw.clone()))
            .collect();
        assert_eq!(read.len(), expected.len());
        assert!(read == expected);
    }

    #[test]
    fn tiny_reads_give_the_same_records() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
                let count = self.0.len().min(buffer.len()).min(3);
                buffer[..count].copy_from_slice(&self.0[..count]);
                self.0 = &self.0[count..];
                Ok(count)
            }
        }
        let data = b"a,b\r\n1,\"x\r\ny\"\r\n2,q\"\r\n3,\"z\"\r\n";
        let (_, expected) = read_all(data, &SourceOptions::default(), 0);
        let mut source = CsvSource::new(
            Trickle(data),
            Path::new("t.csv"),
            &SourceOptions::default(),
            0,
        )
        .unwrap();
        let mut record = Record::default();
        let mut records = Vec::new();
        while source.next_record(&mut record).unwrap() {
            records.push(record.clone());
        }
        assert_eq!(records, expected);
        assert_eq!(fields(&records[0]), ["1", "x\r\ny"]);
        assert_eq!(fault(&records[1]), MalformedKind::BadQuoting);
        assert_eq!(fields(&records[2]), ["3", "z"]);
    }
}
