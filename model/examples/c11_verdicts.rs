//! The C11 checker's verdict for each mutant named on stdin (one `aioctx-mutants` name a line), per
//! protocol program whose events carry its site: TSV `mutant, program, RC11, C11, time`, where
//! `REAL` means the model allows the property's violation (a counterexample exists) and `none`
//! that no execution violates it (for that program). Mutants whose site no program has are skipped.
//!
//! ```sh
//! cargo run -q -p aioctx-mutants -- list | cut -f1 | tail -n +2 |
//!     cargo run --release -q -p aioctx-model --example c11_verdicts
//! ```

use aioctx_model::c11::{check, handshake, Model, Mutant};
use std::io::BufRead;
fn main() {
    let cap: u64 = 20_000_000;
    let progs = handshake::all();
    for line in std::io::stdin().lock().lines() {
        let name = line.expect("stdin");
        if name.is_empty() {
            continue;
        }
        let Ok(m) = Mutant::parse(&name) else {
            eprintln!("not a mutant name: {name}");
            continue;
        };
        for p in &progs {
            let (q, n) = match p.mutated(&m) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    continue;
                }
            };
            if n == 0 {
                continue;
            }
            let t = std::time::Instant::now();
            let (a, b) = match (check(&q, Model::Rc11, cap), check(&q, Model::C11, cap)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("{name} in {}: {e}", p.name);
                    std::process::exit(1);
                }
            };
            println!(
                "{name}\t{}\t{}\t{}\t{:?}",
                p.name,
                if a.allowed() { "REAL" } else { "none" },
                if b.allowed() { "REAL" } else { "none" },
                t.elapsed()
            );
        }
    }
}
