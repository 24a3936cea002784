//! The GPU net: the SPEC 1 network as prepared dispatches over resident buffers (SPEC 6).
//!
//! Everything is created in [`GpuNet::new`]: buffers, uniforms, bind groups, pipelines. A training
//! step is ten fused dispatches, recorded into one compute pass (several steps per submit):
//! gather; conv1 and conv2 each with bias, ReLU and 2x2 max-pool in the GEMM epilogue (conv2 with
//! dropout), writing only the pooled map and its argmax; fc1; the head (fc2, softmax
//! cross-entropy, metrics, and the backward through fc2 and fc1's ReLU); fc1's backward (weight,
//! bias and input gradients); conv2's and conv1's backward with the dropout, pool and ReLU
//! backward done in their loaders (no full-resolution gradient buffer), leaving split-K partials;
//! the fused update of all eight tensors (which sums the partials); the counter advance. Loss
//! sums and correct counts stay on the GPU until [`Net::take_metrics`] reads them.

use super::{Net, NetConfig, NetData, Probe, Which};
use crate::cpu::loss::Metrics;
use crate::gpu::buffers::{Arena, Dispatch, View, read_async, storage, storage_init};
use crate::gpu::{AdapterSummary, GpuContext};
use crate::model::{CLASSES, FLAT, Layers, PARAM_NAMES, Params};
use crate::ops::conv::PoolDropout;
use crate::ops::conv_grad::ConvGradKernels;
use crate::ops::head::{HeadGrads, HeadInputs, HeadKernels};
use crate::ops::optim::{OptimKernels, UpdateRule, update_table};
use crate::ops::{conv::ConvKernels, data::DataKernels, data::pack_u8, dense::DenseKernels};
use crate::optim::OptimizerKind;
use crate::optim::stats::{self, TensorStats, zeta_edges};
use crate::params::{
    ConvGradParams, ConvParams, DenseParams, GatherParams, HeadParams, LossParams, StatsPartial,
    StepState,
};
use crate::rng::{Stream, hash_key};
use crate::tune::{StepTiles, step_tiles};
use crate::{Error, Result};

struct Kernels {
    conv: ConvKernels,
    conv_grad: ConvGradKernels,
    head: HeadKernels,
    dense: DenseKernels,
    optim: OptimKernels,
    data: DataKernels,
}

/// Resident images (packed u8) and labels (u32) of one data set.
struct Resident {
    images: wgpu::Buffer,
    labels: wgpu::Buffer,
}

struct Bufs {
    /// The eight parameter tensors, their gradients and their optimizer state, each set in one
    /// arena so that the fused update reaches all of them through one binding. A conv weight's
    /// gradient is its split-K partials ([`weight_parts`] of them), summed by the update.
    params: Arena,
    grads: Arena,
    state: Arena,
    parts: Vec<u32>,
    /// The update's tensor table ([`update_table`], with its host copy) and its workgroup count.
    table: wgpu::Buffer,
    table_host: Vec<crate::params::UpdateRecord>,
    update_groups: u32,
    /// `optim.stats_*`: one partial per update workgroup, and the zeta bin edges.
    stats_out: wgpu::Buffer,
    stats_edges: wgpu::Buffer,
    x: wgpu::Buffer,
    y: wgpu::Buffer,
    p1: wgpu::Buffer,
    am1: wgpu::Buffer,
    p2: wgpu::Buffer,
    am2: wgpu::Buffer,
    d: wgpu::Buffer,
    h: wgpu::Buffer,
    logits: wgpu::Buffer,
    dh: wgpu::Buffer,
    dd: wgpu::Buffer,
    dp1: wgpu::Buffer,
    /// Pre-ReLU outputs, only for [`Net::probe`].
    pre1: wgpu::Buffer,
    pre2: wgpu::Buffer,
    pre_fc1: wgpu::Buffer,
    step: wgpu::Buffer,
    eval_step: wgpu::Buffer,
    order: wgpu::Buffer,
    eval_index: wgpu::Buffer,
    metrics: wgpu::Buffer,
    eval_metrics: wgpu::Buffer,
}

