//! The mutation schema's runtime. Written by `aioctx-mutants` into a SCRATCH copy of the tree only
//! (never into the real one), where every ordering and fence site calls into it with its site id.
//!
//! `AIOCTX_MUTANT=<site>:<spec>` selects one mutant for the whole process; unset, every site behaves
//! exactly as written. Specs: `ord<k>=<Ordering>` (the k-th ordering argument), `split` (an RMW as a
//! load + a store), `weak` (a strong CAS that fails spuriously on every other call), `remove` (a fence),
//! `fence=<Ordering>`, `on` (a logic mutant: `on(id)` is true). `AIOCTX_MUTANT_COVER=<file>` appends each site's id to `<file>` the first time
//! the process reaches it (the runner's coverage pass).
#![allow(dead_code, missing_docs, clippy::all)]

use crate::sync::atomic as fac;
use crate::sync::atomic::Ordering;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool as StdBool, AtomicUsize as StdUsize, Ordering as StdOrd};
use std::sync::OnceLock;

pub const SITES: usize = __SITES__;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Ord(u8, Ordering),
    Split,
    Weak,
    Remove,
    FenceTo(Ordering),
    /// A logic mutant (cargo-mutants' replacement at its site).
    On,
}

fn parse_ord(s: &str) -> Ordering {
    match s {
        "Relaxed" => Ordering::Relaxed,
        "Release" => Ordering::Release,
        "Acquire" => Ordering::Acquire,
        "AcqRel" => Ordering::AcqRel,
        "SeqCst" => Ordering::SeqCst,
        _ => panic!("AIOCTX_MUTANT: unknown ordering {s}"),
    }
}

fn active() -> Option<(usize, Kind)> {
    static A: OnceLock<Option<(usize, Kind)>> = OnceLock::new();
    *A.get_or_init(|| {
        let v = std::env::var("AIOCTX_MUTANT").ok()?;
        let (site, spec) = v.split_once(':').expect("AIOCTX_MUTANT=<site>:<spec>");
        let site: usize = site.parse().expect("AIOCTX_MUTANT: site id");
        assert!(site < SITES, "AIOCTX_MUTANT: no site {site}");
        let kind = match spec {
            "split" => Kind::Split,
            "weak" => Kind::Weak,
            "remove" => Kind::Remove,
            "on" => Kind::On,
            s if s.starts_with("fence=") => Kind::FenceTo(parse_ord(&s[6..])),
            s if s.starts_with("ord") => {
                let (k, o) = s[3..].split_once('=').expect("ord<k>=<Ordering>");
                Kind::Ord(k.parse().expect("ord index"), parse_ord(o))
            }
            s => panic!("AIOCTX_MUTANT: unknown spec {s}"),
        };
        Some((site, kind))
    })
}

static COVERED: [StdBool; SITES] = [const { StdBool::new(false) }; SITES];

/// Record that the process reached `site`; with AIOCTX_MUTANT_COVER set, the sites reached are
/// written at exit (not at the first hit: a test may have every fd in use then, e.g. the EMFILE test).
fn cover(site: usize) {
    static ARMED: OnceLock<()> = OnceLock::new();
    if !COVERED[site].swap(true, StdOrd::Relaxed) {
        ARMED.get_or_init(|| {
            if std::env::var_os("AIOCTX_MUTANT_COVER").is_some() {
                // SAFETY: registers a plain extern "C" fn with no captured state.
                unsafe { libc::atexit(write_cover) };
            }
        });
    }
}

extern "C" fn write_cover() {
    let Some(p) = std::env::var_os("AIOCTX_MUTANT_COVER") else { return };
    let mut text = String::new();
    for (i, c) in COVERED.iter().enumerate() {
        if c.load(StdOrd::Relaxed) {
            text.push_str(&format!("{i}\n"));
        }
    }
    let _ = std::fs::OpenOptions::new().create(true).append(true).open(p).and_then(|mut f| f.write_all(text.as_bytes()));
}

