//! The CPU net: the SPEC 1 network composed from the CPU twins in `crate::cpu`, in the same order
//! the GPU net records its dispatches.

use super::{Net, NetConfig, NetData, Probe, Which};
use crate::Result;
use crate::cpu::head::{self, HeadGrads, HeadInputs};
use crate::cpu::loss::{Metrics, argmax};
use crate::cpu::{conv, conv_grad, data, dense, optim};
use crate::gpu::AdapterSummary;
use crate::model::{CLASSES, Layers, PARAM_NAMES, Params};
use crate::optim::OptimizerKind;
use crate::optim::stats::{self, TensorStats};
use crate::params::{ConvGradParams, GatherParams, HeadParams, LossParams, StepState};
use crate::rng::{Stream, hash_key};

/// Activations and their gradients for one batch. The conv outputs exist only pooled: the fused
/// forward pools in its epilogue and the fused backward rebuilds their gradients per sample.
struct Acts {
    x: Vec<f32>,
    y: Vec<u32>,
    p1: Vec<f32>,
    am1: Vec<u32>,
    p2: Vec<f32>,
    am2: Vec<u32>,
    d: Vec<f32>,
    h: Vec<f32>,
    logits: Vec<f32>,
    dlogits: Vec<f32>,
    dh: Vec<f32>,
    dd: Vec<f32>,
    dp1: Vec<f32>,
}

impl Acts {
    fn new(l: &Layers) -> Self {
        let z = |n: usize| vec![0.0f32; n];
        let b = l.batch as usize;
        Self {
            x: z(l.conv1.x_len()),
            y: vec![0; b],
            p1: z(l.pool1.y_len()),
            am1: vec![0; l.pool1.y_len()],
            p2: z(l.pool2.y_len()),
            am2: vec![0; l.pool2.y_len()],
            d: z(l.pool2.y_len()),
            h: z(b * l.hidden as usize),
            logits: z(b * CLASSES),
            dlogits: z(b * CLASSES),
            dh: z(b * l.hidden as usize),
            dd: z(l.pool2.y_len()),
            dp1: z(l.pool1.y_len()),
        }
    }
}

/// Per-op wall-clock times of a step, for `fmnist-gpu bench` (off unless asked for).
#[derive(Debug, Default)]
pub struct Laps {
    pub names: Vec<String>,
    pub seconds: Vec<f64>,
    last: Option<std::time::Instant>,
}

impl Laps {
    fn start(&mut self) {
        self.last = Some(std::time::Instant::now());
    }
}

/// Records the time since the last lap under `name`; nothing when timing is off.
fn lap(laps: &mut Option<Laps>, name: &str) {
    if let Some(l) = laps {
        let now = std::time::Instant::now();
        if let Some(t0) = l.last {
            l.names.push(name.to_string());
            l.seconds.push((now - t0).as_secs_f64());
        }
        l.last = Some(now);
    }
}

pub struct CpuNet {
    cfg: NetConfig,
    layers: Layers,
    data: NetData,
    params: Params,
    grads: Params,
    state: Vec<Vec<f32>>,
    acts: Acts,
    step: StepState,
    order: Vec<u32>,
    lr: f32,
    gather: GatherParams,
    metrics: Metrics,
    laps: Option<Laps>,
    /// [`Net::request_optim_stats`] was called: the next step computes them before its update.
    stats_requested: bool,
    stats: Vec<TensorStats>,
}

impl CpuNet {
    /// Times every op of the following steps (see [`CpuNet::take_laps`]).
    pub fn time_ops(&mut self, on: bool) {
        self.laps = on.then(Laps::default);
    }

