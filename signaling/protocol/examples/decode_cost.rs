//! Decodes one kind of frame N times, for instruction counts under callgrind
//! (wall time on a shared machine is noise; instruction counts are not):
//!
//! ```sh
//! cargo build --release -p signaling-protocol --example decode_cost
//! valgrind --tool=callgrind target/release/examples/decode_cost offer 1
//! valgrind --tool=callgrind target/release/examples/decode_cost offer 1001
//! ```
//!
//! The difference of the two totals over 1000 is the cost of one decode.
//! Kinds: `offer` (2 KB), `candidate`, `join`, `join-meta` and `update-meta`
//! (1 KB `meta`).

#[path = "../benches/frames/mod.rs"]
mod frames;

use std::hint::black_box;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let frame = match kind.as_str() {
        "offer" => frames::offer(),
        "candidate" => frames::CANDIDATE.to_string(),
        "join" => frames::JOIN.to_string(),
        "join-meta" => frames::join_meta_1k(),
        "update-meta" => frames::update_meta_1k(),
        _ => {
            eprintln!("usage: decode_cost offer|candidate|join|join-meta|update-meta [count]");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = 0u64;
    for _ in 0..n {
        if signaling_protocol::decode(black_box(&frame)).is_ok() {
            ok += 1;
        }
    }
    println!("{kind}: {} bytes, {ok}/{n} decoded", frame.len());
    if ok == n {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
