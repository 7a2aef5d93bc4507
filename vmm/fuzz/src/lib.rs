//! The replay driver of the fuzz targets when they are built without libFuzzer (stable Rust,
//! no `--cfg fuzzing`): each target binary then runs its entry point on every file named on
//! its command line (folders: every file in them), then on `--random N` pseudo-random inputs.
//! CI builds and runs them this way (`cargo xtask test`); `cargo fuzz run` builds them with
//! libFuzzer instead. See README.md.

use std::path::Path;
use std::time::Instant;

fn files(path: &Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(path) {
        Ok(dir) => {
            let mut all: Vec<_> = dir.flatten().flat_map(|e| files(&e.path())).collect();
            all.sort();
            all
        }
        Err(_) => vec![path.to_path_buf()],
    }
}

/// xorshift64*: reproducible inputs (`--seed S`).
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Replays the files and folders in the arguments through `target`, then `--random N` inputs of
/// up to `--max-len L` bytes (default 4096), mutated from the files when there are some.
pub fn replay(name: &str, target: impl Fn(&[u8])) {
    let mut args = std::env::args().skip(1);
    let (mut random, mut max_len, mut seed) = (0usize, 4096usize, 0x5eed_u64);
    let mut inputs = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flag} needs a number"))
        };
        match arg.as_str() {
            "--random" => random = value("--random") as usize,
            "--max-len" => max_len = value("--max-len") as usize,
            "--seed" => seed = value("--seed"),
            path => inputs.extend(files(Path::new(path))),
        }
    }
    let started = Instant::now();
    let mut corpus = Vec::new();
    for file in &inputs {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        target(&data);
        corpus.push(data);
    }
    let mut state = seed;
    for _ in 0..random {
        let len = (next(&mut state) as usize) % (max_len + 1);
        let mut data: Vec<u8> = match corpus.len() {
            0 => Vec::new(),
            n => corpus[(next(&mut state) as usize) % n].clone(),
        };
        data.resize(len.max(data.len().min(max_len)), 0);
        // Flip a few bytes of the base (or fill a fresh input).
        let flips = if corpus.is_empty() { len } else { 1 + len / 64 };
        for _ in 0..flips {
            if data.is_empty() {
                break;
            }
            let at = (next(&mut state) as usize) % data.len();
            data[at] = next(&mut state) as u8;
        }
        target(&data);
    }
    println!(
        "{name}: {} files and {random} random inputs in {:.1} s, no failure",
        inputs.len(),
        started.elapsed().as_secs_f64()
    );
}
