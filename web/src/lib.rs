//! fmnist-gpu in the browser: the native crate's GPU engine (the same WGSL kernels and host code)
//! on the page's WebGPU device, exposed to JavaScript with wasm-bindgen.
//!
//! Nothing here blocks: every GPU wait is an `await` on the `*_async` forms of the engine, which
//! the native build drives with `pollster`. One call at a time per object: JavaScript awaits
//! each promise before the next call (wasm-bindgen refuses overlapping `&mut self` calls).

use fmnist_gpu::checkpoint::model_bytes;
use fmnist_gpu::cmd::predict::{classify, load_image_bytes};
use fmnist_gpu::cmd::train::run_from_flags;
use fmnist_gpu::cpu::loss::Metrics;
use fmnist_gpu::data::{self, Split, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use fmnist_gpu::gpu::GpuContext;
use fmnist_gpu::metrics::Report;
use fmnist_gpu::model::Params;
use fmnist_gpu::net::cpu::CpuNet;
use fmnist_gpu::net::gpu::GpuNet;
use fmnist_gpu::net::{Net, NetConfig, NetData, Which};

use fmnist_gpu::parity;
use fmnist_gpu::train::{EpochRecord, RunConfig, epoch_order, model_meta, rates};
use fmnist_gpu::{Error, Result};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(s: &str);
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(s: &str);
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// What the data source is called in the run config (the CLI records its data directory).
const DATA_LABEL: &str = "browser";

struct ConsoleLog;

impl log::Log for ConsoleLog {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("[{} {}] {}", r.level(), r.target(), r.args());
            if r.level() <= log::Level::Warn {
                console_error(&line);
            } else {
                console_log(&line);
            }
        }
    }
    fn flush(&self) {}
}

static LOGGER: ConsoleLog = ConsoleLog;

/// Panics and log records go to the browser console, so a host bug names itself instead of
/// surfacing as a bare `unreachable` trap.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("fmnist-web panicked: {info}"))
    }));
    let _ = log::set_logger(&LOGGER).map(|()| log::set_max_level(log::LevelFilter::Info));
}

fn js(e: Error) -> JsError {
    JsError::new(&e.to_string())
}

fn metrics_json(m: &Metrics) -> serde_json::Value {
    let (loss, accuracy) = rates(m);
    json!({ "loss": loss, "accuracy": accuracy, "images": m.seen })
}

/// The kernel table (every WGSL entry point against its CPU twin, compiled into this same wasm)
/// on the browser's adapter, as one JSON document: the adapter, counts of entry points and
/// output rows passed, and every row that failed.
/// `progress(done, total, kernel)` is called before each case; `first`/`count` pick a range of
/// the cases (0 and 0: all of them), for looking into one case.
#[wasm_bindgen]
pub async fn kernel_table(
    progress: &js_sys::Function,
    first: u32,
    count: u32,
) -> std::result::Result<String, JsError> {
    let ctx = GpuContext::browser().await.map_err(js)?;
    let mut cases = parity::cases();
    let first = (first as usize).min(cases.len());
    let count = if count == 0 {
        cases.len()
    } else {
        count as usize
    };
    cases = cases.split_off(first);
    cases.truncate(count);
    let runner = parity::Runner::new(&ctx);
    let start = performance_now();
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let _ = progress.call3(
            &JsValue::NULL,
            &(i as u32).into(),
            &(cases.len() as u32).into(),
            &case.kernel().into(),
        );
        let got = runner.run_async(case).await.map_err(|e| {
            JsError::new(&format!(
                "kernel table case {} of {} ({} [{}]): {e}",
                i + 1,
                cases.len(),
                case.kernel(),
                case.shape()
            ))
        })?;
        rows.extend(got);
    }
    ctx.check().map_err(js)?;
    let summary = parity::summarize(&cases, &rows);
    let failed: Vec<&parity::KernelRow> = rows.iter().filter(|r| !r.ok).collect();
    let doc = json!({
        "adapter": ctx.adapter,
        "cases": cases.len(),
        "kernels_total": summary.len(),
        "kernels_passed": summary.iter().filter(|s| s.ok).count(),
        "rows_total": rows.len(),
        "rows_passed": rows.len() - failed.len(),
        "failures": failed,
        "report": parity::failure_report(&rows),
        "kernels": summary,
        "seconds": (performance_now() - start) / 1000.0,
    });
    Ok(doc.to_string())
}

/// A training run on the browser's GPU, with the CLI's flags, split, schedule and checkpoints.
#[wasm_bindgen]
pub struct Trainer {
    net: GpuNet,
    run: RunConfig,
    config_json: String,
    command: String,
    split: Split,
    test_labels: Vec<u8>,
    steps: u32,
    /// Epochs finished.
    epoch: usize,
    /// Steps taken in the current epoch; 0 means the next call starts an epoch.
    step: u32,
    lr: f32,
    m: Metrics,
    epoch_start_ms: f64,
    /// The parameters of the best validation epoch so far (the CLI's `model.safetensors`):
    /// `(val_accuracy, epoch, params)`.
    best: Option<(f64, usize, Params)>,
    records: Vec<EpochRecord>,
}

