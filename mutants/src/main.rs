//! `aioctx-mutants`: mutation testing of aioctx (see ci/mutants, which drives it).
//!
//!   aioctx-mutants list  [SRC]          every ordering/fence mutant of SRC (default impl/src), TSV
//!   aioctx-mutants sites [SRC]         every ordering/fence site of SRC: name, file, line, the
//!                                       orderings as written (comma-separated), TSV
//!   aioctx-mutants apply SCRATCH_SRC    rewrite a scratch copy's impl/src into the schema; prints
//!                                       the site table (id, file, line, function, op, orderings)
//!   aioctx-mutants run ...              the runner (see `run --help`)
//!   aioctx-mutants fence-map            docs/fence-map.md from the code and mutants/RESULTS.tsv

mod fencemap;
mod logic;
mod run;
mod schema;
mod sites;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("list") => list(args.get(1).map_or("impl/src", String::as_str)),
        Some("sites") => sites(args.get(1).map_or("impl/src", String::as_str)),
        Some("apply") => match args.get(1) {
            Some(dir) => schema::apply(&PathBuf::from(dir), &[], &Default::default()).map(|a| {
                for s in a.sites {
                    println!(
                        "{}\t{}\t{}\t{}\t{}\t{}",
                        s.id,
                        s.file,
                        s.line,
                        s.func,
                        s.op,
                        s.orders.join(",")
                    );
                }
            }),
            None => Err("usage: aioctx-mutants apply SCRATCH/impl/src".into()),
        },
        Some("run") => run::main(&args[1..]),
        Some("fence-map") => fencemap::read_results(&PathBuf::from("mutants/RESULTS.tsv"))
            .and_then(|r| fencemap::render(&PathBuf::from("."), &r))
            .map(|t| print!("{t}")),
        _ => {
            Err("usage: aioctx-mutants list [SRC] | sites [SRC] | apply SCRATCH_SRC | run --help | fence-map"
                .into())
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aioctx-mutants: {e}");
            ExitCode::FAILURE
        }
    }
}

fn list(src: &str) -> Result<(), String> {
    let (sites, mutants) = schema::scan_tree(&PathBuf::from(src))?;
    println!("name\tfile\tline\tdescription");
    for m in &mutants {
        let s = &sites[m.site];
        println!("{}\t{}\t{}\t{}", m.name, s.file, s.line, m.desc);
    }
    eprintln!("{} sites, {} mutants", sites.len(), mutants.len());
    Ok(())
}

fn sites(src: &str) -> Result<(), String> {
    let (sites, _) = schema::scan_tree(&PathBuf::from(src))?;
    println!("site\tfile\tline\torders");
    for s in &sites {
        println!("{}\t{}\t{}\t{}", s.name(), s.file, s.line, s.orders.join(","));
    }
    eprintln!("{} sites", sites.len());
    Ok(())
}
