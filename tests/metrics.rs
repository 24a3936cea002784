//! The classification report against values sklearn's `classification_report` gives for the same
//! labels, and the learning-rate schedules.

use fmnist_gpu::metrics::Report;
use fmnist_gpu::train::LrSchedule;

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-12, "{a} vs {b}");
}

#[test]
fn report_matches_sklearn() {
    // sklearn: classification_report([0,0,1,1,2], [0,1,1,1,0], zero_division=0) gives
    // class 0: P 0.50 R 0.50 F1 0.50; class 1: P 0.67 R 1.00 F1 0.80; class 2: all 0;
    // macro 0.39 / 0.50 / 0.43; weighted 0.47 / 0.60 / 0.52; accuracy 0.60.
    let r = Report::new(&[0, 0, 1, 1, 2], &[0, 1, 1, 1, 0]);
    close(r.accuracy, 0.6);
    let c = &r.classes;
    close(c[0].precision, 0.5);
    close(c[0].recall, 0.5);
    close(c[0].f1, 0.5);
    close(c[1].precision, 2.0 / 3.0);
    close(c[1].recall, 1.0);
    close(c[1].f1, 0.8);
    close(c[2].precision, 0.0);
    close(c[2].f1, 0.0);
    assert_eq!(
        c.iter().map(|r| r.support).collect::<Vec<_>>(),
        [2, 2, 1, 0, 0, 0, 0, 0, 0, 0]
    );
    // Averages over the classes that occur (0, 1, 2), as sklearn does without `labels=`.
    close(r.macro_avg.precision, (0.5 + 2.0 / 3.0) / 3.0);
    close(r.macro_avg.recall, 0.5);
    close(r.macro_avg.f1, 1.3 / 3.0);
    close(r.weighted_avg.precision, (1.0 + 4.0 / 3.0) / 5.0);
    close(r.weighted_avg.recall, 0.6);
    close(r.weighted_avg.f1, 2.6 / 5.0);
    assert_eq!(r.macro_avg.support, 5);
    assert_eq!(r.confusion_matrix[0][..3], [1, 1, 0]);
    assert_eq!(r.confusion_matrix[1][..3], [0, 2, 0]);
    assert_eq!(r.confusion_matrix[2][..3], [1, 0, 0]);
    let text = r.text();
    for line in [
        "T-shirt/top     0.5000     0.5000     0.5000          2",
        "accuracy",
    ] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

#[test]
fn lr_schedules() {
    let lrs =
        |s: LrSchedule, e: usize| -> Vec<f64> { (0..e).map(|i| s.lr(1.0, i, e) as f64).collect() };
    assert_eq!(lrs(LrSchedule::Constant, 3), [1.0; 3]);
    assert_eq!(lrs(LrSchedule::Step, 1), [1.0]);
    let step4: Vec<f64> = [1.0, 1.0, 0.1, 0.01]
        .iter()
        .map(|&v: &f64| v as f32 as f64)
        .collect();
    assert_eq!(lrs(LrSchedule::Step, 4), step4);
    // 15 epochs (the seed preset's): 8 at the full rate, 4 at a tenth, 3 at a hundredth.
    let s15 = lrs(LrSchedule::Step, 15);
    assert!(s15[..8].iter().all(|&v| v == 1.0));
    assert!(s15[8..12].iter().all(|&v| v == 0.1f32 as f64));
    assert!(s15[12..].iter().all(|&v| v == 0.01f32 as f64));
    let c = lrs(LrSchedule::Cosine, 4);
    for (got, want) in c
        .iter()
        .zip([1.0, 0.853_553_390_593_273_8, 0.5, 0.146_446_609_406_726_24])
    {
        assert!((got - want).abs() < 1e-7, "{c:?}");
    }
}