pub struct GpuNet {
    ctx: GpuContext,
    tiles: StepTiles,
    cfg: NetConfig,
    layers: Layers,
    k: Kernels,
    b: Bufs,
    train: Resident,
    test: Resident,
    n_train: usize,
    n_test: usize,
    /// gather + forward + loss + backward + optimizer + advance.
    step_list: Vec<Dispatch>,
    /// One eval batch per data set: gather + forward without dropout + loss + advance.
    eval_train: Vec<Dispatch>,
    eval_test: Vec<Dispatch>,
    /// Forward + loss + backward without gather and dropout, and the pre-ReLU outputs.
    probe_list: Vec<Dispatch>,
    update_list: Vec<Dispatch>,
    lr: f32,
    /// Host mirror of `StepState.t` (completed optimizer steps).
    t: u32,
    steps_in_epoch: u32,
    in_flight: std::collections::VecDeque<wgpu::SubmissionIndex>,
    /// Steps recorded per submit ([`steps_per_submit`]) and steps taken but not yet submitted.
    steps_per_submit: u32,
    pending: u32,
    /// [`Net::request_optim_stats`] was called; `stats_ready`: `b.stats_out` holds a result.
    stats_requested: bool,
    stats_ready: bool,
}

/// Training steps recorded into one encoder and submitted together: `FMNIST_STEPS_PER_SUBMIT`
/// (1 to 64), else 4. Each step's gather reads its batch position from the GPU step counter, so
/// batching steps needs no host work between them; it saves one submit (and its driver round
/// trip) per step, and costs only latency, since anything that reads results flushes first.
pub fn steps_per_submit() -> u32 {
    std::env::var("FMNIST_STEPS_PER_SUBMIT")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(4)
}

fn f32_bytes(n: usize) -> u64 {
    (n * 4) as u64
}

