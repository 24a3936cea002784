//! Classification metrics: the per-class report the seed printed (sklearn's
//! `classification_report`) and the confusion matrix.

use crate::data::CLASSES;
use serde::Serialize;
use std::fmt::Write;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassRow {
    pub class: usize,
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Average {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Everything `eval` prints, and `report.txt` holds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub accuracy: f64,
    pub classes: Vec<ClassRow>,
    pub macro_avg: Average,
    pub weighted_avg: Average,
    /// `confusion_matrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// `num / den`, 0 when `den` is 0 (sklearn's `zero_division=0`, its default apart from the warning).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 { 0.0 } else { num / den }
}

impl Report {
    /// From true labels and predicted classes (same length, classes below 10; others are counted
    /// nowhere).
    pub fn new(labels: &[u8], predictions: &[u32]) -> Self {
        let k = CLASSES.len();
        let mut cm = vec![vec![0u64; k]; k];
        for (&t, &p) in labels.iter().zip(predictions) {
            if let (Some(row), true) = (cm.get_mut(t as usize), (p as usize) < k) {
                row[p as usize] += 1;
            }
        }
        let n: u64 = cm.iter().flatten().sum();
        let correct: u64 = (0..k).map(|i| cm[i][i]).sum();
        let classes: Vec<ClassRow> = (0..k)
            .map(|c| {
                let tp = cm[c][c] as f64;
                let support: u64 = cm[c].iter().sum();
                let predicted: u64 = cm.iter().map(|r| r[c]).sum();
                let precision = ratio(tp, predicted as f64);
                let recall = ratio(tp, support as f64);
                ClassRow {
                    class: c,
                    name: CLASSES[c].to_string(),
                    precision,
                    recall,
                    f1: ratio(2.0 * precision * recall, precision + recall),
                    support,
                }
            })
            .collect();
        // Like sklearn without `labels=`: averages run over the classes that occur in the labels
        // or the predictions (all ten on the test set; a small --limit may miss some).
        let present: Vec<&ClassRow> = classes
            .iter()
            .filter(|r| r.support > 0 || cm.iter().any(|row| row[r.class] > 0))
            .collect();
        let m = present.len().max(1) as f64;
        let macro_avg = Average {
            precision: present.iter().map(|r| r.precision).sum::<f64>() / m,
            recall: present.iter().map(|r| r.recall).sum::<f64>() / m,
            f1: present.iter().map(|r| r.f1).sum::<f64>() / m,
            support: n,
        };
        let wsum = |f: fn(&ClassRow) -> f64| {
            ratio(
                classes.iter().map(|r| f(r) * r.support as f64).sum(),
                n as f64,
            )
        };
        let weighted_avg = Average {
            precision: wsum(|r| r.precision),
            recall: wsum(|r| r.recall),
            f1: wsum(|r| r.f1),
            support: n,
        };
        Self {
            accuracy: ratio(correct as f64, n as f64),
            classes,
            macro_avg,
            weighted_avg,
            confusion_matrix: cm,
        }
    }

    /// sklearn's layout (four decimals instead of two), then the confusion matrix.
    pub fn text(&self) -> String {
        let width = CLASSES
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{i} {c}").len())
            .chain(["weighted avg".len()])
            .max()
            .unwrap_or(12);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>width$} {:>10} {:>10} {:>10} {:>10}\n",
            "", "precision", "recall", "f1-score", "support"
        );
        for r in &self.classes {
            let _ = writeln!(
                s,
                "{:>width$} {:>10.4} {:>10.4} {:>10.4} {:>10}",
                r.name, r.precision, r.recall, r.f1, r.support
            );
        }
        let _ = writeln!(
            s,
            "\n{:>width$} {:>10} {:>10} {:>10.4} {:>10}",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        );
        for (name, a) in [
            ("macro avg", &self.macro_avg),
            ("weighted avg", &self.weighted_avg),
        ] {
            let _ = writeln!(
                s,
                "{:>width$} {:>10.4} {:>10.4} {:>10.4} {:>10}",
                name, a.precision, a.recall, a.f1, a.support
            );
        }
        let _ = writeln!(
            s,
            "\nconfusion matrix (rows: true class, columns: predicted)\n"
        );
        let cell = self
            .confusion_matrix
            .iter()
            .flatten()
            .map(|c| c.to_string().len())
            .max()
            .unwrap_or(1)
            .max(3);
        let _ = write!(s, "{:>width$}", "");
        for c in 0..self.confusion_matrix.len() {
            let _ = write!(s, " {c:>cell$}");
        }
        s.push('\n');
        for (t, row) in self.confusion_matrix.iter().enumerate() {
            let _ = write!(s, "{:<width$}", format!("{t} {}", CLASSES[t]));
            for c in row {
                let _ = write!(s, " {c:>cell$}");
            }
            s.push('\n');
        }
        s
    }
}
