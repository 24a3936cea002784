//! PNG plots of a run: learning curves per epoch and the test confusion matrix (SPEC 9), and the
//! curves of every optimizer of `compare`.
//!
//! Drawn with plotters' bitmap backend into an RGB buffer and encoded with the `image` crate; text
//! uses DejaVu Sans embedded in the binary (the `dejavu` crate), so no fontconfig or system fonts.

use crate::data::CLASSES;
use crate::train::EpochRecord;
use crate::{Error, Result};
use plotters::prelude::*;
use plotters::style::FontStyle;

const FONT: &str = "sans-serif";

/// Plotters has no font registry on wasm32; the page draws its own curves, so nothing is lost.
#[cfg(target_arch = "wasm32")]
fn register_font() {}

#[cfg(not(target_arch = "wasm32"))]
fn register_font() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TTF; a failure here would only lose the text, so it is
        // logged rather than turned into a run failure.
        for style in [FontStyle::Normal, FontStyle::Bold] {
            let bytes = match style {
                FontStyle::Bold => dejavu::sans::bold(),
                _ => dejavu::sans::regular(),
            };
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                log::warn!("plot: the embedded font did not load; plots will have no text");
            }
        }
    });
}

fn plot_err(what: &str) -> impl Fn(String) -> Error + '_ {
    move |e| Error::Runtime(format!("drawing {what}: {e}"))
}

/// An RGB buffer of `w` x `h` as PNG bytes.
fn encode_png(buf: Vec<u8>, w: u32, h: u32, what: &str) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::Runtime(format!("drawing {what}: buffer size mismatch")))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| Error::Runtime(format!("encoding {what}: {e}")))?;
    Ok(out.into_inner())
}

/// `[lo, hi]` padded so a flat series still gets a visible band; non-finite values are skipped.
fn padded_range(values: impl Iterator<Item = f64>, floor: Option<f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let lo = floor.map_or(lo - pad, |f| (lo - pad).max(f));
    (lo, hi + pad)
}

/// A y tick label with as many decimals as the axis span needs.
fn tick(v: f64, span: f64) -> String {
    let decimals = if span >= 20.0 {
        0
    } else if span >= 2.0 {
        1
    } else if span >= 0.2 {
        2
    } else {
        3
    };
    format!("{v:.decimals$}")
}

/// `curves.png`: loss (left) and accuracy (right) per epoch, train and validation.
pub fn curves_png(records: &[EpochRecord]) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = (1100u32, 440u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = plot_err("curves.png");
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let panels = root.split_evenly((1, 2));
        let n = records.len().max(1) as f64;
        let x_range = 0.5..(n + 0.5);
        let has_val = records
            .iter()
            .any(|r| r.val_loss.is_finite() && r.val_loss > 0.0);
        type Pick = fn(&EpochRecord) -> f64;
        let specs: [(&str, &str, Pick, Pick, Option<f64>); 2] = [
            (
                "Loss",
                "mean cross-entropy",
                |r| r.train_loss,
                |r| r.val_loss,
                Some(0.0),
            ),
            (
                "Accuracy",
                "accuracy",
                |r| r.train_accuracy,
                |r| r.val_accuracy,
                Some(0.0),
            ),
        ];
        for (area, (title, y_desc, train, val, floor)) in panels.iter().zip(specs) {
            let vals = records
                .iter()
                .map(train)
                .chain(records.iter().filter(|_| has_val).map(val));
            let (lo, hi) = padded_range(vals, floor);
            let hi = if title == "Accuracy" { hi.min(1.0) } else { hi };
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 24))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(x_range.clone(), lo..hi)
                .map_err(|x| e(x.to_string()))?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(y_desc)
                .x_labels((records.len() + 1).min(12))
                .x_label_formatter(&|v| {
                    if (v - v.round()).abs() < 1e-6 && *v >= 1.0 {
                        format!("{v:.0}")
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|v| tick(*v, hi - lo))
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 16))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(|x| e(x.to_string()))?;
            let mut series: Vec<(&str, RGBColor, Pick)> = vec![("train", BLUE, train)];
            if has_val {
                series.push(("validation", RGBColor(230, 97, 0), val));
            }
            for (name, color, pick) in series {
                let pts: Vec<(f64, f64)> = records
                    .iter()
                    .map(|r| (r.epoch as f64, pick(r)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|x| e(x.to_string()))?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|x| e(x.to_string()))?;
            }
            chart
                .configure_series_labels()
                .position(if title == "Loss" {
                    SeriesLabelPosition::UpperRight
                } else {
                    SeriesLabelPosition::LowerRight
                })
                .label_font((FONT, 15))
                .border_style(BLACK.mix(0.5))
                .background_style(WHITE.mix(0.9))
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    encode_png(buf, w, h, "curves.png")
}

