//! A profiling driver for sentence embeddings: the lines of a text file
//! through `PretrainedBert::embed`, in a loop, for `perf record` or
//! `valgrind --tool=callgrind`.
//!
//! `cargo run --release -p attnflow-models --example embed_profile -- MODEL_DIR TEXT_FILE [BATCH] [ROUNDS]`

use std::time::Instant;

use attnflow_models::PretrainedBert;
use candle_core::Device;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let directory = args.get(1).ok_or("give the model directory")?;
    let file = args.get(2).ok_or("give a text file, one text per line")?;
    let batch: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;
    let rounds: usize = args.get(4).map_or(Ok(3), |s| s.parse())?;
    // As the `attnflow` binary does (see attnflow_core::process).
    attnflow_core::process::keep_freed_memory();
    let model = PretrainedBert::open(directory.as_ref(), &Device::Cpu)?;
    let text = std::fs::read_to_string(file)?;
    let refs: Vec<&str> = text.lines().collect();
    let count = refs.len();
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        let embedded = model.embed(&refs, batch, |_| {})?;
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(embedded.embeddings.dims()[0], count);
    }
    println!(
        "{count} texts, batch {batch}: best {:.3} s, {:.0} texts/s",
        best,
        count as f64 / best
    );
    Ok(())
}