#[wasm_bindgen]
impl Trainer {
    /// Reads the four Fashion-MNIST files (IDX bytes, raw or gzip), opens the browser's WebGPU
    /// adapter and builds the GPU engine for `flags`, the flags of `fmnist-gpu train`.
    pub async fn create(
        flags: Vec<String>,
        train_images: Vec<u8>,
        train_labels: Vec<u8>,
        test_images: Vec<u8>,
        test_labels: Vec<u8>,
    ) -> std::result::Result<Trainer, JsError> {
        Self::build(
            flags,
            [train_images, train_labels, test_images, test_labels],
        )
        .await
        .map_err(js)
    }

    async fn build(flags: Vec<String>, files: [Vec<u8>; 4]) -> Result<Trainer> {
        let [tri, trl, tei, tel] = files;
        let name = |n: &str| format!("{n}.gz");
        let (a, b, c, d) = (
            name(TRAIN_IMAGES),
            name(TRAIN_LABELS),
            name(TEST_IMAGES),
            name(TEST_LABELS),
        );
        let train = data::pair_from_bytes((Path::new(&a), tri), (Path::new(&b), trl))?;
        let test = data::pair_from_bytes((Path::new(&c), tei), (Path::new(&d), tel))?;
        let (run, split) = run_from_flags(&flags, Path::new(DATA_LABEL), train.n)?;
        let mut cfg = run.net_config();
        // As the CLI does: a batch above the training images would only allocate empty slots.
        cfg.batch = cfg.batch.min(split.train.len() as u32).max(1);
        let ctx = GpuContext::browser().await?;
        let test_labels = test.labels.clone();
        let data = NetData {
            train: Arc::new(train),
            test: Arc::new(test),
        };
        let net = GpuNet::new(
            ctx,
            cfg,
            data,
            Params::glorot(run.hidden as usize, run.seed),
        )?;
        let config_json = run.to_json(net.device(), net.adapter()).to_string();
        let command = run.command(net.adapter().as_ref());
        let steps = split.train.len().div_ceil(run.batch_size as usize) as u32;
        Ok(Trainer {
            net,
            run,
            config_json,
            command,
            split,
            test_labels,
            steps,
            epoch: 0,
            step: 0,
            lr: 0.0,
            m: Metrics::default(),
            epoch_start_ms: 0.0,
            best: None,
            records: Vec::new(),
        })
    }

    /// The run as JSON: its config (as `config.json` holds it), the equivalent CLI command,
    /// the adapter, the split sizes and steps per epoch.
    pub fn describe(&self) -> String {
        json!({
            "config": serde_json::from_str::<serde_json::Value>(&self.config_json).ok(),
            "command": self.command,
            "adapter": self.net.adapter(),
            "train_images": self.split.train.len(),
            "val_images": self.split.val.len(),
            "test_images": self.test_labels.len(),
            "epochs": self.run.epochs,
            "steps_per_epoch": self.steps,
        })
        .to_string()
    }

    /// Up to `max_steps` optimizer steps of the current epoch (starting it when needed), then
    /// one readback of the loss sums; at the end of an epoch also the validation pass. Returns
    /// the progress as JSON, with `record` (the CLI's `metrics.jsonl` line) when an epoch ended
    /// and `finished` once every epoch has run.
    pub async fn train_steps(&mut self, max_steps: u32) -> std::result::Result<String, JsError> {
        self.advance(max_steps).await.map_err(js)
    }