impl GpuNet {
    pub fn new(ctx: GpuContext, cfg: NetConfig, data: NetData, params: Params) -> Result<Self> {
        let layers = cfg.layers();
        // The largest binding: the batch of images, or conv1's pooled map (its full-resolution
        // output is never stored).
        let biggest = f32_bytes(layers.conv1.x_len().max(layers.pool1.y_len()));
        if biggest > ctx.limits.max_storage_buffer_binding_size {
            return Err(Error::BadArg(format!(
                "--batch-size {} needs a {} MiB activation buffer, more than {} allows for one binding ({} MiB)",
                cfg.batch,
                biggest >> 20,
                ctx.adapter.name,
                ctx.limits.max_storage_buffer_binding_size >> 20
            )));
        }
        let k = Kernels {
            conv: ConvKernels::new(&ctx)?,
            conv_grad: ConvGradKernels::new(&ctx)?,
            head: HeadKernels::new(&ctx)?,
            dense: DenseKernels::new(&ctx)?,
            optim: OptimKernels::new(&ctx)?,
            data: DataKernels::new(&ctx)?,
        };
        let upload = |name: &str, set: &crate::data::DataSet| Resident {
            images: storage_init(&ctx, name, &pack_u8(&set.images)),
            labels: storage_init(
                &ctx,
                name,
                &set.labels.iter().map(|&l| l as u32).collect::<Vec<u32>>(),
            ),
        };
        let train = upload("train set", &data.train);
        let test = upload("test set", &data.test);
        let (n_train, n_test) = (data.train.n, data.test.n);
        let l = &layers;
        let bsz = cfg.batch as usize;
        let hid = cfg.hidden as usize;
        let s = |name: &str, n: usize| storage(&ctx, name, f32_bytes(n));
        // conv_grad leaves weight and bias gradients as split-K partials for the update to sum.
        let mut parts = vec![1u32; params.tensors.len()];
        parts[0] = ConvGradParams::new(&l.conv1, None).parts;
        parts[1] = parts[0];
        parts[2] = ConvGradParams::new(&l.conv2, None).parts;
        parts[3] = parts[2];
        let grad_lens: Vec<usize> = params
            .tensors
            .iter()
            .zip(&parts)
            .map(|(t, &p)| t.len() * p as usize)
            .collect();
        let params_arena = Arena::init(&ctx, "params", &params.tensors);
        let grads = Arena::zeroed(&ctx, "grads", &grad_lens);
        let states: Vec<Vec<f32>> = params
            .tensors
            .iter()
            .map(|t| cfg.optim.initial_state(t.len()))
            .collect();
        let state = Arena::init(&ctx, "optim state", &states);
        let (table, update_groups) = update_table(&params_arena, &grads, &state, &parts);
        let b = Bufs {
            table: storage_init(&ctx, "update table", &table),
            table_host: table,
            update_groups,
            stats_out: storage(
                &ctx,
                "optim stats",
                (update_groups as usize * std::mem::size_of::<StatsPartial>()) as u64,
            ),
            stats_edges: storage_init(
                &ctx,
                "zeta bin edges",
                &zeta_edges(cfg.optim.zeta_min, cfg.optim.zeta_max),
            ),
            params: params_arena,
            grads,
            state,
            parts,
            x: s("x", l.conv1.x_len()),
            y: s("y", bsz),
            p1: s("p1", l.pool1.y_len()),
            am1: s("am1", l.pool1.y_len()),
            p2: s("p2", l.pool2.y_len()),
            am2: s("am2", l.pool2.y_len()),
            d: s("d", l.pool2.y_len()),
            h: s("h", bsz * hid),
            logits: s("logits", bsz * CLASSES),
            dh: s("dh", bsz * hid),
            dd: s("dd", l.pool2.y_len()),
            dp1: s("dp1", l.pool1.y_len()),
            pre1: s("pre1", l.conv1.y_len()),
            pre2: s("pre2", l.conv2.y_len()),
            pre_fc1: s("pre_fc1", bsz * hid),
            step: storage(&ctx, "step state", 16),
            eval_step: storage(&ctx, "eval step state", 16),
            order: s("order", n_train.max(1)),
            eval_index: s("eval index", n_train.max(n_test).max(1)),
            metrics: storage(&ctx, "metrics", crate::ops::loss::METRICS_BYTES),
            eval_metrics: storage(&ctx, "eval metrics", crate::ops::loss::METRICS_BYTES),
        };
        let gp = GatherParams {
            batch: cfg.batch,
            pixels: 784,
            augment: cfg.augment as u32,
            seed: hash_key(cfg.seed, Stream::Augment),
        };
        // The adapter's cached tile choice (tuned now on a hardware adapter without one); every
        // choice computes the same bits.
        let (tiles, cache) = step_tiles(&ctx, &layers)?;
        log::debug!("tiles {tiles:?} ({cache:?})");
        let mut net = Self {
            tiles,
            layers,
            lr: cfg.optim.lr,
            t: 0,
            steps_in_epoch: 0,
            n_train,
            n_test,
            step_list: Vec::new(),
            eval_train: Vec::new(),
            eval_test: Vec::new(),
            probe_list: Vec::new(),
            update_list: Vec::new(),
            in_flight: Default::default(),
            steps_per_submit: steps_per_submit(),
            pending: 0,
            stats_requested: false,
            stats_ready: false,
            k,
            b,
            train,
            test,
            cfg,
            ctx,
        };
        net.update_list = net.update_dispatches(net.lr);
        let g = net.gather(&gp, &net.b.step, &net.b.order, &net.train);
        let train_on = net.layers.dropout_on();
        let loss = net.layers.loss;
        net.step_list = [
            g,
            net.forward(train_on, &loss, true, &net.b.step, &net.b.metrics)?,
            net.backward(train_on, &net.b.step)?,
            net.update_list.clone(),
            net.k.data.advance(&net.ctx, &net.b.step),
        ]
        .concat();
        let eval_gp = GatherParams { augment: 0, ..gp };
        for which in [Which::Train, Which::Test] {
            let set = if which == Which::Train {
                &net.train
            } else {
                &net.test
            };
            let list = [
                net.gather(&eval_gp, &net.b.eval_step, &net.b.eval_index, set),
                net.forward(
                    false,
                    &net.layers.eval_loss(),
                    false,
                    &net.b.eval_step,
                    &net.b.eval_metrics,
                )?,
                net.k.data.advance(&net.ctx, &net.b.eval_step),
            ]
            .concat();
            match which {
                Which::Train => net.eval_train = list,
                Which::Test => net.eval_test = list,
            }
        }
        net.probe_list = [
            net.forward(false, &loss, true, &net.b.step, &net.b.metrics)?,
            net.backward(false, &net.b.step)?,
            net.pre_relu()?,
        ]
        .concat();
        Ok(net)
    }

