//! Durable transitions per second: a run of a chain of `noop` states on a
//! SQLite file with WAL and synchronous=FULL, so every step, attempt and
//! transition is committed (and fsynced) before the engine moves on.
//!
//! cargo bench -p attnflow-workflow --bench durable_transitions

use attnflow_workflow::{Runner, Spec, Store, TaskRegistry};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const STATES: usize = 20;

fn chain_spec() -> Spec {
    let mut source = String::from("[workflow]\nname = \"chain\"\ninitial = \"S0\"\n");
    for index in 0..STATES {
        source.push_str(&format!(
            "[states.S{index}]\naction = {{ task = \"noop\" }}\non = {{ ok = \"S{next}\", failed = \"Failed\" }}\n",
            next = index + 1
        ));
    }
    source.push_str(&format!(
        "[states.S{STATES}]\nterminal = \"success\"\n[states.Failed]\nterminal = \"failure\"\n"
    ));
    Spec::parse("chain.toml", &source).expect("the bench spec is valid")
}

fn durable_transitions(criterion: &mut Criterion) {
    let directory = tempfile::tempdir().expect("temporary directory");
    let mut store = Store::open(&directory.path().join("bench.db")).expect("store opens");
    let registry = TaskRegistry::with_builtins();
    let spec = chain_spec();
    let mut group = criterion.benchmark_group("workflow");
    group.throughput(Throughput::Elements(STATES as u64));
    group.sample_size(20);
    group.bench_function(
        "durable transitions (noop chain, WAL, synchronous=FULL)",
        |bencher| {
            bencher.iter(|| {
                let run = Runner::new(&mut store, &registry)
                    .start(&spec)
                    .expect("the run succeeds");
                assert_eq!(run.current_state, format!("S{STATES}"));
            })
        },
    );
    group.finish();
}

criterion_group!(benches, durable_transitions);
criterion_main!(benches);