    async fn advance(&mut self, max_steps: u32) -> Result<String> {
        if self.epoch >= self.run.epochs {
            return Ok(json!({ "finished": true, "epoch": self.epoch }).to_string());
        }
        if self.step == 0 {
            self.lr = self
                .run
                .lr_schedule
                .lr(self.run.optimizer.lr, self.epoch, self.run.epochs);
            let order = epoch_order(&self.split.train, self.run.seed, self.epoch);
            self.net.begin_epoch(&order, self.lr)?;
            self.m = Metrics::default();
            self.epoch_start_ms = performance_now();
        }
        let n = max_steps.max(1).min(self.steps - self.step);
        for _ in 0..n {
            self.net.train_step()?;
        }
        self.step += n;
        let part = self.net.take_metrics_async().await?;
        if !part.loss_sum.is_finite() {
            return Err(Error::Runtime(format!(
                "training diverged: the training loss became {} in epoch {} by step {} of {} \
                 (try a smaller --lr)",
                part.loss_sum,
                self.epoch + 1,
                self.step,
                self.steps
            )));
        }
        self.m.loss_sum += part.loss_sum;
        self.m.correct += part.correct;
        self.m.seen += part.seen;
        let train_ms = performance_now() - self.epoch_start_ms;
        let mut out = json!({
            "finished": false,
            "epoch": self.epoch + 1,
            "epochs": self.run.epochs,
            "step": self.step,
            "steps": self.steps,
            "train": metrics_json(&self.m),
            "images_per_second": self.m.seen as f64 / (train_ms / 1000.0).max(1e-9),
        });
        if self.step < self.steps {
            return Ok(out.to_string());
        }
        let vm = self
            .net
            .evaluate_async(Which::Train, &self.split.val, None)
            .await?;
        let params = self.net.params_async().await?;
        if !params.all_finite() || !vm.loss_sum.is_finite() {
            return Err(Error::Runtime(format!(
                "training diverged: the parameters became NaN or infinite in epoch {} (try a \
                 smaller --lr)",
                self.epoch + 1
            )));
        }
        let (train_loss, train_accuracy) = rates(&self.m);
        let (val_loss, val_accuracy) = rates(&vm);
        let rec = EpochRecord {
            epoch: self.epoch + 1,
            train_loss,
            train_accuracy,
            val_loss,
            val_accuracy,
            seconds: (performance_now() - self.epoch_start_ms) / 1000.0,
            images_per_second: self.split.train.len() as f64 / (train_ms / 1000.0).max(1e-9),
            lr: self.lr as f64,
            optim: Vec::new(),
        };
        // As the CLI keeps model.safetensors: ties go to the later epoch, and without a
        // validation split every epoch counts as best.
        if self
            .best
            .as_ref()
            .is_none_or(|(a, _, _)| val_accuracy >= *a || self.split.val.is_empty())
        {
            self.best = Some((val_accuracy, self.epoch + 1, params));
        }
        self.epoch += 1;
        self.step = 0;
        out["record"] = serde_json::to_value(&rec).expect("plain data");
        out["finished"] = (self.epoch >= self.run.epochs).into();
        self.records.push(rec);
        Ok(out.to_string())
    }

    /// The kept model (best validation epoch) on the whole test set: loss, accuracy, the
    /// per-class report and the confusion matrix, as `fmnist-gpu eval --json` reports them.
    pub async fn test_report(&mut self) -> std::result::Result<String, JsError> {
        self.test().await.map_err(js)
    }

    async fn test(&mut self) -> Result<String> {
        let (val, epoch, params) = self
            .best
            .clone()
            .ok_or_else(|| Error::Runtime("no epoch has finished yet".into()))?;
        let last = self.net.params_async().await?;
        self.net.set_params(&params)?;
        let all: Vec<u32> = (0..self.test_labels.len() as u32).collect();
        let mut preds = Vec::with_capacity(all.len());
        let m = self
            .net
            .evaluate_async(Which::Test, &all, Some(&mut preds))
            .await;
        // Training may go on from the last epoch, not the kept one.
        self.net.set_params(&last)?;
        let m = m?;
        let report = Report::new(&self.test_labels, &preds);
        let (loss, accuracy) = rates(&m);
        Ok(json!({
            "model_epoch": epoch,
            "val_accuracy": val,
            "test_loss": loss,
            "test_accuracy": accuracy,
            "report": report,
            "report_text": report.text(),
        })
        .to_string())
    }

    /// `model.safetensors` of the kept epoch, byte for byte what the CLI writes for this run.
    pub fn model_safetensors(&self) -> std::result::Result<Vec<u8>, JsError> {
        let (val, epoch, params) = self
            .best
            .as_ref()
            .ok_or_else(|| JsError::new("no epoch has finished yet"))?;
        model_bytes(params, &model_meta(&self.config_json, *epoch, *val)).map_err(js)
    }

    /// Classifies one image file (PNG, JPEG, GIF, BMP, WebP; any size) with the kept model, after
    /// the CLI's `predict` conversion to 28x28 grey; on the CPU twin, as `predict` does by
    /// default. Returns every class with its probability, most probable first, and the 784
    /// grey levels the network saw.
    pub fn predict(
        &self,
        name: String,
        bytes: Vec<u8>,
        invert: bool,
    ) -> std::result::Result<String, JsError> {
        let (_, _, params) = self
            .best
            .as_ref()
            .ok_or_else(|| JsError::new("no epoch has finished yet"))?;
        let pixels = load_image_bytes(Path::new(&name), &bytes, invert).map_err(js)?;
        let cfg = NetConfig::inference(1, params.hidden as u32);
        let mut net = CpuNet::new(cfg, NetData::empty(), params.clone());
        let ranked = classify(&mut net, std::slice::from_ref(&pixels), 1, 10).map_err(js)?;
        Ok(json!({ "file": name, "top": ranked[0], "pixels": pixels }).to_string())
    }
}