    /// The dispatches of one training step in recording order (benchmarks time them one by one).
    pub fn step_dispatches(&self) -> &[Dispatch] {
        &self.step_list
    }

    /// Steps per submit of [`Net::train_step`].
    pub fn steps_per_submit(&self) -> u32 {
        self.steps_per_submit
    }

    /// Submits the steps taken since the last submit, as one encoder and one compute pass, with
    /// at most two submits in flight.
    fn flush(&mut self) -> Result<()> {
        if self.pending == 0 {
            return Ok(());
        }
        let list = std::mem::take(&mut self.step_list);
        let lists: Vec<&[Dispatch]> = (0..self.pending).map(|_| list.as_slice()).collect();
        let idx = self.submit(&lists);
        log::debug!(
            "steps {}..={}: {} dispatches each, {} steps in 1 compute pass, 1 submit",
            self.t + 1 - self.pending,
            self.t,
            list.len(),
            self.pending
        );
        self.step_list = list;
        self.pending = 0;
        // Enough to keep the GPU busy without queueing unbounded work.
        self.in_flight.push_back(idx);
        if self.in_flight.len() > 2 {
            let old = self.in_flight.pop_front();
            self.wait(old)?;
        }
        Ok(())
    }

    /// Blocks until every submitted step has finished (benchmark windows end here).
    pub fn wait_idle(&mut self) -> Result<()> {
        self.flush()?;
        self.wait(None)?;
        self.in_flight.clear();
        Ok(())
    }

    fn gather(
        &self,
        gp: &GatherParams,
        state: &wgpu::Buffer,
        index: &wgpu::Buffer,
        set: &Resident,
    ) -> Vec<Dispatch> {
        let b = &self.b;
        self.k.data.gather(
            &self.ctx,
            gp,
            state,
            index,
            &set.images,
            &set.labels,
            &b.x,
            &b.y,
        )
    }

    /// conv1 and conv2 (each conv + bias + ReLU + pool; conv2 with dropout when `dropout`),
    /// fc1, and the head: logits, and the loss and metrics of `loss` (the layers' training loss,
    /// or [`Layers::eval_loss`]); with `backward` the head also starts the backward (fc2's
    /// gradients and `dh`).
    fn forward(
        &self,
        dropout: bool,
        loss: &LossParams,
        backward: bool,
        state: &wgpu::Buffer,
        metrics: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let (c, l, b, k, t) = (&self.ctx, &self.layers, &self.b, &self.k, &self.tiles);
        let (w, g) = (|i: usize| b.params.view(i), |i: usize| b.grads.view(i));
        let drop = dropout.then(|| PoolDropout {
            params: &l.drop,
            state: View::whole(state),
            d: View::whole(&b.d),
        });
        let fc1_in = if dropout { &b.d } else { &b.p2 };
        let mut v = k.conv.forward_relu_pool(
            c,
            &l.conv1,
            t.conv1_forward,
            None,
            &b.x,
            w(0),
            w(1),
            &b.p1,
            &b.am1,
        )?;
        v.extend(k.conv.forward_relu_pool(
            c,
            &l.conv2,
            t.conv2_forward,
            drop,
            &b.p1,
            w(2),
            w(3),
            &b.p2,
            &b.am2,
        )?);
        v.extend(
            k.dense
                .forward(c, &l.fc1, t.fc1_forward, fc1_in, w(4), w(5), &b.h)?,
        );
        v.extend(k.head.head(
            c,
            &HeadParams::from_layers(&l.fc2, loss),
            state,
            HeadInputs {
                h: (&b.h).into(),
                w: w(6),
                bias: w(7),
                labels: (&b.y).into(),
            },
            &b.logits,
            metrics,
            backward.then(|| HeadGrads {
                dw: g(6),
                db: g(7),
                dh: (&b.dh).into(),
            }),
        )?);
        Ok(v)
    }

