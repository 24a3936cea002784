//! Confidence intervals over seeds and paired comparisons of optimizers (`compare --seeds N`):
//! Student's t intervals for a mean and for the mean of per-seed differences, and the words
//! that say whether a difference is resolved at that number of seeds.

use serde::{Deserialize, Serialize};

/// Student's t 0.975 quantile for 1 to 30 degrees of freedom (two-sided 95 %), from the standard
/// tables (checked against a numerical integral of the t density in the tests).
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// The two-sided 95 % quantile of Student's t with `df >= 1` degrees of freedom; above 30 the
/// next table entries (2.04 at 30 down to 1.96) differ by under 4 %, and 60 and 120 are used
/// as breakpoints.
pub fn t975(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[df - 1],
        31..=60 => 2.000,
        61..=120 => 1.980,
        _ => 1.960,
    }
}

/// A mean with its 95 % confidence interval (`None` with fewer than two values).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub n: usize,
    pub mean: f64,
    /// The sample standard deviation (n - 1).
    pub sd: f64,
    pub ci95: Option<[f64; 2]>,
}

impl Interval {
    pub fn of(v: &[f64]) -> Self {
        let n = v.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / n as f64
        };
        if n < 2 {
            return Self {
                n,
                mean,
                sd: f64::NAN,
                ci95: None,
            };
        }
        let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64).sqrt();
        let half = t975(n - 1) * sd / (n as f64).sqrt();
        Self {
            n,
            mean,
            sd,
            ci95: Some([mean - half, mean + half]),
        }
    }

    /// Whether the interval excludes 0 (for a difference: its sign is resolved).
    pub fn excludes_zero(&self) -> bool {
        self.ci95.is_some_and(|[lo, hi]| lo > 0.0 || hi < 0.0)
    }
}

/// One WAME variant against one baseline over the seeds both ran: differences `wame - baseline`
/// per seed (same seed: same split, data order, initial weights and dropout masks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    pub wame: String,
    pub baseline: String,
    /// Best validation accuracy, `wame - baseline`, over every paired seed.
    pub best_val_accuracy: Interval,
    /// Epochs to the target accuracy, `wame - baseline`, over the seeds where both reached it
    /// (negative: WAME got there sooner).
    pub epochs_to_target: Interval,
    /// Paired seeds in all, and those where only one of the two reached the target.
    pub seeds: usize,
    pub only_wame_reached: usize,
    pub only_baseline_reached: usize,
    /// The comparison in words.
    pub verdict: String,
}

/// One optimizer's per-seed results, in seed order.
pub struct Side<'a> {
    pub name: &'a str,
    pub seeds: &'a [u64],
    pub best: &'a [f64],
    pub to_target: &'a [Option<usize>],
}

fn signed(v: f64, digits: usize) -> String {
    format!("{v:+.digits$}")
}

fn interval_words(i: &Interval, digits: usize, unit: &str) -> String {
    match i.ci95 {
        Some([lo, hi]) => format!(
            "{}{unit} (95 % CI {} to {}{unit}, {} seeds)",
            signed(i.mean, digits),
            signed(lo, digits),
            signed(hi, digits),
            i.n
        ),
        None if i.n == 1 => format!("{}{unit} (1 seed: no interval)", signed(i.mean, digits)),
        None => "no paired seeds".to_string(),
    }
}