/// `confusion.png`: counts per (true, predicted) class; cells shaded by the share of their row.
pub fn confusion_png(confusion: &[Vec<u64>], title: &str) -> Result<Vec<u8>> {
    register_font();
    let k = confusion.len();
    let (w, h) = (1040u32, 900u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = plot_err("confusion.png");
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let name = |i: usize| CLASSES.get(i).copied().unwrap_or("?").to_string();
        // Rows top to bottom are true classes 0..k, so the y axis runs from k down to 0.
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 22))
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(110)
            .build_cartesian_2d(0f64..k as f64, k as f64..0f64)
            .map_err(|x| e(x.to_string()))?;
        let centred = |v: &f64| {
            let i = v.floor();
            if (v - i - 0.5).abs() < 1e-6 && i >= 0.0 {
                name(i as usize)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2 * k + 1)
            .y_labels(2 * k + 1)
            .x_label_formatter(&centred)
            .y_label_formatter(&centred)
            .x_label_style((FONT, 14))
            .y_label_style((FONT, 14))
            .x_desc("predicted class")
            .y_desc("true class")
            .axis_desc_style((FONT, 16))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (t, row) in confusion.iter().enumerate() {
            let total: u64 = row.iter().sum();
            for (p, &c) in row.iter().enumerate() {
                let share = if total == 0 {
                    0.0
                } else {
                    c as f64 / total as f64
                };
                let shade = |lo: f64| (255.0 - share * (255.0 - lo)).round() as u8;
                let fill = RGBColor(shade(8.0), shade(48.0), shade(107.0));
                let (x0, y0) = (p as f64, t as f64);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                        fill.filled(),
                    )))
                    .map_err(|x| e(x.to_string()))?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let label = c.to_string();
                let style = TextStyle::from((FONT, 15).into_font()).color(&ink).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Center,
                    ),
                );
                chart
                    .draw_series(std::iter::once(Text::new(
                        label,
                        (x0 + 0.5, y0 + 0.5),
                        style,
                    )))
                    .map_err(|x| e(x.to_string()))?;
            }
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    encode_png(buf, w, h, "confusion.png")
}

/// One epoch of one optimizer in `compare`: the mean over seeds with its min and max.
#[derive(Clone, Copy, Debug, serde::Serialize, PartialEq)]
pub struct ComparePoint {
    /// 1-based.
    pub epoch: usize,
    /// Seeds that reached this epoch (a diverged run stops early).
    pub runs: usize,
    pub val_accuracy: f64,
    pub val_accuracy_min: f64,
    pub val_accuracy_max: f64,
    pub train_loss: f64,
    pub train_loss_min: f64,
    pub train_loss_max: f64,
}

/// One optimizer's curve for [`compare_png`].
#[derive(Clone, Debug)]
pub struct CompareCurve {
    pub label: String,
    pub points: Vec<ComparePoint>,
}

/// Tick values for a log axis over `[lo, hi]`: 1, 2 and 5 per decade, or every digit when that
/// gives fewer than three (plotters' own log ticks are whole decades only).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let pick = |mults: &[f64]| -> Vec<f64> {
        let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (d0..=d1)
            .flat_map(|d| mults.iter().map(move |m| m * 10f64.powi(d)))
            .filter(|v| (lo..=hi).contains(v))
            .collect()
    };
    let t = pick(&[1.0, 2.0, 5.0]);
    if t.len() >= 3 {
        t
    } else {
        pick(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    }
}