    /// From the head's `dh`: fc1's gradients and `dd`, then conv2's and conv1's backward (their
    /// weight and bias gradients as split-K partials, conv2's input gradient `dp1`).
    fn backward(&self, dropout: bool, state: &wgpu::Buffer) -> Result<Vec<Dispatch>> {
        let (c, l, b, k, t) = (&self.ctx, &self.layers, &self.b, &self.k, &self.tiles);
        let (w, g) = (|i: usize| b.params.view(i), |i: usize| b.grads.view(i));
        let fc1_in = if dropout { &b.d } else { &b.p2 };
        let v2 = View::whole;
        let mut v = k.dense.backward_fused(
            c,
            &l.fc1,
            t.fc1_backward,
            fc1_in,
            &b.dh,
            w(4),
            g(4),
            g(5),
            &b.dd,
        )?;
        let conv2 = ConvGradParams::new(&l.conv2, dropout.then_some(&l.drop));
        let conv1 = ConvGradParams::new(&l.conv1, None);
        v.extend(k.conv_grad.backward(
            c,
            &conv2,
            t.conv2_backward,
            Some(state),
            v2(&b.am2),
            v2(&b.p2),
            v2(&b.dd),
            v2(&b.p1),
            w(2),
            g(2),
            g(3),
            v2(&b.dp1),
        )?);
        v.extend(k.conv_grad.backward_weight_partials(
            c,
            &conv1,
            t.conv1_backward,
            None,
            v2(&b.am1),
            v2(&b.p1),
            v2(&b.dp1),
            v2(&b.x),
            g(0),
            g(1),
        )?);
        Ok(v)
    }

    /// The fixture's pre-ReLU conv1, conv2 and fc1 outputs (our forward fuses the ReLU).
    fn pre_relu(&self) -> Result<Vec<Dispatch>> {
        let (c, l, b, k) = (&self.ctx, &self.layers, &self.b, &self.k);
        let w = |i: usize| b.params.view(i);
        Ok([
            k.conv.forward(
                c,
                &ConvParams { relu: 0, ..l.conv1 },
                &b.x,
                w(0),
                w(1),
                &b.pre1,
            ),
            k.conv.forward(
                c,
                &ConvParams { relu: 0, ..l.conv2 },
                &b.p1,
                w(2),
                w(3),
                &b.pre2,
            ),
            k.dense.forward(
                c,
                &DenseParams { relu: 0, ..l.fc1 },
                self.tiles.fc1_forward,
                &b.p2,
                w(4),
                w(5),
                &b.pre_fc1,
            )?,
        ]
        .concat())
    }

    /// The fused update of all eight tensors: one dispatch (its uniform holds the rate, so a
    /// new rate means new dispatches, once per epoch).
    fn update_rule(&self, lr: f32) -> UpdateRule {
        let o = &self.cfg.optim;
        match o.kind {
            OptimizerKind::Wame => UpdateRule::Wame(o.wame_params(0, lr)),
            OptimizerKind::Adam => UpdateRule::Adam(o.opt_params(0, lr)),
            OptimizerKind::Rmsprop => UpdateRule::Rmsprop(o.opt_params(0, lr)),
            OptimizerKind::Sgd => UpdateRule::Sgd(o.opt_params(0, lr)),
        }
    }

    fn update_dispatches(&self, lr: f32) -> Vec<Dispatch> {
        let b = &self.b;
        self.k.optim.update(
            &self.ctx,
            &self.update_rule(lr),
            &b.step,
            &b.table,
            b.update_groups,
            &b.params.buffer,
            &b.grads.buffer,
            &b.state.buffer,
        )
    }

    /// A training step with `optim.stats_*` recorded just before its update (the same inputs
    /// the update reads, at the current rate): the step [`Net::request_optim_stats`] asks for.
    fn stats_step_list(&self) -> Vec<Dispatch> {
        let b = &self.b;
        let stats = self.k.optim.stats(
            &self.ctx,
            &self.update_rule(self.lr),
            &b.step,
            &b.table,
            b.update_groups,
            &b.params.buffer,
            &b.grads.buffer,
            &b.state.buffer,
            &b.stats_out,
            &b.stats_edges,
        );
        let mut list = self.step_list.clone();
        // The step ends with the update and the counter advance (see `new`).
        list.insert(list.len() - self.update_list.len() - 1, stats);
        list
    }