    /// The ops timed since the last call, in step order.
    pub fn take_laps(&mut self) -> Laps {
        self.laps.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn new(cfg: NetConfig, data: NetData, params: Params) -> Self {
        let layers = cfg.layers();
        let state = params
            .tensors
            .iter()
            .map(|t| cfg.optim.initial_state(t.len()))
            .collect();
        Self {
            layers,
            grads: Params::zeros(params.hidden),
            state,
            acts: Acts::new(&layers),
            step: StepState {
                batch: cfg.batch,
                ..Default::default()
            },
            order: Vec::new(),
            lr: cfg.optim.lr,
            gather: GatherParams {
                batch: cfg.batch,
                pixels: 784,
                augment: cfg.augment as u32,
                seed: hash_key(cfg.seed, Stream::Augment),
            },
            metrics: Metrics::default(),
            laps: None,
            stats_requested: false,
            stats: Vec::new(),
            data,
            params,
            cfg,
        }
    }

    /// Forward pass on `acts.x`, the GPU step's dispatches in order; `train` applies dropout at
    /// step `self.step.t`, `backward` makes the head start the backward (fc2's gradients and
    /// `dh`). `lp`: the layers' training loss, or [`Layers::eval_loss`] when no backward follows.
    fn forward(
        &mut self,
        train: bool,
        lp: LossParams,
        valid: u32,
        metrics: &mut Metrics,
        backward: bool,
    ) -> f32 {
        let (l, a, w, g) = (
            &self.layers,
            &mut self.acts,
            &self.params.tensors,
            &mut self.grads.tensors,
        );
        let k = &mut self.laps;
        conv::forward_relu_pool(&l.conv1, &a.x, &w[0], &w[1], &mut a.p1, &mut a.am1, None);
        lap(k, "conv1.forward");
        let dropout = train && l.dropout_on();
        let drop = dropout.then_some((&l.drop, self.step.t, &mut a.d[..]));
        conv::forward_relu_pool(&l.conv2, &a.p1, &w[2], &w[3], &mut a.p2, &mut a.am2, drop);
        lap(k, "conv2.forward");
        let fc1_in = if dropout { &a.d } else { &a.p2 };
        dense::forward(&l.fc1, fc1_in, &w[4], &w[5], &mut a.h);
        lap(k, "fc1.forward");
        let (g6, g7) = g.split_at_mut(7);
        let grads = backward.then_some(HeadGrads {
            dlogits: &mut a.dlogits,
            dw: &mut g6[6],
            db: &mut g7[0],
            dh: &mut a.dh,
        });
        let inputs = HeadInputs {
            h: &a.h,
            w: &w[6],
            bias: &w[7],
            labels: &a.y,
        };
        let hp = HeadParams::from_layers(&l.fc2, &lp);
        let loss = head::head(&hp, valid, &inputs, &mut a.logits, metrics, grads);
        lap(k, "head");
        loss
    }

    /// The rest of the backward into `self.grads` after [`Self::forward`] with `backward`: fc1,
    /// then conv2 (weights and input) and conv1 (weights) with pool, ReLU and dropout backward in
    /// their loaders.
    fn backward(&mut self, train: bool) {
        let (l, a, w, g) = (
            &self.layers,
            &mut self.acts,
            &self.params.tensors,
            &mut self.grads.tensors,
        );
        let k = &mut self.laps;
        let dropout = train && l.dropout_on();
        let fc1_in = if dropout { &a.d } else { &a.p2 };
        let (g4, g5) = g.split_at_mut(5);
        dense::backward_fused(
            &l.fc1, fc1_in, &a.dh, &w[4], &mut g4[4], &mut g5[0], &mut a.dd,
        );
        lap(k, "fc1.backward");
        let conv2 = ConvGradParams::new(&l.conv2, dropout.then_some(&l.drop));
        let (g2, g3) = g.split_at_mut(3);
        conv_grad::backward(
            &conv2,
            self.step.t,
            &a.p1,
            &a.am2,
            &a.p2,
            &a.dd,
            &w[2],
            &mut g2[2],
            &mut g3[0],
            &mut a.dp1,
        );
        lap(k, "conv2.backward");
        let conv1 = ConvGradParams::new(&l.conv1, None);
        let (g0, g1) = g.split_at_mut(1);
        conv_grad::backward_weight(
            &conv1,
            self.step.t,
            &a.x,
            &a.am1,
            &a.p1,
            &a.dp1,
            &mut g0[0],
            &mut g1[0],
        );
        lap(k, "conv1.backward_weight");
    }

    fn update(&mut self) {
        let t = self.step.t + 1;
        let o = self.cfg.optim;
        let k = &mut self.laps;
        let tensors = self.params.tensors.iter_mut().zip(&self.grads.tensors);
        for (((w, g), s), name) in tensors.zip(&mut self.state).zip(PARAM_NAMES) {
            let n = w.len();
            match o.kind {
                OptimizerKind::Wame => {
                    let p = o.wame_params(n, self.lr);
                    optim::wame(&p, t, w, g, bytemuck::cast_slice_mut(s));
                }
                OptimizerKind::Adam => optim::adam(
                    &o.opt_params(n, self.lr),
                    t,
                    w,
                    g,
                    bytemuck::cast_slice_mut(s),
                ),
                OptimizerKind::Rmsprop => optim::rmsprop(&o.opt_params(n, self.lr), t, w, g, s),
                OptimizerKind::Sgd => optim::sgd(&o.opt_params(n, self.lr), t, w, g, s),
            }
            if k.is_some() {
                lap(
                    k,
                    &format!("{}.{name}", crate::bench::optimizer_name(o.kind)),
                );
            }
        }
    }

    fn load_batch(&mut self, x: &[f32], labels: &[u32]) {
        self.acts.x.copy_from_slice(x);
        self.acts.y.copy_from_slice(labels);
    }
}

impl Net for CpuNet {
    fn device(&self) -> &'static str {
        "cpu"
    }

    fn adapter(&self) -> Option<AdapterSummary> {
        None
    }

    fn begin_epoch(&mut self, order: &[u32], lr: f32) -> Result<()> {
        self.order = order.to_vec();
        self.step.epoch_step = 0;
        self.step.n = order.len() as u32;
        self.lr = lr;
        Ok(())
    }