/// Ten colours that stay apart from each other (matplotlib's "tab10").
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// `compare.png`: validation accuracy (left) and training loss on a log scale (right) per epoch,
/// one colour per optimizer, with the min-max band over seeds where there are several. The loss
/// axis is logarithmic because WAME's first epochs run at losses many times the baselines'.
pub fn compare_png(curves: &[CompareCurve], subtitle: &str) -> Result<Vec<u8>> {
    register_font();
    let (w, h) = (1400u32, 620u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = plot_err("compare.png");
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let root = root
            .titled(
                "Optimizer comparison on Fashion-MNIST",
                (FONT, 26).into_font().style(FontStyle::Bold),
            )
            .map_err(|x| e(x.to_string()))?;
        let (head, body) = root.split_vertically(28);
        head.draw_text(
            subtitle,
            &TextStyle::from((FONT, 16).into_font()).color(&BLACK.mix(0.75)),
            (40, 4),
        )
        .map_err(|x| e(x.to_string()))?;
        // The legend gets its own column: inside a panel it would hide the curves it names.
        let (plots, legend) = body.split_horizontally(w as i32 - 250);
        let panels = plots.split_evenly((1, 2));
        let epochs = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.epoch))
            .max()
            .unwrap_or(1) as f64;
        let x_range = 0.5..(epochs + 0.5);
        let x_fmt = |v: &f64| {
            if (v - v.round()).abs() < 1e-6 && *v >= 1.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        };
        let x_labels = (epochs as usize + 1).min(16);
        let band = |c: &CompareCurve,
                    lo: fn(&ComparePoint) -> f64,
                    hi: fn(&ComparePoint) -> f64| {
            let pts: Vec<&ComparePoint> = c
                .points
                .iter()
                .filter(|p| lo(p).is_finite() && hi(p).is_finite())
                .collect();
            if pts.len() < 2 || pts.iter().all(|p| lo(p) == hi(p)) {
                return None;
            }
            let mut poly: Vec<(f64, f64)> = pts.iter().map(|p| (p.epoch as f64, hi(p))).collect();
            poly.extend(pts.iter().rev().map(|p| (p.epoch as f64, lo(p))));
            Some(poly)
        };
        let line = |c: &CompareCurve, f: fn(&ComparePoint) -> f64| -> Vec<(f64, f64)> {
            c.points
                .iter()
                .map(|p| (p.epoch as f64, f(p)))
                .filter(|p| p.1.is_finite())
                .collect()
        };

        // Validation accuracy.
        let all_acc = curves.iter().flat_map(|c| {
            c.points
                .iter()
                .flat_map(|p| [p.val_accuracy_min, p.val_accuracy_max, p.val_accuracy])
        });
        let (lo, hi) = padded_range(all_acc, Some(0.0));
        let hi = hi.min(1.0);
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("Validation accuracy", (FONT, 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.clone(), lo..hi)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("accuracy")
            .x_labels(x_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| tick(*v, hi - lo))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        if (lo..hi).contains(&0.9) {
            let grey = BLACK.mix(0.45);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(0.5, 0.9), (epochs + 0.5, 0.9)],
                    6,
                    4,
                    grey.stroke_width(1),
                ))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(std::iter::once(Text::new(
                    "90 %",
                    (0.55, 0.9),
                    TextStyle::from((FONT, 13).into_font()).color(&grey),
                )))
                .map_err(|x| e(x.to_string()))?;
        }
        for (i, c) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if let Some(poly) = band(c, |p| p.val_accuracy_min, |p| p.val_accuracy_max) {
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(0.15).filled(),
                    )))
                    .map_err(|x| e(x.to_string()))?;
            }
            let pts = line(c, |p| p.val_accuracy);
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|x| e(x.to_string()))?;
        }

        // Training loss, log scale.
        let all_loss = curves.iter().flat_map(|c| {
            c.points
                .iter()
                .flat_map(|p| [p.train_loss_min, p.train_loss_max, p.train_loss])
        });
        let (mut llo, mut lhi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in all_loss.filter(|v| v.is_finite() && *v > 0.0) {
            llo = llo.min(v);
            lhi = lhi.max(v);
        }
        if !llo.is_finite() {
            (llo, lhi) = (0.1, 1.0);
        }
        // A tenth of a decade of air on either side, and at least a factor of 2 of span.
        let (llo, lhi) = (llo / 1.26, (lhi * 1.26).max(llo * 2.0));
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("Training loss (log scale)", (FONT, 22))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                x_range,
                (llo..lhi).log_scale().with_key_points(log_ticks(llo, lhi)),
            )
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("mean cross-entropy")
            .x_labels(x_labels)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| {
                if *v >= 10.0 {
                    format!("{v:.0}")
                } else if *v >= 1.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.2}")
                }
            })
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for (i, c) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            if let Some(poly) = band(c, |p| p.train_loss_min, |p| p.train_loss_max) {
                chart
                    .draw_series(std::iter::once(Polygon::new(
                        poly,
                        color.mix(0.15).filled(),
                    )))
                    .map_err(|x| e(x.to_string()))?;
            }
            let pts: Vec<(f64, f64)> = line(c, |p| p.train_loss)
                .into_iter()
                .filter(|p| p.1 > 0.0)
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|x| e(x.to_string()))?;
        }
        let style = TextStyle::from((FONT, 15).into_font()).color(&BLACK);
        legend
            .draw_text("optimizer (lr)", &style, (8, 60))
            .map_err(|x| e(x.to_string()))?;
        for (i, c) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let y = 92 + 26 * i as i32;
            legend
                .draw(&PathElement::new(
                    vec![(8, y), (36, y)],
                    color.stroke_width(3),
                ))
                .map_err(|x| e(x.to_string()))?;
            legend
                .draw_text(&c.label, &style, (44, y - 8))
                .map_err(|x| e(x.to_string()))?;
        }
        body.present().map_err(|x| e(x.to_string()))?;
    }
    encode_png(buf, w, h, "compare.png")
}