#[inline]
fn kind(site: usize) -> Option<Kind> {
    cover(site);
    match active() {
        Some((s, k)) if s == site => Some(k),
        _ => None,
    }
}

fn ord(k: Option<Kind>, i: u8, o: Ordering) -> Ordering {
    match k {
        Some(Kind::Ord(j, w)) if j == i => w,
        _ => o,
    }
}

/// The acquire half of an RMW's ordering (for the load of a split RMW).
fn acq(o: Ordering) -> Ordering {
    match o {
        Ordering::SeqCst => Ordering::SeqCst,
        Ordering::AcqRel | Ordering::Acquire => Ordering::Acquire,
        _ => Ordering::Relaxed,
    }
}

/// The release half (for the store of a split RMW).
fn rel(o: Ordering) -> Ordering {
    match o {
        Ordering::SeqCst => Ordering::SeqCst,
        Ordering::AcqRel | Ordering::Release => Ordering::Release,
        _ => Ordering::Relaxed,
    }
}

/// Every other call of a `weak` site fails spuriously.
fn spurious() -> bool {
    static N: StdUsize = StdUsize::new(0);
    N.fetch_add(1, StdOrd::Relaxed) % 2 == 0
}

/// Whether logic mutant `id` is the active one.
#[inline]
pub fn on(id: usize) -> bool {
    kind(id) == Some(Kind::On)
}

pub fn fence(site: usize, o: Ordering) {
    match kind(site) {
        Some(Kind::Remove) => {}
        Some(Kind::FenceTo(w)) => fac::fence(w),
        _ => fac::fence(o),
    }
}