/// `wame` against `base` over the seeds both have (matched by seed value).
pub fn compare(wame: &Side, base: &Side, target: f64) -> Paired {
    let mut acc = Vec::new();
    let mut epochs = Vec::new();
    let (mut only_w, mut only_b, mut seeds) = (0, 0, 0);
    for (i, s) in wame.seeds.iter().enumerate() {
        let Some(j) = base.seeds.iter().position(|x| x == s) else {
            continue;
        };
        seeds += 1;
        acc.push(wame.best[i] - base.best[j]);
        match (wame.to_target[i], base.to_target[j]) {
            (Some(a), Some(b)) => epochs.push(a as f64 - b as f64),
            (Some(_), None) => only_w += 1,
            (None, Some(_)) => only_b += 1,
            (None, None) => {}
        }
    }
    let (a, e) = (Interval::of(&acc), Interval::of(&epochs));
    let pct = (target * 100.0).round();
    let acc_verdict = if a.excludes_zero() {
        format!(
            "{} is {} (resolved)",
            wame.name,
            if a.mean > 0.0 {
                "more accurate"
            } else {
                "less accurate"
            }
        )
    } else if a.ci95.is_some() {
        format!("not resolved at {seeds} seeds")
    } else {
        "needs at least 2 seeds".to_string()
    };
    let ep_verdict = if e.excludes_zero() {
        format!(
            "{} is {} (resolved)",
            wame.name,
            if e.mean < 0.0 { "faster" } else { "slower" }
        )
    } else if e.ci95.is_some() {
        format!("not resolved at {} seeds", e.n)
    } else {
        "needs at least 2 seeds where both reach it".to_string()
    };
    let mut reach = String::new();
    if only_w + only_b > 0 {
        reach = format!(
            "; only {} reached it in {only_w} seeds, only {} in {only_b}",
            wame.name, base.name
        );
    }
    let epochs_words = if e.n == 0 {
        format!("epochs to {pct} %: no seed where both reached it")
    } else {
        format!(
            "epochs to {pct} % {}: {ep_verdict}",
            interval_words(&e, 1, "")
        )
    };
    let verdict = format!(
        "{} vs {}: best validation accuracy {}: {acc_verdict}; {epochs_words}{reach}",
        wame.name,
        base.name,
        interval_words(&a, 4, ""),
    );
    Paired {
        wame: wame.name.to_string(),
        baseline: base.name.to_string(),
        best_val_accuracy: a,
        epochs_to_target: e,
        seeds,
        only_wame_reached: only_w,
        only_baseline_reached: only_b,
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ln Gamma(df / 2) for a positive integer df: from Gamma(1) = 1 and Gamma(1/2) = sqrt(pi).
    fn ln_gamma_half(df: usize) -> f64 {
        let (mut x, mut g) = if df.is_multiple_of(2) {
            (1.0, 0.0)
        } else {
            (0.5, std::f64::consts::PI.sqrt().ln())
        };
        while x < df as f64 / 2.0 - 1e-9 {
            g += x.ln();
            x += 1.0;
        }
        g
    }

    /// P(0 < T < t) for Student's t with df degrees of freedom, by Simpson's rule.
    fn half_cdf(t: f64, df: usize) -> f64 {
        let v = df as f64;
        let c =
            (ln_gamma_half(df + 1) - ln_gamma_half(df)).exp() / (v * std::f64::consts::PI).sqrt();
        let pdf = |x: f64| c * (1.0 + x * x / v).powf(-(v + 1.0) / 2.0);
        let n = 20_000;
        let h = t / n as f64;
        let mut s = pdf(0.0) + pdf(t);
        for i in 1..n {
            s += pdf(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0
    }

    #[test]
    fn the_t_table_is_the_975_quantile() {
        for df in 1..=30 {
            let p = 0.5 + half_cdf(t975(df), df);
            // Three decimals in the table: 5e-4 in t is under 3e-5 in probability.
            assert!(
                (p - 0.975).abs() < 3e-5,
                "df {df}: P(T < {}) = {p}",
                t975(df)
            );
        }
        assert!(t975(0).is_nan());
    }

    #[test]
    fn intervals_use_the_sample_deviation() {
        let i = Interval::of(&[2.0, 3.0, 4.0]);
        assert_eq!((i.n, i.mean, i.sd), (3, 3.0, 1.0));
        let [lo, hi] = i.ci95.unwrap();
        let half = 4.303 / 3f64.sqrt();
        assert!((lo - (3.0 - half)).abs() < 1e-12 && (hi - (3.0 + half)).abs() < 1e-12);
        assert!(i.excludes_zero());
        assert!(!Interval::of(&[1.0, 2.0, 3.0]).excludes_zero());
        assert!(!Interval::of(&[-1.0, 1.0]).excludes_zero());
        assert_eq!(Interval::of(&[5.0]).ci95, None);
    }

    #[test]
    fn pairs_match_seeds_and_say_what_is_resolved() {
        let seeds = [0, 1, 2];
        let w = Side {
            name: "wame-seed",
            seeds: &seeds,
            best: &[0.91, 0.92, 0.93],
            to_target: &[Some(2), Some(3), Some(2)],
        };
        // The baseline lists its seeds in another order: pairing goes by seed value.
        let b = Side {
            name: "adam",
            seeds: &[2, 0, 1],
            best: &[0.935, 0.905, 0.925],
            to_target: &[Some(4), Some(4), None],
        };
        let p = compare(&w, &b, 0.9);
        assert_eq!(p.seeds, 3);
        // Accuracy differences 0.005, -0.005, -0.005: not resolved.
        assert!((p.best_val_accuracy.mean + 0.005 / 3.0).abs() < 1e-12);
        assert!(!p.best_val_accuracy.excludes_zero());
        // Epochs: seeds 0 and 2 both reached (2 - 4, 2 - 4): a zero spread resolves it.
        assert_eq!(p.epochs_to_target.n, 2);
        assert_eq!(p.epochs_to_target.mean, -2.0);
        assert_eq!(p.only_wame_reached, 1);
        assert!(
            p.verdict.contains("not resolved at 3 seeds"),
            "{}",
            p.verdict
        );
        assert!(
            p.verdict.contains("wame-seed is faster (resolved)"),
            "{}",
            p.verdict
        );
        assert!(p.verdict.contains("epochs to 90 %"), "{}", p.verdict);
    }
}