    /// Records `lists` into one encoder and one compute pass, and submits once.
    fn submit(&mut self, lists: &[&[Dispatch]]) -> wgpu::SubmissionIndex {
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("step"),
                timestamp_writes: None,
            });
            for list in lists {
                for d in *list {
                    d.record(&mut pass);
                }
            }
        }
        self.ctx.queue.submit([enc.finish()])
    }

    fn wait(&self, idx: Option<wgpu::SubmissionIndex>) -> Result<()> {
        self.ctx
            .device
            .poll(wgpu::PollType::Wait {
                submission_index: idx,
                timeout: None,
            })
            .map_err(|e| {
                Error::Gpu(format!(
                    "{}: waiting for the GPU: {e}",
                    self.ctx.adapter.name
                ))
            })?;
        self.ctx.check()
    }

    fn write_state(&self, buf: &wgpu::Buffer, s: StepState) {
        self.ctx.queue.write_buffer(buf, 0, bytemuck::bytes_of(&s));
    }

    async fn read_metrics(&self, buf: &wgpu::Buffer) -> Result<Metrics> {
        let m: Vec<u32> = read_async(&self.ctx, buf, 4).await?;
        self.ctx.check()?;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(buf, 0, None);
        self.ctx.queue.submit([enc.finish()]);
        Ok(Metrics {
            loss_sum: f32::from_bits(m[0]),
            correct: m[1],
            seen: m[2],
        })
    }

    fn write_probe_batch(&mut self, x: &[f32], labels: &[u32]) {
        let q = &self.ctx.queue;
        q.write_buffer(&self.b.x, 0, bytemuck::cast_slice(x));
        q.write_buffer(&self.b.y, 0, bytemuck::cast_slice(labels));
        self.write_state(
            &self.b.step,
            StepState {
                epoch_step: 0,
                t: self.t,
                n: self.cfg.batch,
                batch: self.cfg.batch,
            },
        );
    }

    /// [`Net::take_optim_stats`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn take_optim_stats_async(&mut self) -> Result<Vec<TensorStats>> {
        if !std::mem::take(&mut self.stats_ready) {
            return Ok(Vec::new());
        }
        self.flush()?;
        let b = &self.b;
        let parts: Vec<StatsPartial> =
            read_async(&self.ctx, &b.stats_out, b.update_groups as usize).await?;
        self.ctx.check()?;
        let wame = self.cfg.optim.kind == OptimizerKind::Wame;
        Ok(b.table_host
            .iter()
            .zip(PARAM_NAMES)
            .map(|(r, name)| {
                stats::summarize(name, &parts[r.wg_begin as usize..r.wg_end as usize], wame)
            })
            .collect())
    }

    /// [`Net::take_metrics`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn take_metrics_async(&mut self) -> Result<Metrics> {
        self.flush()?;
        let m = self.read_metrics(&self.b.metrics).await?;
        self.in_flight.clear();
        Ok(m)
    }

    /// [`Net::evaluate`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn evaluate_async(
        &mut self,
        which: Which,
        indices: &[u32],
        predictions: Option<&mut Vec<u32>>,
    ) -> Result<Metrics> {
        let limit = match which {
            Which::Train => self.n_train,
            Which::Test => self.n_test,
        };
        if indices.iter().any(|&i| i as usize >= limit) {
            return Err(Error::BadArg(
                "evaluation index outside the data set".into(),
            ));
        }
        self.flush()?;
        self.wait(None)?;
        if indices.is_empty() {
            return Ok(Metrics::default());
        }
        self.ctx
            .queue
            .write_buffer(&self.b.eval_index, 0, bytemuck::cast_slice(indices));
        self.write_state(
            &self.b.eval_step,
            StepState {
                epoch_step: 0,
                t: 0,
                n: indices.len() as u32,
                batch: self.cfg.batch,
            },
        );
        let batches = indices.len().div_ceil(self.cfg.batch as usize);
        let list = match which {
            Which::Train => std::mem::take(&mut self.eval_train),
            Which::Test => std::mem::take(&mut self.eval_test),
        };
        let mut result = Ok(());
        if let Some(p) = predictions {
            p.clear();
            // Predictions need the logits of every batch: one submit and readback per batch.
            for bi in 0..batches {
                self.submit(&[&list]);
                let n = self.cfg.batch as usize * CLASSES;
                match read_async::<f32>(&self.ctx, &self.b.logits, n).await {
                    Ok(z) => {
                        let valid = (indices.len() - bi * self.cfg.batch as usize)
                            .min(self.cfg.batch as usize);
                        p.extend(
                            z.chunks(CLASSES)
                                .take(valid)
                                .map(|r| crate::cpu::loss::argmax(r) as u32),
                        );
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
        } else {
            // Every batch in one submit; the counter kernel moves the gather along.
            let lists: Vec<&[Dispatch]> = (0..batches).map(|_| list.as_slice()).collect();
            self.submit(&lists);
        }
        match which {
            Which::Train => self.eval_train = list,
            Which::Test => self.eval_test = list,
        }
        result?;
        self.read_metrics(&self.b.eval_metrics).await
    }

    /// [`Net::params`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn params_async(&mut self) -> Result<Params> {
        self.flush()?;
        self.wait(None)?;
        let mut p = Params::zeros(self.cfg.hidden as usize);
        for (i, t) in p.tensors.iter_mut().enumerate() {
            *t = self.b.params.read_async(&self.ctx, i).await?;
        }
        Ok(p)
    }

    /// [`Net::optim_state`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn optim_state_async(&mut self) -> Result<(Vec<Vec<f32>>, u32)> {
        self.flush()?;
        self.wait(None)?;
        let mut out = Vec::with_capacity(self.b.state.lens.len());
        for i in 0..self.b.state.lens.len() {
            out.push(self.b.state.read_async(&self.ctx, i).await?);
        }
        Ok((out, self.t))
    }

    /// [`Net::probe`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn probe_async(&mut self, x: &[f32], labels: &[u32]) -> Result<Probe> {
        self.flush()?;
        self.write_probe_batch(x, labels);
        let list = std::mem::take(&mut self.probe_list);
        self.submit(&[&list]);
        self.probe_list = list;
        self.wait(None)?;
        let m = self.read_metrics(&self.b.metrics).await?;
        let (l, bsz) = (&self.layers, self.cfg.batch as usize);
        let b = &self.b;
        let wanted = [
            ("act.conv1", &b.pre1, l.conv1.y_len()),
            ("act.pool1", &b.p1, l.pool1.y_len()),
            ("act.conv2", &b.pre2, l.conv2.y_len()),
            ("act.pool2", &b.p2, l.pool2.y_len()),
            ("act.fc1", &b.pre_fc1, bsz * self.cfg.hidden as usize),
            ("logits", &b.logits, bsz * CLASSES),
        ];
        let mut tensors = Vec::with_capacity(wanted.len());
        for (name, buf, n) in wanted {
            tensors.push((
                name.to_string(),
                read_async::<f32>(&self.ctx, buf, n).await?,
            ));
        }
        // Partials summed in ascending order, as the update's `grad_sum` does.
        let mut grads = Vec::new();
        for (i, &parts) in self.b.parts.iter().enumerate() {
            let all = self.b.grads.read_async(&self.ctx, i).await?;
            let n = all.len() / parts as usize;
            let mut g = all[..n].to_vec();
            for s in 1..parts as usize {
                for (gj, &pj) in g.iter_mut().zip(&all[s * n..(s + 1) * n]) {
                    *gj += pj;
                }
            }
            grads.push(g);
        }
        debug_assert_eq!(l.fc1.n_in, FLAT);
        Ok(Probe {
            tensors,
            loss: m.loss_sum / bsz as f32,
            grads,
        })
    }

    /// [`Net::probe_step`] for hosts that cannot block (the browser); the trait method drives it.
    pub async fn probe_step_async(&mut self, x: &[f32], labels: &[u32]) -> Result<f32> {
        self.flush()?;
        self.write_probe_batch(x, labels);
        let (probe, update) = (
            std::mem::take(&mut self.probe_list),
            std::mem::take(&mut self.update_list),
        );
        self.submit(&[&probe, &update]);
        self.probe_list = probe;
        self.update_list = update;
        self.t += 1;
        self.wait(None)?;
        let m = self.read_metrics(&self.b.metrics).await?;
        Ok(m.loss_sum / self.cfg.batch as f32)
    }
}

