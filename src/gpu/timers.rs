//! GPU timing for benchmarks: timestamp queries at compute-pass boundaries where the device has
//! `TIMESTAMP_QUERY`, wall clock around submit and wait where it does not.
//!
//! Pass-boundary timestamps need only `TIMESTAMP_QUERY` (the WebGPU feature, also on Metal's
//! Apple GPUs), so a kernel is timed by giving its dispatches a compute pass of their own. That
//! adds a pass boundary per kernel, which a real step (one pass) does not have: per-kernel times
//! come from a dedicated timing run, and the whole step is timed separately as one pass.

use super::GpuContext;
use super::buffers::{Dispatch, read};
use crate::Result;
use std::time::Instant;

/// Which clock a figure came from; every reported time carries one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clock {
    /// GPU timestamps written at the beginning and end of a compute pass.
    TimestampQuery,
    /// Host wall clock around submit and wait: includes submit and synchronisation overhead.
    WallClock,
}

impl Clock {
    pub fn describe(self) -> &'static str {
        match self {
            Clock::TimestampQuery => "GPU timestamp queries",
            Clock::WallClock => "wall clock",
        }
    }
}

/// Seconds per timed pass, and the clock that measured them.
#[derive(Clone, Debug)]
pub struct Timed {
    pub seconds: Vec<f64>,
    pub clock: Clock,
}

struct Queries {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    /// Passes one submit can time (two queries each).
    passes: u32,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
}

/// Times groups of prepared dispatches, each group as one compute pass.
pub struct GpuTimer {
    ctx: GpuContext,
    queries: Option<Queries>,
}

impl GpuTimer {
    /// A timer for up to `passes` passes per submit (more are split over several submits).
    /// Uses timestamp queries when the device was opened with them and reports a tick period.
    pub fn new(ctx: &GpuContext, passes: u32) -> Self {
        let period_ns = ctx.queue.get_timestamp_period() as f64;
        let usable = ctx.features.contains(wgpu::Features::TIMESTAMP_QUERY) && period_ns > 0.0;
        let queries = usable.then(|| {
            let passes = passes.clamp(1, wgpu::QUERY_SET_MAX_QUERIES / 2);
            Queries {
                set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("bench timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * passes,
                }),
                resolve: ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("bench timestamps resolve"),
                    size: 2 * passes as u64 * wgpu::QUERY_SIZE as u64,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                passes,
                period_ns,
            }
        });
        Self {
            ctx: ctx.clone(),
            queries,
        }
    }

    /// The clock [`time_passes`](Self::time_passes) will try first.
    pub fn clock(&self) -> Clock {
        if self.queries.is_some() {
            Clock::TimestampQuery
        } else {
            Clock::WallClock
        }
    }

    /// Runs each group as its own compute pass, in order, and returns the time of each.
    ///
    /// With timestamps the passes of a chunk share one encoder and one submit, so the GPU runs
    /// them back to back as it would inside a step. A driver that leaves the queries unwritten
    /// (both stamps zero) gets the wall-clock path instead, and the result says so.
    pub fn time_passes(&self, groups: &[&[Dispatch]]) -> Result<Timed> {
        if let Some(q) = &self.queries {
            let mut seconds = Vec::with_capacity(groups.len());
            for chunk in groups.chunks(q.passes as usize) {
                match self.stamp_chunk(q, chunk)? {
                    Some(s) => seconds.extend(s),
                    None => {
                        log::warn!(
                            "{}: timestamp queries came back unwritten; timing by wall clock",
                            self.ctx.adapter.name
                        );
                        return self.wall(groups);
                    }
                }
            }
            return Ok(Timed {
                seconds,
                clock: Clock::TimestampQuery,
            });
        }
        self.wall(groups)
    }

    fn stamp_chunk(&self, q: &Queries, chunk: &[&[Dispatch]]) -> Result<Option<Vec<f64>>> {
        let n = chunk.len() as u32;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        for (i, group) in chunk.iter().enumerate() {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("timed"),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &q.set,
                    beginning_of_pass_write_index: Some(2 * i as u32),
                    end_of_pass_write_index: Some(2 * i as u32 + 1),
                }),
            });
            for d in *group {
                d.record(&mut pass);
            }
        }
        enc.resolve_query_set(&q.set, 0..2 * n, &q.resolve, 0);
        let idx = self.ctx.queue.submit([enc.finish()]);
        self.ctx.wait(idx, "waiting for timed passes")?;
        let stamps: Vec<u64> = read(&self.ctx, &q.resolve, 2 * n as usize)?;
        if stamps.chunks(2).any(|s| s[0] == 0 && s[1] == 0) {
            return Ok(None);
        }
        // A counter that runs backwards (seen on some drivers across power states) gives 0,
        // never a wrapped-around huge time.
        Ok(Some(
            stamps
                .chunks(2)
                .map(|s| s[1].saturating_sub(s[0]) as f64 * q.period_ns * 1e-9)
                .collect(),
        ))
    }

    /// One encoder, pass, submit and wait per group, timed from submit to the end of the wait.
    fn wall(&self, groups: &[&[Dispatch]]) -> Result<Timed> {
        let mut seconds = Vec::with_capacity(groups.len());
        for group in groups {
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("timed"),
                    timestamp_writes: None,
                });
                for d in *group {
                    d.record(&mut pass);
                }
            }
            let cmd = enc.finish();
            let start = Instant::now();
            let idx = self.ctx.queue.submit([cmd]);
            self.ctx.wait(idx, "waiting for a timed pass")?;
            seconds.push(start.elapsed().as_secs_f64());
        }
        Ok(Timed {
            seconds,
            clock: Clock::WallClock,
        })
    }
}