/// Loads, stores, swaps and compare-exchanges of every atomic type.
pub trait MutAtomic {
    type V: Copy + PartialEq;
    fn __m_load(&self, site: usize, o: Ordering) -> Self::V;
    fn __m_store(&self, site: usize, v: Self::V, o: Ordering);
    fn __m_swap(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_compare_exchange(&self, site: usize, c: Self::V, n: Self::V, s: Ordering, f: Ordering) -> Result<Self::V, Self::V>;
    fn __m_compare_exchange_weak(&self, site: usize, c: Self::V, n: Self::V, s: Ordering, f: Ordering) -> Result<Self::V, Self::V>;
    fn __m_fetch_update<F: FnMut(Self::V) -> Option<Self::V>>(&self, site: usize, s: Ordering, f: Ordering, u: F) -> Result<Self::V, Self::V>;
}

/// `fetch_<op>` of the integer atomics.
pub trait MutInt: MutAtomic {
    fn __m_fetch_add(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_fetch_sub(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_fetch_and(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_fetch_or(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_fetch_xor(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_fetch_max(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
    fn __m_fetch_min(&self, site: usize, v: Self::V, o: Ordering) -> Self::V;
}

/// `fetch_<op>` of `AtomicBool`.
pub trait MutBool: MutAtomic {
    fn __m_fetch_and(&self, site: usize, v: bool, o: Ordering) -> bool;
    fn __m_fetch_or(&self, site: usize, v: bool, o: Ordering) -> bool;
    fn __m_fetch_xor(&self, site: usize, v: bool, o: Ordering) -> bool;
}

/// One `fetch_<op>`: the native RMW with the (possibly weakened) ordering, or split.
macro_rules! rmw {
    ($name:ident, $native:ident, $v:ty, |$a:ident, $b:ident| $new:expr) => {
        fn $name(&self, site: usize, v: $v, o: Ordering) -> $v {
            let k = kind(site);
            if k == Some(Kind::Split) {
                let $a = self.load(acq(o));
                let $b = v;
                self.store($new, rel(o));
                return $a;
            }
            self.$native(v, ord(k, 0, o))
        }
    };
}

macro_rules! base {
    ($t:ty, $v:ty $(, $g:ident)?) => {
        impl$(<$g>)? MutAtomic for $t {
            type V = $v;
            fn __m_load(&self, site: usize, o: Ordering) -> $v {
                let k = kind(site);
                self.load(ord(k, 0, o))
            }
            fn __m_store(&self, site: usize, v: $v, o: Ordering) {
                let k = kind(site);
                self.store(v, ord(k, 0, o))
            }
            fn __m_swap(&self, site: usize, v: $v, o: Ordering) -> $v {
                let k = kind(site);
                if k == Some(Kind::Split) {
                    let old = self.load(acq(o));
                    self.store(v, rel(o));
                    return old;
                }
                self.swap(v, ord(k, 0, o))
            }
            fn __m_compare_exchange(&self, site: usize, c: $v, n: $v, s: Ordering, f: Ordering) -> Result<$v, $v> {
                let k = kind(site);
                match k {
                    Some(Kind::Split) => {
                        let old = self.load(acq(s));
                        if old != c {
                            return Err(old);
                        }
                        self.store(n, rel(s));
                        Ok(old)
                    }
                    Some(Kind::Weak) if spurious() => Err(self.load(f)),
                    _ => self.compare_exchange(c, n, ord(k, 0, s), ord(k, 1, f)),
                }
            }
            fn __m_compare_exchange_weak(&self, site: usize, c: $v, n: $v, s: Ordering, f: Ordering) -> Result<$v, $v> {
                let k = kind(site);
                if k == Some(Kind::Split) {
                    let old = self.load(acq(s));
                    if old != c {
                        return Err(old);
                    }
                    self.store(n, rel(s));
                    return Ok(old);
                }
                self.compare_exchange_weak(c, n, ord(k, 0, s), ord(k, 1, f))
            }
            fn __m_fetch_update<F: FnMut($v) -> Option<$v>>(&self, site: usize, s: Ordering, f: Ordering, mut u: F) -> Result<$v, $v> {
                let k = kind(site);
                if k == Some(Kind::Split) {
                    let old = self.load(acq(f));
                    return match u(old) {
                        Some(n) => {
                            self.store(n, rel(s));
                            Ok(old)
                        }
                        None => Err(old),
                    };
                }
                self.fetch_update(ord(k, 0, s), ord(k, 1, f), u)
            }
        }
    };
}

macro_rules! int {
    ($t:ty, $v:ty) => {
        impl MutInt for $t {
            rmw!(__m_fetch_add, fetch_add, $v, |a, b| a.wrapping_add(b));
            rmw!(__m_fetch_sub, fetch_sub, $v, |a, b| a.wrapping_sub(b));
            rmw!(__m_fetch_and, fetch_and, $v, |a, b| a & b);
            rmw!(__m_fetch_or, fetch_or, $v, |a, b| a | b);
            rmw!(__m_fetch_xor, fetch_xor, $v, |a, b| a ^ b);
            rmw!(__m_fetch_max, fetch_max, $v, |a, b| a.max(b));
            rmw!(__m_fetch_min, fetch_min, $v, |a, b| a.min(b));
        }
    };
}

impl MutBool for fac::AtomicBool {
    rmw!(__m_fetch_and, fetch_and, bool, |a, b| a & b);
    rmw!(__m_fetch_or, fetch_or, bool, |a, b| a | b);
    rmw!(__m_fetch_xor, fetch_xor, bool, |a, b| a ^ b);
}

base!(fac::AtomicBool, bool);
base!(fac::AtomicU32, u32);
base!(fac::AtomicU64, u64);
base!(fac::AtomicUsize, usize);
base!(fac::AtomicI64, i64);
base!(fac::AtomicPtr<T>, *mut T, T);
int!(fac::AtomicU32, u32);
int!(fac::AtomicU64, u64);
int!(fac::AtomicUsize, usize);
int!(fac::AtomicI64, i64);
