//! Replays the spin counterexamples of the BUG_* variants on the implementation AS BUILT and prints
//! one `TRAIL <name> <bug> <verdict> steps=<n> | <detail>` line per trail
//! (`aioctx_conformance::bugs`). Run it with `AIOCTX_BUG=<name>` (this crate enables impl's
//! `planted-bugs` feature; `--cfg aioctx_bug="<name>"` does the same) to replay against a planted
//! bug; `tests/traces_model_to_impl.rs` does that for each bug.
//!
//! Usage: `conformance-replay [<aioctx_bug value>]` (only that bug's variants).

fn main() {
    let only = std::env::args().nth(1);
    let _g = aioctx_conformance::serial();
    for r in aioctx_conformance::bugs::replay_bug_trails(only.as_deref()) {
        println!("{}", r.line());
        for l in r.detail.lines().skip(1) {
            println!("    {l}");
        }
    }
}