/// `optimizer.png`: per layer (columns conv1, conv2, fc1, fc2), the distribution of WAME's zeta
/// over the weights at the end of each epoch (top: one column of log-spaced bins per epoch, darker
/// for a larger share, between `zeta_min` and `zeta_max`; for the other optimizers the
/// update/weight ratio) and the mean effective step `|dw| / lr` of the weight and the bias
/// (bottom, log scale). `None` when the records hold no optimizer statistics.
pub fn optimizer_png(
    records: &[EpochRecord],
    zeta_bounds: (f32, f32),
    title: &str,
) -> Result<Option<Vec<u8>>> {
    const LAYERS: [&str; 4] = ["conv1", "conv2", "fc1", "fc2"];
    let recs: Vec<&EpochRecord> = records.iter().filter(|r| !r.optim.is_empty()).collect();
    if recs.is_empty() {
        return Ok(None);
    }
    register_font();
    let find = |r: &EpochRecord, name: &str| r.optim.iter().find(|t| t.tensor == name).cloned();
    let wame = recs
        .iter()
        .any(|r| r.optim.iter().any(|t| t.zeta.is_some()));
    let (w, h) = (1500u32, 760u32);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let e = plot_err("optimizer.png");
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let root = root
            .titled(title, (FONT, 22).into_font().style(FontStyle::Bold))
            .map_err(|x| e(x.to_string()))?;
        let rows = root.split_evenly((2, 4));
        let last = recs.last().map_or(1, |r| r.epoch) as f64;
        for (li, layer) in LAYERS.iter().enumerate() {
            let weight = format!("{layer}.weight");
            let bias = format!("{layer}.bias");
            let top = &rows[li];
            if wame {
                let (lo, hi) = (zeta_bounds.0 as f64, zeta_bounds.1 as f64);
                let edges: Vec<f64> = crate::optim::stats::zeta_edges(zeta_bounds.0, zeta_bounds.1)
                    .iter()
                    .map(|&v| v as f64)
                    .chain([hi])
                    .collect();
                let mut chart = log_panel(top, format!("{weight}: zeta"), last, (lo, hi))?;
                let mut cells = Vec::new();
                for r in &recs {
                    let Some(z) = find(r, &weight).and_then(|t| t.zeta) else {
                        continue;
                    };
                    let x = r.epoch as f64;
                    for (k, &share) in z.hist.iter().enumerate().take(edges.len() - 1) {
                        // Square root: small shares (the pinned tails) stay visible.
                        let a = share.clamp(0.0, 1.0).sqrt();
                        let shade = (255.0 * (1.0 - a)) as u8;
                        let c = RGBColor(shade, shade, 255 - (a * 60.0) as u8);
                        cells.push(Rectangle::new(
                            [(x - 0.5, edges[k]), (x + 0.5, edges[k + 1])],
                            c.filled(),
                        ));
                    }
                }
                chart.draw_series(cells).map_err(|x| e(x.to_string()))?;
            } else {
                let pts: Vec<(f64, f64)> = recs
                    .iter()
                    .filter_map(|r| {
                        let u = find(r, &weight)?.update_ratio?;
                        (u > 0.0 && u.is_finite()).then_some((r.epoch as f64, u))
                    })
                    .collect();
                let (lo, hi) = log_range(pts.iter().map(|p| p.1));
                let mut chart = log_panel(top, format!("{weight}: |dw| / |w|"), last, (lo, hi))?;
                chart
                    .draw_series(LineSeries::new(pts, PALETTE[0].stroke_width(2)))
                    .map_err(|x| e(x.to_string()))?;
            }
            type Series = (String, RGBColor, Vec<(f64, f64)>);
            let series: Vec<Series> = [(&weight, 0), (&bias, 1)]
                .into_iter()
                .map(|(name, c)| {
                    let pts = recs
                        .iter()
                        .filter_map(|r| {
                            let s = find(r, name)?.mean_step;
                            (s > 0.0 && s.is_finite()).then_some((r.epoch as f64, s))
                        })
                        .collect();
                    (name.clone(), PALETTE[c], pts)
                })
                .collect();
            let (lo, hi) = log_range(series.iter().flat_map(|s| s.2.iter().map(|p| p.1)));
            let mut chart = log_panel(
                &rows[4 + li],
                format!("{layer}: mean |dw| / lr"),
                last,
                (lo, hi),
            )?;
            for (name, color, pts) in series {
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                    .map_err(|x| e(x.to_string()))?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|x| e(x.to_string()))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FONT, 13))
                .border_style(BLACK.mix(0.5))
                .background_style(WHITE.mix(0.9))
                .draw()
                .map_err(|x| e(x.to_string()))?;
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    encode_png(buf, w, h, "optimizer.png").map(Some)
}

type LogChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::combinators::WithKeyPoints<LogCoord<f64>>,
    >,
>;

/// One panel of `optimizer.png`: epochs 1..=`last` on x, `lo..hi` on a log y axis with 1-2-5
/// ticks, the mesh drawn.
fn log_panel<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: String,
    last: f64,
    (lo, hi): (f64, f64),
) -> Result<LogChart<'a, 'b>> {
    let e = plot_err("optimizer.png");
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 18))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0.5..(last + 0.5),
            (lo..hi).log_scale().with_key_points(log_ticks(lo, hi)),
        )
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_labels((last as usize + 1).min(12))
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 && *v >= 1.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| format!("{v}"))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    Ok(chart)
}

/// A log axis range around positive `values`: half a decade of room each side, `(1e-3, 1)` when
/// there are none.
fn log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    if !(lo.is_finite() && hi > 0.0) {
        return (1e-3, 1.0);
    }
    (lo / 3.0, hi * 3.0)
}