impl Net for GpuNet {
    fn device(&self) -> &'static str {
        "gpu"
    }

    fn adapter(&self) -> Option<AdapterSummary> {
        Some(self.ctx.adapter.clone())
    }

    fn begin_epoch(&mut self, order: &[u32], lr: f32) -> Result<()> {
        self.flush()?;
        if order.len() > self.n_train {
            return Err(Error::BadArg(format!(
                "epoch order of {} exceeds the {} resident images",
                order.len(),
                self.n_train
            )));
        }
        self.wait(None)?;
        self.in_flight.clear();
        if lr != self.lr {
            // New uniforms for the new rate: once per epoch, never inside a step.
            self.lr = lr;
            let update = self.update_dispatches(lr);
            let start = self.step_list.len() - update.len() - 1;
            self.step_list
                .splice(start..start + update.len(), update.iter().cloned());
            self.update_list = update;
        }
        if !order.is_empty() {
            self.ctx
                .queue
                .write_buffer(&self.b.order, 0, bytemuck::cast_slice(order));
        }
        self.write_state(
            &self.b.step,
            StepState {
                epoch_step: 0,
                t: self.t,
                n: order.len() as u32,
                batch: self.cfg.batch,
            },
        );
        self.steps_in_epoch = 0;
        Ok(())
    }

    fn train_step(&mut self) -> Result<()> {
        if std::mem::take(&mut self.stats_requested) {
            // Its own submit, in order after the steps before it.
            self.flush()?;
            let list = self.stats_step_list();
            let idx = self.submit(&[&list]);
            log::debug!(
                "steps {0}..={0}: {1} dispatches each (with the optimizer statistics), 1 steps in 1 \
                 compute pass, 1 submit",
                self.t + 1,
                list.len()
            );
            self.in_flight.push_back(idx);
            self.t += 1;
            self.steps_in_epoch += 1;
            self.stats_ready = true;
            return Ok(());
        }
        self.t += 1;
        self.steps_in_epoch += 1;
        self.pending += 1;
        if self.pending >= self.steps_per_submit {
            self.flush()?;
        }
        Ok(())
    }

    fn request_optim_stats(&mut self) -> Result<()> {
        self.stats_requested = true;
        Ok(())
    }

    fn take_optim_stats(&mut self) -> Result<Vec<TensorStats>> {
        crate::gpu::block_on(self.take_optim_stats_async())
    }

    fn take_metrics(&mut self) -> Result<Metrics> {
        crate::gpu::block_on(self.take_metrics_async())
    }

    fn evaluate(
        &mut self,
        which: Which,
        indices: &[u32],
        predictions: Option<&mut Vec<u32>>,
    ) -> Result<Metrics> {
        crate::gpu::block_on(self.evaluate_async(which, indices, predictions))
    }

    fn params(&mut self) -> Result<Params> {
        crate::gpu::block_on(self.params_async())
    }

    fn set_params(&mut self, p: &Params) -> Result<()> {
        self.flush()?;
        if p.hidden != self.cfg.hidden as usize {
            return Err(Error::BadArg(format!(
                "parameters of hidden width {} for a net of {}",
                p.hidden, self.cfg.hidden
            )));
        }
        for (i, t) in p.tensors.iter().enumerate() {
            if t.len() != self.b.params.lens[i] as usize {
                return Err(Error::BadArg(format!(
                    "parameter tensor {i} has {} values where the net has {}",
                    t.len(),
                    self.b.params.lens[i]
                )));
            }
            self.b.params.write(&self.ctx, i, t);
        }
        Ok(())
    }

    fn optim_state(&mut self) -> Result<(Vec<Vec<f32>>, u32)> {
        crate::gpu::block_on(self.optim_state_async())
    }

    fn set_optim_state(&mut self, state: &[Vec<f32>], t: u32) -> Result<()> {
        self.flush()?;
        if state.len() != self.b.state.lens.len() {
            return Err(Error::BadArg(format!(
                "optimizer state of {} tensors for a net of {}",
                state.len(),
                self.b.state.lens.len()
            )));
        }
        for (i, s) in state.iter().enumerate() {
            if s.len() != self.b.state.lens[i] as usize {
                return Err(Error::BadArg(format!(
                    "optimizer state tensor {i} has {} values where the net has {}",
                    s.len(),
                    self.b.state.lens[i]
                )));
            }
            self.b.state.write(&self.ctx, i, s);
        }
        self.t = t;
        Ok(())
    }

    fn probe(&mut self, x: &[f32], labels: &[u32]) -> Result<Probe> {
        crate::gpu::block_on(self.probe_async(x, labels))
    }

    fn probe_step(&mut self, x: &[f32], labels: &[u32]) -> Result<f32> {
        crate::gpu::block_on(self.probe_step_async(x, labels))
    }
}
