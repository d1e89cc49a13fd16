//! `attnflow bench data`: attnflow's check against pandas + pandera on the
//! same generated CSV, the sides interleaved over rounds
//! ([`crate::protocol`]).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde::Serialize;

use attnflow_data::run::{check_files, CheckOptions};
use attnflow_data::store::Store;
use attnflow_data::{DataError, DataResult, Schema};
use attnflow_store::Location;

use crate::protocol::{run_rounds, Protocol, Rounds};

/// The bench schema (`examples/data/bench.toml`); `peers/data_pandera.py`
/// declares the same rules.
pub const BENCH_SCHEMA: &str = include_str!("../../../examples/data/bench.toml");

/// The pandera script, embedded so the bench runs from any directory.
pub const PANDERA_SCRIPT: &str = include_str!("../peers/data_pandera.py");

/// Rows the generator makes invalid on purpose, and how: every 997th row's
/// score is above the maximum, every 1009th row's code breaks the pattern,
/// every 1013th row's count is negative.
pub fn expected_invalid(rows: u64) -> u64 {
    (1..=rows)
        .filter(|row| row % 997 == 0 || row % 1009 == 0 || row % 1013 == 0)
        .count() as u64
}

/// Writes the bench CSV: `rows` rows of six columns, deterministic.
pub fn generate_csv(path: &Path, rows: u64) -> DataResult<u64> {
    let file = std::fs::File::create(path).map_err(|error| DataError::io(path, error))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let categories = ["alpha", "beta", "gamma", "delta"];
    let write = |out: &mut BufWriter<std::fs::File>, text: std::fmt::Arguments<'_>| {
        out.write_fmt(text)
            .map_err(|error| DataError::io(path, error))
    };
    write(
        &mut out,
        format_args!("id,category,score,count,active,code\n"),
    )?;
    for row in 1..=rows {
        let random = next();
        let category = categories[(random % 4) as usize];
        let score = if row % 997 == 0 {
            150.5
        } else {
            (random >> 8) as f64 % 10_000.0 / 100.0
        };
        let count: i64 = if row % 1013 == 0 {
            -5
        } else {
            ((random >> 24) % 1001) as i64
        };
        let active = (random >> 40) & 1 == 1;
        let letters = [
            b'A' + ((random >> 42) % 26) as u8,
            b'A' + ((random >> 47) % 26) as u8,
            b'A' + ((random >> 52) % 26) as u8,
        ];
        let letters = std::str::from_utf8(&letters).unwrap_or("AAA");
        let digits = (random >> 20) % 10_000;
        if row % 1009 == 0 {
            write(
                &mut out,
                format_args!(
                    "{row},{category},{score},{count},{active},{}-{digits:04}\n",
                    letters.to_lowercase()
                ),
            )?;
        } else {
            write(
                &mut out,
                format_args!("{row},{category},{score},{count},{active},{letters}-{digits:04}\n"),
            )?;
        }
    }
    out.flush().map_err(|error| DataError::io(path, error))?;
    Ok(std::fs::metadata(path)
        .map(|metadata| metadata.len())
        .unwrap_or(0))
}

/// One engine's measurement.
#[derive(Debug, Clone, Serialize)]
pub struct EngineResult {
    /// What ran.
    pub engine: String,
    /// Wall time of reading and checking.
    pub seconds: f64,
    /// Rows per second.
    pub rows_per_second: f64,
    /// Rows found invalid.
    pub invalid_rows: u64,
}

/// The bench's results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Rows generated.
    pub rows: u64,
    /// Size of the CSV.
    pub file_bytes: u64,
    /// Rows made invalid on purpose.
    pub expected_invalid: u64,
    /// attnflow, check only (no store), like pandera.
    pub attnflow: EngineResult,
    /// attnflow writing the queue and quarantine to SQLite.
    pub attnflow_with_store: Option<EngineResult>,
    /// attnflow writing the queue (COPY) and quarantine to PostgreSQL.
    pub attnflow_with_postgres: Option<EngineResult>,
    /// pandas + pandera, when installed.
    pub pandera: Option<EngineResult>,
    /// Why pandera did not run, when it did not.
    pub pandera_note: Option<String>,
    /// attnflow (check only) rows/s ÷ pandera rows/s.
    pub ratio: Option<f64>,
    /// Peak resident memory of this process (Linux VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Options of the bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Rows to generate.
    pub rows: u64,
    /// Also time a run that writes to a SQLite store.
    pub with_store: bool,
    /// Run pandera when available.
    pub pandera: bool,
    /// Working directory for the CSV and store (a temp dir when `None`).
    pub directory: Option<PathBuf>,
    /// Also time a run into this PostgreSQL database (its rows are removed
    /// afterwards).
    pub postgres: Option<Location>,
    /// Progress bars.
    pub progress: bool,
}

