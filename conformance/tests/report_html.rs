//! The HTML report (`target/verify/index.html`, `verify-report`) in a real browser: headless
//! Chromium (Debian's `chromium`; `.ci/run` installs it) loads a report built from a real spin
//! counterexample, the real code replaying it, the Rust model's explorer counterexamples and two trace
//! files of the documented input format (a shrunk workload, a loom failure), takes a screenshot and dumps the DOM. The page must have rendered (the screenshot is not
//! blank: a share of non-white pixels, and the red of a violation box) and every chart must be in
//! the DOM with its violation and its property. A blank page is shown to fail the same check.
//! Prints `MEASURE report ...` (screenshot size, chart count). Run by ci/test and ci/verify's report
//! stage; fails (never skips) when chromium is missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use aioctx_conformance::{out_dir, spin};

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Run headless chromium on `page` with `args`; its stdout. Bounded by `timeout` (a hung browser
/// is a failure, never a pass).
fn browser(page: &Path, args: &[&str]) -> String {
    let url = format!("file://{}", page.display());
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(["--disable-dev-shm-usage", "--no-first-run"])
        // A profile of its own per page: the two tests run in parallel.
        .arg(format!("--user-data-dir={}", page.with_extension("profile").display()))
        .args(args)
        .arg(&url)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {}: {e} (install it: apt-get install -y chromium)", chromium())
        });
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}\n{}",
        chromium(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pixel statistics of a screenshot: (width, height, share of non-white pixels, red pixels).
fn screenshot(page: &Path, png_path: &Path, height: u32) -> (u32, u32, f64, usize) {
    let _ = std::fs::remove_file(png_path);
    browser(
        page,
        &[&format!("--screenshot={}", png_path.display()), &format!("--window-size=1600,{height}")],
    );
    let f = std::fs::File::open(png_path).expect("chromium wrote no screenshot");
    let mut r = png::Decoder::new(std::io::BufReader::new(f)).read_info().expect("a PNG");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("PNG frame");
    let px = info.color_type.samples();
    assert!(px >= 3, "expected RGB(A), got {:?}", info.color_type);
    let (mut ink, mut red, mut n) = (0usize, 0usize, 0usize);
    for p in buf[..info.buffer_size()].chunks(px) {
        n += 1;
        let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
        if r < 235 || g < 235 || b < 235 {
            ink += 1;
        }
        if r > 150 && g < 60 && b < 60 {
            red += 1;
        }
    }
    (info.width, info.height, ink as f64 / n as f64, red)
}

/// A report from a real spin trail, the model's counterexamples and one trace file; its path and
/// the number of charts the generator says it drew.
fn build_report(dir: &Path) -> (PathBuf, usize) {
    let summary = dir.join("summary");
    let trails = summary.join("trails");
    let traces = dir.join("traces");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(&trails).unwrap();
    std::fs::create_dir_all(&traces).unwrap();
    assert!(spin::available(), "spin and gcc are needed (apt-get install -y spin gcc)");
    let w = spin::workdir("report-html");
    let t = spin::safety_trail(&w, "notify", "BUG_POLL_NO_RECHECK_NOTIFIED")
        .expect("spin ran")
        .expect("the planted bug is caught");
    std::fs::write(
        trails.join("notify__BUG_POLL_NO_RECHECK_NOTIFIED__safety.replay.txt"),
        &t.replay,
    )
    .unwrap();
    std::fs::write(summary.join("run.tsv"), "default\t1/1\ttest\tpassed\n").unwrap();
    std::fs::write(
        summary.join("loom.tsv"),
        "notify_vs_blocking_poll\tloom b=2\t123 executions\tp_no_lost_wakeup\tnotify_no_seqcst_fence\t1.0\n",
    )
    .unwrap();
    std::fs::write(
        traces.join("shrunk.trace"),
        "#! title a shrunk workload: a notify while the poller arms\n#! checker workload\n\
         #! thread 0 home\n#! thread 1 remote\n#! property p_no_lost_wakeup\n#! violation last\n\
         0 ctx_poll_compute_timeout timeout=-1\n1 ctx_notify_set_notified notified=1\n\
         1 ctx_notify_fence\n1 ctx_notify_read_notify_me notify_me=0\n\
         0 ctx_poll_notify_me_add notify_me=2\n0 ctx_poll_fence\n0 ctx_poll_wait notifier=0\n",
    )
    .unwrap();
    // A loom failure as the facade's runner writes it (ci/loom's planted-bug builds).
    std::fs::copy(
        aioctx_conformance::root().join(
            "conformance/tests/data/loom.task_wake_vs_blocking_poll.task_clears_woken_after_poll.trace",
        ),
        traces.join("loom.trace"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_verify-report"))
        .args(["--summary".as_ref(), summary.as_os_str()])
        .args(["--out".as_ref(), dir.join("out").as_os_str()])
        .args(["--traces".as_ref(), traces.as_os_str()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "verify-report failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "report: <path>: <n> charts (...)"
    let charts: usize = stdout
        .split_once(" charts")
        .and_then(|(a, _)| a.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no chart count in {stdout}"));
    (dir.join("out").join("index.html"), charts)
}

#[test]
fn report_renders_in_chromium_with_every_chart() {
    let dir = out_dir().join("report-html");
    let (page, charts) = build_report(&dir);
    // One spin trail, the real code replaying it, the Rust model's five planted bugs, two trace
    // files (a shrunk workload, a loom failure).
    assert_eq!(charts, 9, "charts drawn");

    let dom = browser(&page, &["--dump-dom"]);
    assert!(
        dom.contains("id=\"summary\"") && dom.contains("notify_vs_blocking_poll"),
        "summary table"
    );
    assert_eq!(
        dom.matches("class=\"msc\"").count(),
        charts,
        "an <svg class=msc> per chart in the DOM"
    );
    assert_eq!(dom.matches("class=\"violation\"").count(), charts, "a boxed step per chart");
    assert!(dom.contains("violated: safety: assert(!(bh_list))"), "spin's failed assertion");
    assert!(dom.contains("violated: p_no_lost_wakeup") && dom.contains("violated: p_no_busy_loop"));
    assert!(dom.contains("planted bug: poll_no_recheck_notified"));
    assert!(dom.contains("impl/src/notify.rs#L"), "step names link to their code line");
    assert!(dom.contains("a shrunk workload"), "the trace file's chart");
    assert!(
        dom.contains(
            "task_wake_vs_blocking_poll under loom, planted bug task_clears_woken_after_poll"
        ) && dom.contains("planted bug: task_clears_woken_after_poll"),
        "the loom failure's chart"
    );
    assert!(
        dom.contains("the real code leaves the buggy run")
            && dom.contains("ctx_poll_recheck_notified"),
        "the replay chart: the real code re-checks `notified` where the buggy trail blocks"
    );

    let png = dir.join("screenshot.png");
    let (w, h, ink, red) = screenshot(&page, &png, 6000);
    let bytes = std::fs::metadata(&png).unwrap().len();
    println!(
        "MEASURE report screenshot={w}x{h} png_bytes={bytes} non_white={:.1}% red_px={red} charts={charts} html_bytes={}",
        100.0 * ink,
        std::fs::metadata(&page).unwrap().len()
    );
    assert!(ink > 0.02, "the page looks blank: {:.3}% non-white", 100.0 * ink);
    assert!(red > 100, "no violation box is visible in the screenshot ({red} red pixels)");
}

/// The "not blank" check fails on a blank page (the check can fail).
#[test]
fn a_blank_page_fails_the_rendered_check() {
    let dir = out_dir().join("report-html-blank");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("blank.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body></body></html>\n").unwrap();
    let (_, _, ink, red) = screenshot(&page, &dir.join("blank.png"), 800);
    assert!(
        ink < 0.001 && red == 0,
        "a blank page measured {:.3}% non-white, {red} red",
        100.0 * ink
    );
}