    fn train_step(&mut self) -> Result<()> {
        if let Some(l) = &mut self.laps {
            l.start();
        }
        let train = &self.data.train;
        data::gather(
            &self.gather,
            &self.step,
            &self.order,
            &train.images,
            &train.labels,
            &mut self.acts.x,
            &mut self.acts.y,
        );
        lap(&mut self.laps, "gather");
        let valid = self.step.valid();
        let mut m = self.metrics;
        self.forward(true, self.layers.loss, valid, &mut m, true);
        self.metrics = m;
        self.backward(true);
        if std::mem::take(&mut self.stats_requested) {
            self.stats = stats::of_tensors(
                &self.cfg.optim,
                self.lr,
                self.step.t + 1,
                &self.params.tensors,
                &self.grads.tensors,
                &self.state,
            );
        }
        self.update();
        data::advance(&mut self.step);
        Ok(())
    }

    fn request_optim_stats(&mut self) -> Result<()> {
        self.stats_requested = true;
        Ok(())
    }

    fn take_optim_stats(&mut self) -> Result<Vec<TensorStats>> {
        Ok(std::mem::take(&mut self.stats))
    }

    fn take_metrics(&mut self) -> Result<Metrics> {
        Ok(std::mem::take(&mut self.metrics))
    }

    fn evaluate(
        &mut self,
        which: Which,
        indices: &[u32],
        mut predictions: Option<&mut Vec<u32>>,
    ) -> Result<Metrics> {
        let set = self.data.get(which).clone();
        let gp = GatherParams {
            augment: 0,
            ..self.gather
        };
        let mut st = StepState {
            epoch_step: 0,
            t: 0,
            n: indices.len() as u32,
            batch: self.cfg.batch,
        };
        let mut m = Metrics::default();
        if let Some(p) = predictions.as_deref_mut() {
            p.clear();
        }
        while st.valid() > 0 {
            data::gather(
                &gp,
                &st,
                indices,
                &set.images,
                &set.labels,
                &mut self.acts.x,
                &mut self.acts.y,
            );
            let valid = st.valid();
            self.forward(false, self.layers.eval_loss(), valid, &mut m, false);
            if let Some(p) = predictions.as_deref_mut() {
                for r in self.acts.logits.chunks(CLASSES).take(valid as usize) {
                    p.push(argmax(r) as u32);
                }
            }
            st.epoch_step += 1;
        }
        Ok(m)
    }

    fn params(&mut self) -> Result<Params> {
        Ok(self.params.clone())
    }

    fn params_finite(&mut self) -> Result<bool> {
        Ok(self.params.all_finite())
    }

    fn set_params(&mut self, p: &Params) -> Result<()> {
        self.params = p.clone();
        Ok(())
    }

    fn optim_state(&mut self) -> Result<(Vec<Vec<f32>>, u32)> {
        Ok((self.state.clone(), self.step.t))
    }

    fn set_optim_state(&mut self, state: &[Vec<f32>], t: u32) -> Result<()> {
        self.state = state.to_vec();
        self.step.t = t;
        Ok(())
    }

    fn probe(&mut self, x: &[f32], labels: &[u32]) -> Result<Probe> {
        self.load_batch(x, labels);
        let b = self.cfg.batch;
        let mut m = Metrics::default();
        let loss_sum = self.forward(false, self.layers.loss, b, &mut m, true);
        self.backward(false);
        // The fixture stores pre-ReLU conv/fc outputs; our forward fuses ReLU, so recompute them
        // without it (same twins, relu off).
        let (l, a, w) = (&self.layers, &self.acts, &self.params.tensors);
        let mut c1 = vec![0.0; l.conv1.y_len()];
        conv::forward(
            &crate::params::ConvParams { relu: 0, ..l.conv1 },
            &a.x,
            &w[0],
            &w[1],
            &mut c1,
        );
        let mut c2 = vec![0.0; l.conv2.y_len()];
        conv::forward(
            &crate::params::ConvParams { relu: 0, ..l.conv2 },
            &a.p1,
            &w[2],
            &w[3],
            &mut c2,
        );
        let mut f1 = vec![0.0; a.h.len()];
        dense::forward(
            &crate::params::DenseParams { relu: 0, ..l.fc1 },
            &a.p2,
            &w[4],
            &w[5],
            &mut f1,
        );
        Ok(Probe {
            tensors: vec![
                ("act.conv1".into(), c1),
                ("act.pool1".into(), a.p1.clone()),
                ("act.conv2".into(), c2),
                ("act.pool2".into(), a.p2.clone()),
                ("act.fc1".into(), f1),
                ("logits".into(), a.logits.clone()),
            ],
            loss: loss_sum / b as f32,
            grads: self.grads.tensors.clone(),
        })
    }

    fn probe_step(&mut self, x: &[f32], labels: &[u32]) -> Result<f32> {
        self.load_batch(x, labels);
        let b = self.cfg.batch;
        let mut m = Metrics::default();
        let loss_sum = self.forward(false, self.layers.loss, b, &mut m, true);
        self.backward(false);
        self.update();
        self.step.t += 1;
        Ok(loss_sum / b as f32)
    }
}
