//! Once the largest batch has been seen, the encoder allocates no buffer of
//! its own: every intermediate lives in the reused `Workspace`, and the
//! kernels keep their scratch per thread. (The `gemm` crate still
//! allocates its packing buffers inside each product, as it does for
//! candle; those come back from the allocator's free lists.) Counted with
//! a global allocator over every thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use attnflow_kernels::key_bias_from_lengths;
use attnflow_models::{ForwardOptions, PackedTokens, PretrainedBert, TokenBatch, Workspace};
use candle_core::Device;
use common::Tiny;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        System.dealloc(pointer, layout)
    }
    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(pointer, layout, size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_second_batch_of_the_same_size_allocates_nothing() {
    let tiny = Tiny {
        hidden: 64,
        heads: 4,
        layers: 3,
        intermediate: 256,
        max_positions: 64,
        prefixed: false,
    };
    let dir = tempfile::tempdir().unwrap();
    tiny.write(dir.path());
    let model = PretrainedBert::open(dir.path(), &Device::Cpu).unwrap();
    let texts = [
        "the cat sat on the mat .",
        "a dog ran",
        "the big red dog was small .",
        "blue",
    ];
    let encodings = model.tokenizer.encode(&texts, 1).unwrap();
    let n = encodings.iter().map(|e| e.ids.len()).max().unwrap();
    let (mut ids, mut type_ids, mut key_bias) = (Vec::new(), Vec::new(), Vec::new());
    model
        .tokenizer
        .pad_into(&encodings, n, &mut ids, &mut type_ids);
    let lengths: Vec<usize> = encodings.iter().map(|e| e.ids.len()).collect();
    key_bias_from_lengths(&mut key_bias, &lengths, n);
    let tokens = TokenBatch {
        ids: &ids,
        type_ids: &type_ids,
        key_bias: &key_bias,
        batch: texts.len(),
        n,
    };
    let mut workspace = Workspace::default();
    let mut run = || {
        model
            .model
            .encode(
                &tokens,
                &mut workspace,
                ForwardOptions::default(),
                &mut |_| {},
            )
            .unwrap()
            .to_vec()
    };
    // Warm up: the workspace grows, and every pool thread that runs a
    // kernel gets its scratch (a few runs, since rayon may hand the tasks
    // to different threads each time).
    let first = run();
    for _ in 0..8 {
        run();
    }
    let reserved = workspace.reserved_bytes();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut same = true;
    for _ in 0..4 {
        let hidden = model
            .model
            .encode(
                &tokens,
                &mut workspace,
                ForwardOptions::default(),
                &mut |_| {},
            )
            .unwrap();
        same &= hidden == first.as_slice();
    }
    let steady = (ALLOCATIONS.load(Ordering::Relaxed) - before) / 4;
    assert!(same, "the same batch gives the same bits every time");
    assert_eq!(
        workspace.reserved_bytes(),
        reserved,
        "no buffer grew or moved"
    );

    // A fresh workspace allocates its five buffers on top of that.
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut fresh = Workspace::default();
    model
        .model
        .encode(&tokens, &mut fresh, ForwardOptions::default(), &mut |_| {})
        .unwrap();
    let cold = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(
        cold - steady,
        5,
        "allocations: {cold} cold, {steady} steady"
    );
    assert_eq!(fresh.reserved_bytes(), reserved);

    // The same texts packed back to back (as `embed` runs them) allocate
    // nothing beyond what the padded batch does, and give the same bits
    // every time.
    let (mut packed_ids, mut packed_types) = (Vec::new(), Vec::new());
    model
        .tokenizer
        .pad_into(&encodings, 0, &mut packed_ids, &mut packed_types);
    let packed = PackedTokens {
        ids: &packed_ids,
        type_ids: &packed_types,
        lengths: &lengths,
    };
    let mut workspace = Workspace::default();
    let first = model
        .model
        .encode_packed(&packed, &mut workspace)
        .unwrap()
        .to_vec();
    for _ in 0..8 {
        model.model.encode_packed(&packed, &mut workspace).unwrap();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let mut same = true;
    for _ in 0..4 {
        same &= model.model.encode_packed(&packed, &mut workspace).unwrap() == first.as_slice();
    }
    let packed_steady = (ALLOCATIONS.load(Ordering::Relaxed) - before) / 4;
    assert!(same, "the same packed texts give the same bits every time");
    assert!(
        packed_steady <= steady,
        "allocations: {packed_steady} packed, {steady} padded"
    );
}
