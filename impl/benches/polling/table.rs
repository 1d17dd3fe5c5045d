//! Statistics and the table.

use crate::common::{fmt_v, render, spread, tsv_line, Row, Stat, TSV_HEAD};

/// The `q`-quantile (0..=1) of a sorted slice.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[derive(Default)]
pub(crate) struct Table {
    pub(crate) rows: Vec<Row>,
}

impl Table {
    pub(crate) fn info(&mut self, measure: impl Into<String>, s: Stat, unit: &'static str) {
        self.push(measure, s, unit, None, "-", "-", "info");
    }
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn push(
        &mut self,
        measure: impl Into<String>,
        s: Stat,
        unit: &'static str,
        ratio: Option<f64>,
        reference: &str,
        target: &str,
        result: &'static str,
    ) {
        self.rows.push(Row {
            measure: measure.into(),
            value: s.med,
            spread: if s.min == s.max { "-".into() } else { spread(s) },
            unit,
            ratio,
            reference: reference.into(),
            target: target.into(),
            result,
        });
    }
    pub(crate) fn note(&mut self, measure: impl Into<String>, target: &str, result: &'static str) {
        self.rows.push(Row {
            measure: measure.into(),
            value: f64::NAN,
            spread: "-".into(),
            unit: "-",
            ratio: None,
            reference: "-".into(),
            target: target.into(),
            result,
        });
    }

    pub(crate) fn render(&self) -> String {
        render(&self.rows, fmt_v)
    }

    pub(crate) fn tsv(&self) -> String {
        let mut s = String::from(TSV_HEAD);
        let mut parent = String::new();
        for r in &self.rows {
            // An indented row belongs to the row above it: name both, so each line stands alone.
            let name = if r.measure.starts_with(' ') {
                format!("{parent} / {}", r.measure.trim())
            } else {
                parent = r.measure.split(':').next().unwrap_or("").trim().to_string();
                r.measure.clone()
            };
            let value = if r.value.is_nan() { String::new() } else { r.value.to_string() };
            tsv_line(&mut s, &name, &value, r);
        }
        s
    }

    pub(crate) fn load_row(&mut self, part: &str, l: (f64, f64, f64)) {
        self.rows.push(Row {
            measure: format!(
                "load during {part}: other processes (machine busy {:.2}, this bench {:.2})",
                l.0, l.1
            ),
            value: l.2,
            spread: "-".into(),
            unit: "cores",
            ratio: None,
            reference: "-".into(),
            target: "-".into(),
            result: "info",
        });
    }
}

pub(crate) fn pass(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}