fn pandera_available() -> Result<(), String> {
    match Command::new("python3")
        .args(["-c", "import pandas, pandera"])
        .output()
    {
        Ok(output) if output.status.success() => Ok(()),
        Ok(_) => Err("pandas or pandera is not installed (pip install pandas pandera)".to_owned()),
        Err(error) => Err(format!("python3 cannot be run: {error}")),
    }
}

fn run_pandera(directory: &Path, csv: &Path, rows: u64) -> Result<EngineResult, String> {
    pandera_available()?;
    let script = directory.join("bench_data_pandera.py");
    std::fs::write(&script, PANDERA_SCRIPT).map_err(|error| error.to_string())?;
    let output = Command::new("python3")
        .arg(&script)
        .arg(csv)
        .output()
        .map_err(|error| error.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "pandera script failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let parsed: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|error| format!("unreadable pandera output `{text}`: {error}"))?;
    let seconds = parsed["seconds"]
        .as_f64()
        .ok_or("pandera output has no seconds")?;
    let counted = parsed["rows"].as_u64().unwrap_or(0);
    if counted != rows {
        return Err(format!("pandera read {counted} rows, expected {rows}"));
    }
    Ok(EngineResult {
        engine: "pandas + pandera (lazy)".to_owned(),
        seconds,
        rows_per_second: rows as f64 / seconds,
        invalid_rows: parsed["invalid_rows"].as_u64().unwrap_or(0),
    })
}

/// [`run_bench`] under the measurement protocol: `protocol.rounds`
/// interleaved rounds, each checking with attnflow then pandera.
pub fn run_rounds_of(
    options: &BenchOptions,
    protocol: &Protocol,
) -> DataResult<Rounds<BenchReport>> {
    run_rounds(protocol, |_| run_bench(options))
}

/// Generates the CSV, checks it with attnflow (and pandera when possible)
/// and reports rows/s and the ratio. Fails if attnflow's verdict differs
/// from the invalid rows planted by the generator.
pub fn run_bench(options: &BenchOptions) -> DataResult<BenchReport> {
    // Removed when dropped; unused when the caller keeps the files.
    let temporary =
        tempfile::tempdir().map_err(|error| DataError::io(std::env::temp_dir(), error))?;
    let directory = match &options.directory {
        Some(directory) => {
            std::fs::create_dir_all(directory).map_err(|error| DataError::io(directory, error))?;
            directory.clone()
        }
        None => temporary.path().to_path_buf(),
    };
    let csv = directory.join("bench.csv");
    let file_bytes = generate_csv(&csv, options.rows)?;
    let schema = Schema::parse(Path::new("bench-schema.toml"), BENCH_SCHEMA)?;
    let expected = expected_invalid(options.rows);
    let check_options = CheckOptions {
        progress: options.progress,
        ..CheckOptions::default()
    };

    let started = Instant::now();
    let report = check_files(&schema, std::slice::from_ref(&csv), None, &check_options)?;
    let seconds = started.elapsed().as_secs_f64();
    if report.quarantined != expected || report.read != options.rows {
        return Err(DataError::Invalid {
            what: "bench".to_owned(),
            message: format!(
                "attnflow read {} and quarantined {}, expected {} and {expected}",
                report.read, report.quarantined, options.rows
            ),
        });
    }
    let attnflow = EngineResult {
        engine: "attnflow check (no store)".to_owned(),
        seconds,
        rows_per_second: options.rows as f64 / seconds,
        invalid_rows: report.quarantined,
    };
    let attnflow_with_store = if options.with_store {
        let database = directory.join("bench.db");
        let _ = std::fs::remove_file(&database);
        let mut store = Store::open(&database)?;
        let started = Instant::now();
        let stored = check_files(
            &schema,
            std::slice::from_ref(&csv),
            Some(&mut store),
            &check_options,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        Some(EngineResult {
            engine: "attnflow check + SQLite queue".to_owned(),
            seconds,
            rows_per_second: options.rows as f64 / seconds,
            invalid_rows: stored.quarantined,
        })
    } else {
        None
    };
    let attnflow_with_postgres = match &options.postgres {
        Some(location) => Some(into_postgres(location, &csv, options, &check_options)?),
        None => None,
    };
    let peak = attnflow_base::peak_rss_bytes();
    let (pandera, pandera_note) = if options.pandera {
        match run_pandera(&directory, &csv, options.rows) {
            Ok(result) => (Some(result), None),
            Err(note) => (None, Some(note)),
        }
    } else {
        (None, Some("skipped (--no-pandera)".to_owned()))
    };
    let ratio = pandera
        .as_ref()
        .map(|pandera| attnflow.rows_per_second / pandera.rows_per_second);
    Ok(BenchReport {
        rows: options.rows,
        file_bytes,
        expected_invalid: expected,
        attnflow,
        attnflow_with_store,
        attnflow_with_postgres,
        pandera,
        pandera_note,
        ratio,
        peak_rss_bytes: peak,
    })
}

/// Checks the CSV into the PostgreSQL queue (COPY), verifies every
/// accepted row arrived, then removes the run's rows. The schema gets a
/// name of its own, so earlier runs' ids do not count as duplicates.
fn into_postgres(
    location: &Location,
    csv: &Path,
    options: &BenchOptions,
    check_options: &CheckOptions,
) -> DataResult<EngineResult> {
    let name = format!("bench-{}", attnflow_base::time::now_milliseconds());
    let text = BENCH_SCHEMA.replacen("name = \"bench\"", &format!("name = \"{name}\""), 1);
    let schema = Schema::parse(Path::new("bench-schema.toml"), &text)?;
    let mut store = Store::connect(location)?;
    let started = Instant::now();
    let stored = check_files(
        &schema,
        std::slice::from_ref(&csv.to_path_buf()),
        Some(&mut store),
        check_options,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    if let Some(run_id) = stored.run_id {
        store.remove_run(run_id)?;
    }
    if stored.read != options.rows {
        return Err(DataError::Invalid {
            what: "bench".to_owned(),
            message: format!(
                "PostgreSQL run read {} rows of {}",
                stored.read, options.rows
            ),
        });
    }
    Ok(EngineResult {
        engine: "attnflow check + PostgreSQL queue (COPY)".to_owned(),
        seconds,
        rows_per_second: options.rows as f64 / seconds,
        invalid_rows: stored.quarantined,
    })
}

impl crate::protocol::Round for BenchReport {
    fn ratios(&self) -> Vec<(String, Option<f64>)> {
        vec![("rows/s, check only".to_string(), self.ratio)]
    }

    fn to_text(&self) -> String {
        BenchReport::to_text(self)
    }
}

impl BenchReport {
    /// The report as people read it.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "bench data: {} rows × 6 columns ({:.1} MB CSV), {} rows invalid on purpose\n",
            self.rows,
            self.file_bytes as f64 / 1e6,
            self.expected_invalid
        );
        let engines = std::iter::once(&self.attnflow)
            .chain(self.attnflow_with_store.as_ref())
            .chain(self.attnflow_with_postgres.as_ref())
            .chain(self.pandera.as_ref());
        let rows: Vec<Vec<String>> = engines
            .map(|engine| {
                vec![
                    engine.engine.clone(),
                    format!("{:.3}", engine.seconds),
                    format!("{:.0}", engine.rows_per_second),
                    engine.invalid_rows.to_string(),
                ]
            })
            .collect();
        out.push_str(&attnflow_base::table::table(
            &["engine", "seconds", "rows/s", "invalid rows"],
            &rows,
            1,
            attnflow_base::table::Style::Text,
        ));
        let _ = match self.ratio {
            Some(ratio) => writeln!(out, "ratio: attnflow check is {ratio:.1}× pandera (rows/s)"),
            None => writeln!(
                out,
                "pandera: {}",
                self.pandera_note.as_deref().unwrap_or("not run")
            ),
        };
        if let Some(peak) = self.peak_rss_bytes {
            let _ = writeln!(
                out,
                "peak memory of attnflow (VmHWM): {:.1} MB",
                peak as f64 / 1e6
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_plants_exactly_the_invalid_rows_it_expects() {
        let report = run_bench(&BenchOptions {
            rows: 5000,
            with_store: true,
            pandera: false,
            directory: None,
            postgres: None,
            progress: false,
        })
        .unwrap();
        assert_eq!(report.expected_invalid, expected_invalid(5000));
        assert_eq!(report.attnflow.invalid_rows, report.expected_invalid);
        assert_eq!(
            report.attnflow_with_store.unwrap().invalid_rows,
            report.expected_invalid
        );
        assert_eq!(
            report.expected_invalid,
            5 + 4 + 4,
            "5000 rows: 5 over 997, 4 over 1009, 4 over 1013"
        );
    }
}
